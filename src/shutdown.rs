//! Orderly shutdown: one trigger (SIGINT/SIGTERM in the daemon) observed by every pipeline.
//! A source that sees it stops reading; the pipeline then delivers what it holds, stores the
//! checkpoint and returns.

use tokio::sync::watch;

/// Requests shutdown of everything subscribed to it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Observes a [`ShutdownTrigger`].
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    pub fn new() -> Self {
        ShutdownTrigger(watch::channel(false).0)
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested; never, if the trigger is gone without firing.
    pub async fn requested(&mut self) {
        if self.0.wait_for(|requested| *requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
