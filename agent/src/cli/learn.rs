//! `egress-agent learn`: run the datapath in monitor mode for a while, then write the policy the
//! observed traffic needs (see `baseline::learn` for what it proposes).

use std::{path::PathBuf, process::ExitCode};

use super::LearnArgs;
use crate::run;

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
