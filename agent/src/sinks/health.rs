//! What each sink has done, counted where it happens (the event loop for local sinks, the
//! sink's own thread for queued ones) and read by `/metrics` and the `status` command.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    Mutex,
};

use serde::Serialize;

/// Counters of one sink, shared between the event loop and the sink's thread.
#[derive(Debug)]
pub struct Stats {
    /// Records delivered (written to the file, accepted by the receiver).
    pub written: AtomicU64,
    /// Records lost: the queue was full, or delivery was given up after the retries.
    pub dropped: AtomicU64,
    /// Failed attempts to write or deliver (a retried batch counts each time).
    pub failed: AtomicU64,
    /// Records waiting in the queue.
    pub queued: AtomicU64,
    /// The last attempt succeeded.
    ok: AtomicBool,
    /// What went wrong last, without secrets: never a URL's query, credentials or a payload.
    last_error: Mutex<Option<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            ok: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }
}

impl Stats {
    pub fn delivered(&self, n: u64) {
        self.written.fetch_add(n, Relaxed);
        self.ok.store(true, Relaxed);
    }

    pub fn failure(&self, error: String) {
        self.failed.fetch_add(1, Relaxed);
        self.ok.store(false, Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn is_ok(&self) -> bool {
        self.ok.load(Relaxed)
    }
}

/// One sink's state for `egress-agent status` (serialized as JSON there).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkHealth {
    pub name: String,
    /// `stdout`, `file`, `syslog` or `webhook`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where it writes: a path, `host:port`, or a URL without credentials or query.
    pub target: String,
    pub written: u64,
    pub dropped: u64,
    pub failed: u64,
    pub queued: u64,
    pub last_error: Option<String>,
    /// The last attempt succeeded and the queue has room.
    pub healthy: bool,
}
