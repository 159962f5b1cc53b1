//! A sink that talks to another machine (syslog, webhook) runs on a thread of its own behind a
//! bounded queue. The event loop only ever calls [`Worker::push`], which never blocks: when the
//! queue is full the record is counted as dropped. A stalled or dead receiver therefore costs
//! that sink its records and nothing else: not the event loop (whose ring buffer would overflow
//! and lose records for every sink), not the other sinks.
//!
//! Records leave in the order they came: one thread, one batch at a time, retried until it is
//! delivered or given up before the next is taken.

use std::{
    sync::{
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::health::Stats;

/// Why a batch was not (entirely) delivered.
#[derive(Debug)]
pub struct Failure {
    /// Records at the front of the batch that did go out (a stream sends one at a time).
    pub sent: usize,
    /// Worth trying again (a timeout, a 503), or not (the receiver refused the content).
    pub retry: bool,
    /// For the log and `status`: no credentials, URL query or payload.
    pub message: String,
}

/// Sends batches of records (JSON text, one per record) to a receiver.
pub trait Deliver: Send + 'static {
    fn deliver(&mut self, batch: &[String]) -> Result<(), Failure>;
}

/// How batches are formed: up to `size` records, waiting at most `linger` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub size: usize,
    pub linger: Duration,
}

/// Retries of a failed batch: `retries` more attempts, waiting `base`, then twice as long each
/// time, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Retry {
    /// The wait before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(2u32.saturating_pow(attempt)).min(self.cap)
    }
}

pub struct Worker {
    tx: Option<SyncSender<String>>,
    capacity: usize,
    stats: Arc<Stats>,
    done: Receiver<()>,
}

