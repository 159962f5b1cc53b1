//! egress-agent: sees every outbound connection a process makes, matches it against the approved
//! vendors' allowlists, and reports or refuses everything else.

mod btf;
mod cgroup;
mod datapath;
mod enrich;
mod events;
mod logging;
mod output;
mod policy;
mod run;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "egress-agent", version, about = "Per-process egress allowlisting for third-party vendors, in the kernel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel programs, enforce or monitor the policy, and write events as JSON lines.
    Run {
        /// Policy file; without it the embedded default (monitor mode) is used.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// cgroup v2 directory to watch (absolute, or relative to the cgroup2 mount); default: the
        /// root of the hierarchy, i.e. the whole host.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Where events go: a file (appended to) or `-` for stdout.
        #[arg(long, default_value = "-")]
        events: PathBuf,
        /// Leave command lines out of events (they can carry secrets passed as arguments).
        #[arg(long)]
        no_cmdline: bool,
    },
    /// Validate policy files; exits non-zero naming file, line and field of the first problem.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Exit code for configuration errors (EX_USAGE would be 64; 2 is what clap uses).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Run { policy, cgroup, events, no_cmdline } => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "starting the async runtime failed");
                    return ExitCode::FAILURE;
                }
            };
            let args = run::RunArgs { policy, cgroup, events, cmdline: !no_cmdline };
            match rt.block_on(run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "egress-agent stopped");
                    if e.is_usage() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
                }
            }
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match run::load_policy(Some(f)) {
            Ok(p) => println!(
                "{}: ok: policy `{}`, mode {:?}, default {:?}, {} rules, {} IPv4 and {} IPv6 prefixes",
                f.display(),
                p.name,
                p.mode,
                p.default,
                p.rules.len(),
                p.v4.len(),
                p.v6.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS }
}

/// An error with its causes, each said once (our messages often embed their source already).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
