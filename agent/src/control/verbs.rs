//! What the admin socket's verbs do, carried out by the event loop with everything it owns:
//! `status`, `reload`, and the kill switch's `block` / `unblock`.

use std::{path::PathBuf, time::Duration};

use serde_json::{json, Value};
use time::OffsetDateTime;
use tracing::{error, warn};

use super::{
    admin::{refusal, Request},
    killswitch::{Kill, KillError, KillSwitch},
};
use crate::{events, in_force::PolicyState, kernel::Datapath, pipeline::Pipeline};

/// What `status` says about the agent itself.
pub struct AgentInfo {
    pub started: std::time::Instant,
    pub started_at: OffsetDateTime,
    pub cgroup: PathBuf,
    pub state: Option<PathBuf>,
    /// This node's pod list, if `kubernetes.pods` is on.
    pub pods: Option<crate::kube::Pods>,
}

/// Everything a verb may read or change.
pub struct Ctx<'a> {
    pub state: &'a mut PolicyState,
    pub dp: &'a mut Datapath,
    pub pipe: &'a mut Pipeline,
    pub kills: &'a mut KillSwitch,
    pub info: &'a AgentInfo,
}

/// Carries out one request from `uid`; the answer is JSON with `ok`.
pub fn handle(request: Request, uid: u32, c: &mut Ctx<'_>) -> Value {
    match request {
        Request::Status {} => status(c),
        Request::Reload {} => match c.state.reload(c.dp, "admin socket: reload") {
            Ok(result) => json!({"ok": true, "result": result, "generation": c.state.generation}),
            Err(e) => json!({"ok": false, "error": e, "generation": c.state.generation}),
        },
        Request::Block { vendor, all, for_s, reason } => {
            let Some(target) = target(vendor.as_deref(), all) else {
                return refusal("name a vendor, or --all (not both)");
            };
            let duration = for_s.map(Duration::from_secs);
            if duration.is_some_and(|d| d.is_zero()) {
                return refusal("--for must be more than zero");
            }
            let vendors = vendor_names(c.state);
            let before = c.kills.clone();
            match c.kills.block(target, duration, reason, uid, &vendors) {
                Ok(kill) => changed(c, before, &kill, "block"),
                Err(e) => refusal(e),
            }
        }
        Request::Unblock { vendor, all } => {
            let Some(target) = target(vendor.as_deref(), all) else {
                return refusal("name a vendor, or --all (not both)");
            };
            let before = c.kills.clone();
            match c.kills.unblock(target) {
                Ok(kill) => changed(c, before, &kill, "unblock"),
                Err(e) => refusal(e),
            }
        }
    }
}

/// `Some(None)`: all; `Some(Some(v))`: a vendor; None: neither or both.
fn target(vendor: Option<&str>, all: bool) -> Option<Option<&str>> {
    match (vendor, all) {
        (Some(v), false) => Some(Some(v)),
        (None, true) => Some(None),
        _ => None,
    }
}

