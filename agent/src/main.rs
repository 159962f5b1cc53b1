//! egress-agent: sees every outbound connection a process makes, matches it against the approved
//! vendors' allowlists, and reports or refuses everything else.

mod baseline;
mod btf;
mod cgroup;
mod cli;
mod datapath;
mod dns;
mod enrich;
mod events;
mod fileid;
mod logging;
mod output;
mod policy;
mod run;
mod statefile;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Exit code for configuration errors (what clap uses for usage errors).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.command {
        Command::Check { paths } => cli::check(&paths),
        Command::Explain(args) => cli::explain(&args),
        Command::Inventory(args) => cli::inventory(&args),
        Command::Run { policy, cgroup, events, no_cmdline, ring_bytes } => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "starting the async runtime failed");
                    return ExitCode::FAILURE;
                }
            };
            let args = run::RunArgs { ring_bytes, policy, cgroup, events, cmdline: !no_cmdline };
            match rt.block_on(run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %cli::error_chain(&e), "egress-agent stopped");
                    if e.is_usage() {
                        ExitCode::from(EXIT_USAGE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}
