//! Delivery confirmation of one batch: one shared counter instead of a future per record.
//!
//! Every record of a batch carries the batch's [`BatchAcks`] as its delivery opaque. The
//! counter starts at one (held by the sink while it enqueues, so that reports arriving before
//! the last record is enqueued cannot finish the batch early), goes up by one per enqueued
//! record and down by one per delivery report; the first failed report is kept. When it
//! reaches zero the batch's waiter is woken: it succeeds only when no report failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::DeliveryResult;
use tokio::sync::oneshot;

use super::KafkaSinkError;

/// What the delivery reports of one batch add up to.
pub struct BatchAcks {
    outstanding: AtomicUsize,
    first_failure: Mutex<Option<(String, KafkaError)>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl BatchAcks {
    /// The tracker of a new batch, and the receiver woken once every report is in.
    pub fn new() -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let acks = BatchAcks {
            outstanding: AtomicUsize::new(1),
            first_failure: Mutex::new(None),
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(acks), rx)
    }

    /// One more record is about to be enqueued.
    pub fn expect_one(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Records expected and not reported yet, the sink's own hold included.
    #[cfg(test)]
    pub fn expected(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// A record was not enqueued after all (no report will come for it), or the sink has
    /// enqueued the whole batch (its own hold ends).
    pub fn settle_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(done) = self.done.lock().expect("not poisoned").take() {
                let _ = done.send(());
            }
        }
    }

    /// A delivery report arrived (on librdkafka's polling thread).
    pub fn report(&self, result: &DeliveryResult<'_>) {
        match result {
            Ok(_) => self.settle_one(),
            Err((error, message)) => self.fail_one(message.topic(), error.clone()),
        }
    }

    /// A record of the batch could not be delivered (or not even enqueued): the batch fails.
    pub fn fail_one(&self, topic: &str, error: KafkaError) {
        self.first_failure
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| (topic.to_owned(), error));
        self.settle_one();
    }

    /// Waits for every report of the batch; the first failure fails it.
    pub async fn outcome(
        self: Arc<Self>,
        all_reported: oneshot::Receiver<()>,
    ) -> Result<(), KafkaSinkError> {
        all_reported.await.map_err(|_| KafkaSinkError::Canceled)?;
        match self.first_failure.lock().expect("not poisoned").take() {
            None => Ok(()),
            Some((topic, source)) => Err(KafkaSinkError::Delivery { topic, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch is done only once the sink's own hold and every record are settled, in any
    /// order.
    #[tokio::test]
    async fn the_batch_ends_when_the_last_report_and_the_sink_hold_are_in() {
        let (acks, mut rx) = BatchAcks::new();
        acks.expect_one();
        acks.expect_one();
        acks.settle_one(); // the first record's report came before the second was enqueued
        assert!(rx.try_recv().is_err());
        acks.settle_one(); // the sink finished enqueuing
        assert!(rx.try_recv().is_err());
        acks.settle_one(); // the second record's report
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn an_empty_batch_ends_when_the_sink_hold_ends() {
        let (acks, rx) = BatchAcks::new();
        acks.settle_one();
        assert!(acks.outcome(rx).await.is_ok());
    }
}
