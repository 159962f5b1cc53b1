//! Polling the central source: a thread of its own fetches the bundle every `interval` (or at
//! once when poked) with `If-None-Match`, and the event loop installs or refuses what it brings.

use std::{
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use super::{
    fetch::{FetchError, Fetched, Fetcher},
    Central, FirstPoll, Poke,
};
use crate::{
    control::audit::sha256_hex,
    in_force::{log_warnings, PolicyState},
    kernel::Datapath,
};

/// Starts the poller thread of `state`'s source; what it fetches arrives on the receiver, for
/// [`apply`]. Without a source the receiver never yields.
pub fn start_polling(state: &mut PolicyState) -> mpsc::UnboundedReceiver<Result<Fetched, FetchError>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(c) = state.central.as_mut() else { return rx };
    state.audit.append(&mut c.pending_audit);
    let Some(fetcher) = c.fetcher.take() else { return rx };
    let (poke_tx, poke_rx) = std_mpsc::channel();
    c.poke = Some(poke_tx);
    let first = std::mem::replace(&mut c.first, FirstPoll { etag: None, seen: None, now: false });
    let interval = c.interval;
    let spawned = std::thread::Builder::new()
        .name("policy-source".into())
        .spawn(move || poll_loop(&fetcher, interval, first, &poke_rx, &tx));
    if let Err(e) = spawned {
        error!(error = %e, "the policy source poller could not start: the policy will not be updated");
    }
    rx
}

fn poll_loop(
    fetcher: &Fetcher,
    interval: Duration,
    first: FirstPoll,
    pokes: &std_mpsc::Receiver<Poke>,
    tx: &mpsc::UnboundedSender<Result<Fetched, FetchError>>,
) {
    let FirstPoll { mut etag, mut seen, now } = first;
    let mut next = Instant::now() + if now { Duration::ZERO } else { interval };
    loop {
        match pokes.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Poke::Forget) => {
                (etag, seen) = (None, None);
                continue;
            }
            Ok(Poke::Now) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let got = match fetcher.fetch(etag.as_deref()) {
            Ok(Fetched::Body { bytes, etag: new }) => {
                let digest = sha256_hex(&bytes);
                let same = seen.as_deref() == Some(digest.as_str());
                (etag, seen) = (new, Some(digest));
                if same {
                    Ok(Fetched::NotModified)
                } else {
                    Ok(Fetched::Body { bytes, etag: etag.clone() })
                }
            }
            other => other,
        };
        next = Instant::now() + interval;
        if tx.send(got).is_err() {
            return;
        }
    }
}

/// Handles what the poller brought: installs a good new bundle, refuses a bad one (the running
/// policy stays), and says what happened (the `result` label of `egress_policy_fetches_total`).
pub fn apply(state: &mut PolicyState, dp: &mut Datapath, got: Result<Fetched, FetchError>) -> &'static str {
    let Some(mut c) = state.central.take() else { return "none" };
    let result = c.handle(state, dp, got);
    state.central = Some(c);
    result
}

impl Central {
    fn handle(&mut self, state: &mut PolicyState, dp: &mut Datapath, got: Result<Fetched, FetchError>) -> &'static str {
        let (bytes, etag) = match got {
            Err(e) => {
                error!(source = %self.location, error = %e, "fetching the policy bundle failed; the running policy stays in force");
                self.checked("error", Some(e.to_string()));
                return "error";
            }
            Ok(Fetched::NotModified) => {
                debug!(source = %self.location, "policy bundle not modified");
                // A refusal stays the last word until another bundle comes.
                if self.last.result != "refused" {
                    self.checked("not_modified", None);
                }
                return "not_modified";
            }
            Ok(Fetched::Body { bytes, etag }) => (bytes, etag),
        };
        let started = Instant::now();
        let ready = match self.examine(&bytes, &state.resolver, true) {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.save_cache(&bytes, etag.as_deref());
                self.checked("unchanged", None);
                return "unchanged";
            }
            Err(r) => {
                error!(source = %self.location, serial = r.serial, error = r.reason, "policy bundle refused; the running policy stays in force");
                state.audit.push(("reload_refused", self.refusal_record("policy bundle fetched", &r)));
                self.checked("refused", Some(r.reason));
                return "refused";
            }
        };
        log_warnings(&ready.warnings);
        let (serial, created) = (ready.bundle.serial, ready.bundle.created.clone());
        let audited = state.audit.len();
        let why = format!("policy bundle serial {serial}");
        let load_us = started.elapsed().as_micros() as u64;
        if let Err(e) = state.install(dp, ready.merged, ready.compiled, &why, load_us) {
            error!(error = %e, serial, "installing the policy bundle failed; the previous policy stays in force");
            self.checked("error", Some(format!("installing the policy failed: {e}")));
            if let Some(p) = &self.poke {
                let _ = p.send(Poke::Forget);
            }
            return "error";
        }
        if let Some((_, detail)) = state.audit.get_mut(audited) {
            detail["bundle"] = json!({"source": self.location.to_string(), "serial": serial, "created": created});
        }
        info!(source = %self.location, serial, created, generation = state.generation, "policy bundle installed");
        let digest = ready.bundle.digest();
        // The cache first: a floor above the cache (a crash between the two writes) would
        // refuse the cache at the next boot.
        self.save_cache(&bytes, etag.as_deref());
        self.raise_floor(serial, &digest);
        self.running = Some((serial, created, digest));
        self.checked("installed", None);
        "installed"
    }
}
