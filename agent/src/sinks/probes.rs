//! The probes `/healthz` and `/readyz`, served beside `/metrics` (see [`super::metrics::serve`]).
//!
//! Readiness: the programs are attached and the policy installed (the moment the agent logs
//! "egress-agent ready" and tells systemd `READY=1`); not before, and not once it is stopping.
//! Liveness: the event loop turns. It beats once a second; a beat older than [`STALE`] means it
//! is stuck (a deadlock, a sink that blocks it), which only a restart cures. While the agent
//! starts, liveness holds: a start that hangs is the readiness probe's (and a startup probe's)
//! business, so a slow first load is not killed half-way.

use std::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    time::{Duration, Instant},
};

/// A heartbeat older than this fails `/healthz`.
pub const STALE: Duration = Duration::from_secs(10);

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

pub struct Probes {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds from `base` to the last beat.
    beat_ms: AtomicU64,
}

impl Default for Probes {
    fn default() -> Self {
        Self::new()
    }
}

impl Probes {
    pub fn new() -> Self {
        Self { base: Instant::now(), phase: AtomicU8::new(STARTING), beat_ms: AtomicU64::new(0) }
    }

    /// The programs are attached and the policy enforcing; the event loop starts.
    pub fn set_ready(&self) {
        self.beat();
        self.phase.store(READY, Ordering::Release);
    }

    /// The event loop is alive (called on its one-second tick).
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis();
        self.beat_ms.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// The agent is stopping: no longer ready.
    pub fn set_stopping(&self) {
        self.phase.store(STOPPING, Ordering::Release);
    }

    /// `/readyz`: `Ok(text)` for 200, `Err(text)` for 503.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        match self.phase.load(Ordering::Acquire) {
            READY => Ok("ready: programs attached, policy enforcing\n"),
            STOPPING => Err("not ready: stopping\n"),
            _ => Err("not ready: loading the policy and attaching the programs\n"),
        }
    }

    /// `/healthz` at `now`: `Ok(text)` for 200, `Err(text)` for 503.
    pub fn liveness(&self, now: Instant) -> Result<String, String> {
        if self.phase.load(Ordering::Acquire) == STARTING {
            return Ok("ok: starting\n".to_owned());
        }
        let last = self.base + Duration::from_millis(self.beat_ms.load(Ordering::Acquire));
        let age = now.saturating_duration_since(last);
        if age > STALE {
            Err(format!("unhealthy: the event loop has not turned for {:.1}s\n", age.as_secs_f64()))
        } else {
            Ok("ok\n".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_attach_and_stop() {
        let h = Probes::new();
        assert!(h.readiness().is_err_and(|t| t.contains("loading")));
        h.set_ready();
        assert!(h.readiness().is_ok());
        h.set_stopping();
        assert!(h.readiness().is_err_and(|t| t.contains("stopping")));
    }

    #[test]
    fn live_while_starting_and_while_the_loop_beats() {
        let h = Probes::new();
        let t0 = h.base;
        // A long start is not a dead loop.
        assert!(h.liveness(t0 + Duration::from_secs(60)).is_ok());
        h.set_ready();
        h.beat_at(t0 + Duration::from_secs(100));
        assert!(h.liveness(t0 + Duration::from_secs(105)).is_ok());
        assert!(h.liveness(t0 + Duration::from_secs(110)).is_ok());
        let e = h.liveness(t0 + Duration::from_millis(110_500)).expect_err("stale");
        assert!(e.contains("10.5s"), "{e}");
        h.beat_at(t0 + Duration::from_secs(111));
        assert!(h.liveness(t0 + Duration::from_secs(111)).is_ok());
    }

    #[test]
    fn a_stopping_agent_is_still_judged_by_its_beat() {
        let h = Probes::new();
        h.set_ready();
        h.set_stopping();
        assert!(h.liveness(h.base + Duration::from_secs(1)).is_ok());
        assert!(h.liveness(h.base + Duration::from_secs(30)).is_err());
    }
}