fn vendor_names(state: &PolicyState) -> Vec<String> {
    let mut v: Vec<String> = state.current().rules.iter().filter_map(|r| r.vendor.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// A kill started or lifted: into the kernel now, then kept, audited, reported. If the kernel
/// cannot take it, the switch goes back to `before` (in memory and in the kernel), so what
/// `status` says is what the kernel does.
fn changed(c: &mut Ctx<'_>, before: KillSwitch, kill: &Kill, action: &str) -> Value {
    if let Err(e) = c.kills.apply(c.dp) {
        error!(error = %e, "the kill switch could not be written to the kernel");
        *c.kills = before;
        if let Err(e) = c.kills.apply(c.dp) {
            error!(error = %e, "restoring the kill switch in the kernel failed");
        }
        return refusal(format!("writing the kill switch to the kernel failed: {e}; nothing changed"));
    }
    sync_metrics(c.kills, c.pipe);
    let saved = c.kills.save();
    if let Err(e) = &saved {
        warn!(error = %e, "kill switch not persisted");
    }
    report(c.pipe, kill, action);
    let mut answer = json!({"ok": true, "action": action, "kill": kill});
    if let Err(e @ KillError::NotSaved { .. }) = saved {
        answer["warning"] = Value::String(e.to_string());
    }
    answer
}

/// The audit record, the event, and the log line of a kill switch change.
pub fn report(pipe: &mut Pipeline, kill: &Kill, action: &str) {
    let rec = kill.record(action);
    warn!(action, vendor = kill.vendor.as_deref().unwrap_or("--all"), until = ?kill.until, by_uid = kill.by_uid, "kill switch");
    pipe.audit(&format!("kill_switch_{action}"), rec.clone());
    pipe.emit(&rec);
}

/// `egress_kill_switch_active{vendor}`: 1 for each kill in force, 0 for those lifted.
pub fn sync_metrics(kills: &KillSwitch, pipe: &Pipeline) {
    let m = &pipe.metrics.kills_active;
    m.reset();
    for k in kills.active() {
        m.with_label_values(&[k.vendor.as_deref().unwrap_or("all")]).set(1);
    }
}

/// Lifts the kills that ran out (the kernel already stopped refusing at their end).
pub fn expire(kills: &mut KillSwitch, dp: &mut Datapath, pipe: &mut Pipeline) {
    let ended = kills.expire(OffsetDateTime::now_utc());
    if ended.is_empty() {
        return;
    }
    if let Err(e) = kills.apply(dp) {
        warn!(error = %e, "tidying the kill switch failed");
    }
    if let Err(e) = kills.save() {
        warn!(error = %e, "kill switch not persisted");
    }
    sync_metrics(kills, pipe);
    for k in &ended {
        report(pipe, k, "expired");
    }
}

fn status(c: &mut Ctx<'_>) -> Value {
    let p = c.state.current();
    let m = &c.pipe.metrics;
    let tables = c.dp.table_fill(p, &c.pipe.table_counts()).unwrap_or_else(|e| {
        warn!(error = %e, "counting the kernel tables failed");
        Vec::new()
    });
    let now_s = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let vendors: Vec<Value> = c
        .pipe
        .recent
        .last_hour(now_s)
        .into_iter()
        .map(|(v, n)| json!({"vendor": v, "allowed": n.allowed, "alerted": n.alerted, "denied": n.denied, "bytes_out": n.bytes_out, "bytes_in": n.bytes_in}))
        .collect();
    let reload_at = m.policy_reload_time.get();
    json!({
        "ok": true,
        "agent": {
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started": events::rfc3339(c.info.started_at.unix_timestamp_nanos()),
            "uptime_s": c.info.started.elapsed().as_secs(),
            "cgroup": c.info.cgroup.display().to_string(),
            "state": c.info.state.as_ref().map(|s| s.display().to_string()),
        },
        "policy": {
            "name": p.name,
            "mode": format!("{:?}", p.mode).to_lowercase(),
            "default": format!("{:?}", p.default).to_lowercase(),
            "sha256": p.sha256,
            "generation": c.state.generation,
            "last_reload": events::rfc3339(i128::from(reload_at) * 1_000_000_000),
            "reloads_installed": m.policy_reloads.with_label_values(&["installed"]).get(),
            "reloads_refused": m.policy_reloads.with_label_values(&["refused"]).get(),
        },
        "policy_source": c.state.central.as_ref().map(crate::central::Central::status),
        "vendors_last_hour": vendors,
        "tables": tables,
        "events": {
            "dropped_in_kernel": m.events_dropped.get(),
            "suppressed": m.events_suppressed.get(),
            "ring_lag_s": m.ring_lag.get(),
        },
        "sinks": c.pipe.sinks.health(),
        "memory": {
            "heap": crate::memory::heap(),
            "caches": c.pipe.caches(),
        },
        "pod_list": c.info.pods.as_ref().map(crate::kube::Pods::status),
        "kill_switch": c.kills.active().collect::<Vec<_>>(),
        "blocks": c.pipe.watch.blocks(),
    })
}
