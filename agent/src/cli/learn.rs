//! `egress-agent learn`: run the datapath in monitor mode for a while, then write the policy the
//! observed traffic needs (see `baseline::learn` for what it proposes).

use std::{path::PathBuf, process::ExitCode};

use super::LearnArgs;
use tracing::{error, info};

use crate::run::{self, RunError};

pub fn learn(args: LearnArgs) -> ExitCode {
    if args.out.exists() && !args.force {
        eprintln!("{} exists: choose another --out, or pass --force to replace it", args.out.display());
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
    if !dir.is_dir() {
        eprintln!("{}: no such directory for --out", dir.display());
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let pipeline = args.flows.settings(false, &crate::config::AgentConfig::default());
    run::run_blocking(run::RunArgs {
        admin: None,
        pin: None,
        host_root: None,
        kubernetes: Default::default(),
        ring_bytes: agent_common::EVENTS_RING_BYTES,
        policy: args.policy,
        policy_source: Default::default(),
        cgroup: args.cgroup,
        events: args.events.unwrap_or_else(|| PathBuf::from("/dev/null")),
        pipeline,
        state: None,
        learn: Some(run::Learning { duration: args.duration, out: args.out, name: args.name }),
        metrics: None,
        format: crate::sinks::json::Format::Json,
    })
}

/// Writes the policy `learn` proposes, and checks that it loads as a policy would.
// RunError carries the datapath's errors, large ones; this returns once per run.
#[allow(clippy::result_large_err)]
pub fn write_learnt(
    l: &run::Learning,
    inv: &crate::baseline::inventory::Inventory,
    base_paths: &[PathBuf],
    state: &crate::in_force::PolicyState,
) -> Result<(), RunError> {
    use crate::baseline::learn;
    // The base as written (its own mode), not as learning ran it.
    let base = if base_paths.is_empty() {
        None
    } else {
        Some(crate::policy::load(base_paths, time::OffsetDateTime::now_utc(), &state.resolver)?.1)
    };
    let base_ref = base.as_ref().map(|p| learn::Base::new(p, &state.resolver));
    let text = learn::generate(inv, &l.name, base_ref.as_ref());
    let tmp = l.out.with_extension("yaml.tmp");
    std::fs::write(&tmp, &text).map_err(|source| RunError::Output { path: tmp.display().to_string(), source })?;
    // Loaded as `check` loads it (parse, merge, compile against the kernel's limits): a bug of
    // ours must not leave a file `check` would refuse.
    if let Err(e) = crate::policy::load(std::slice::from_ref(&tmp), time::OffsetDateTime::now_utc(), &state.resolver) {
        error!(error = %e, kept = %tmp.display(), "the proposed policy does not load; kept for a bug report");
        return Err(RunError::Io { what: "generating the learned policy", source: std::io::Error::other("invalid") });
    }
    std::fs::rename(&tmp, &l.out).map_err(|source| RunError::Output { path: l.out.display().to_string(), source })?;
    let parties = inv.parties.len();
    info!(out = %l.out.display(), parties, "proposed policy written: review it, then `egress-agent check` it");
    Ok(())
}