impl Worker {
    /// Starts the sink's thread (named after the sink).
    pub fn spawn(
        name: &str,
        deliver: impl Deliver,
        queue: usize,
        batching: Batching,
        retry: Retry,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(queue);
        let (done_tx, done) = mpsc::channel();
        let st = stats.clone();
        let sink = name.to_owned();
        std::thread::Builder::new().name(format!("sink-{name}")).spawn(move || {
            run(&sink, deliver, &rx, batching, retry, &st);
            let _ = done_tx.send(());
        })?;
        Ok(Worker { tx: Some(tx), capacity: queue, stats, done })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a record, or counts it as dropped when the queue is full. Never blocks.
    pub fn push(&self, rec: String) {
        let Some(tx) = &self.tx else { return self.stats.lost(1) };
        // Counted before it is sent, so the thread never takes the gauge below zero.
        self.stats.queued.fetch_add(1, Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(rec) {
            self.stats.queued.fetch_sub(1, Relaxed);
            self.stats.lost(1);
        }
    }

    /// No more records: the thread delivers what is queued, and is waited for until `deadline`
    /// (a dead receiver must not hold up the agent's exit; what is left is lost).
    pub fn close(&mut self, deadline: Instant) -> bool {
        drop(self.tx.take());
        self.done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

fn take(stats: &Stats, r: String, batch: &mut Vec<String>) {
    stats.queued.fetch_sub(1, Relaxed);
    batch.push(r);
}

fn run(sink: &str, mut d: impl Deliver, rx: &Receiver<String>, batching: Batching, retry: Retry, stats: &Stats) {
    let mut batch = Vec::with_capacity(batching.size);
    // Buffered records are received before the disconnection is: closing delivers them all.
    while let Ok(first) = rx.recv() {
        take(stats, first, &mut batch);
        let until = Instant::now() + batching.linger;
        while batch.len() < batching.size {
            let left = until.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                rx.recv_timeout(left)
            };
            match next {
                Ok(r) => take(stats, r, &mut batch),
                Err(_) => break,
            }
        }
        send(sink, &mut d, &batch, retry, stats);
        batch.clear();
    }
}

/// Delivers one batch, retrying as `retry` says.
fn send(sink: &str, d: &mut impl Deliver, batch: &[String], retry: Retry, stats: &Stats) {
    let mut rest = batch;
    let mut attempt = 0;
    loop {
        let was_ok = stats.is_ok();
        match d.deliver(rest) {
            Ok(()) => {
                if !was_ok {
                    info!(sink, "sink delivers again");
                }
                stats.delivered(rest.len() as u64);
                return;
            }
            Err(f) => {
                if f.sent > 0 {
                    stats.written.fetch_add(f.sent as u64, Relaxed);
                }
                rest = &rest[f.sent.min(rest.len())..];
                if was_ok {
                    warn!(sink, error = %f.message, "sink delivery failed; retrying with backoff");
                }
                stats.failure(f.message.clone());
                if !f.retry || attempt >= retry.retries {
                    warn!(sink, records = rest.len(), error = %f.message, retried = attempt, "records given up");
                    stats.lost(rest.len() as u64);
                    return;
                }
                std::thread::sleep(retry.backoff(attempt));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The batches a receiver got.
    type Got = Arc<Mutex<Vec<Vec<String>>>>;

    /// Fails the first `fail` attempts, then records what it got.
    struct Flaky {
        fail: u32,
        retry: bool,
        got: Got,
    }

    impl Deliver for Flaky {
        fn deliver(&mut self, batch: &[String]) -> Result<(), Failure> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(Failure { sent: 0, retry: self.retry, message: "503".into() });
            }
            self.got.lock().expect("lock").push(batch.to_vec());
            Ok(())
        }
    }

    const QUICK: Retry = Retry { retries: 3, base: Duration::from_millis(1), cap: Duration::from_millis(4) };

    fn worker(fail: u32, retry: bool, size: usize) -> (Worker, Got, Arc<Stats>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let d = Flaky { fail, retry, got: got.clone() };
        let batching = Batching { size, linger: Duration::from_millis(50) };
        (Worker::spawn("t", d, 100, batching, QUICK, stats.clone()).expect("spawn"), got, stats)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry { retries: 9, base: Duration::from_millis(500), cap: Duration::from_secs(30) };
        let waits: Vec<u64> = (0..9).map(|a| r.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn records_arrive_in_order_in_batches_after_retries() {
        let (mut w, got, stats) = worker(2, true, 4);
        for i in 0..10 {
            w.push(i.to_string());
        }
        assert!(w.close(Instant::now() + Duration::from_secs(5)));
        let got = got.lock().expect("lock").clone();
        assert!(got.iter().all(|b| b.len() <= 4), "{got:?}");
        let flat: Vec<String> = got.concat();
        assert_eq!(flat, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!((stats.written.load(Relaxed), stats.failed.load(Relaxed), stats.dropped.load(Relaxed)), (10, 2, 0));
        assert_eq!(stats.queued.load(Relaxed), 0);
        assert!(stats.is_ok() && stats.last_error().as_deref() == Some("503"));
    }

    #[test]
    fn a_refused_batch_is_not_retried_and_counts_as_dropped() {
        let (mut w, got, stats) = worker(1, false, 100);
        w.push("a".into());
        assert!(w.close(Instant::now() + Duration::from_secs(5)));
        assert!(got.lock().expect("lock").is_empty());
        assert_eq!((stats.failed.load(Relaxed), stats.dropped.load(Relaxed)), (1, 1));
        let (mut w, _, stats) = worker(10, true, 100);
        w.push("a".into());
        assert!(w.close(Instant::now() + Duration::from_secs(5)));
        assert_eq!((stats.failed.load(Relaxed), stats.dropped.load(Relaxed)), (4, 1), "1 + 3 retries");
    }

    /// Never returns until released: a receiver that stalls.
    struct Stalled(Arc<Mutex<()>>);

    impl Deliver for Stalled {
        fn deliver(&mut self, _: &[String]) -> Result<(), Failure> {
            let _held = self.0.lock();
            Ok(())
        }
    }

    #[test]
    fn a_stalled_receiver_never_blocks_push_and_overflow_is_counted() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("lock");
        let stats = Arc::new(Stats::default());
        let batching = Batching { size: 1, linger: Duration::ZERO };
        let mut w = Worker::spawn("s", Stalled(gate.clone()), 5, batching, QUICK, stats.clone()).expect("spawn");
        let started = Instant::now();
        for i in 0..1000 {
            w.push(i.to_string());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "push blocked");
        // One in the thread's hands, five queued, the rest dropped.
        let dropped = stats.dropped.load(Relaxed);
        assert!((994..=995).contains(&dropped), "{dropped}");
        assert!(!w.close(Instant::now() + Duration::from_millis(20)), "still stalled");
        drop(held);
    }
}
