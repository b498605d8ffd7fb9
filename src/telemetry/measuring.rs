//! A source's measuring task (what its server retains for it, how far it is behind), running
//! beside the source and ending with its run: the task is aborted when the guard is dropped.

use std::future::Future;

use tokio::task::JoinHandle;

/// A measuring task; stops when dropped.
pub struct Measuring(JoinHandle<()>);

impl Measuring {
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Measuring(tokio::spawn(task))
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        self.0.abort();
    }
}
