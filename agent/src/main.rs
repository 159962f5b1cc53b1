//! egress-agent: sees every outbound connection a process makes, matches it against the approved
//! vendors' allowlists, and reports or refuses everything else.

mod baseline;
mod cgroup;
mod cli;
mod control;
mod dns;
mod events;
mod fileid;
mod kernel;
mod logging;
mod pipeline;
mod policy;
mod run;
mod sinks;
mod statefile;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Exit code for configuration errors (what clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.command {
        Command::Check { paths } => cli::check(&paths),
        Command::Explain(args) => cli::explain(&args),
        Command::Inventory(args) => cli::inventory(&args),
        Command::Run { policy, cgroup, events, no_cmdline, ring_bytes, flows, state } => {
            let pipeline = pipeline::Settings {
                cmdline: !no_cmdline,
                max_flows: flows.max_flows,
                flow_update: std::time::Duration::from_secs(flows.flow_update),
                events_per_key: flows.events_per_key,
            };
            run::run_blocking(run::RunArgs { ring_bytes, policy, cgroup, events, pipeline, state, learn: None })
        }
        Command::Learn(args) => cli::learn(args),
        Command::Audit(cli::AuditCommand::Verify { file }) => cli::audit_verify(&file),
    }
}
