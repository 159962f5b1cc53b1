//! egress-agent: sees every outbound connection a process makes, matches it against the approved
//! vendors' allowlists, and reports or refuses everything else.
//!
//! A library with a thin binary (`main.rs`): the fuzz targets (`fuzz/`) call into it through
//! [`fuzzing`]; every other module stays private, so dead code is still found.

mod baseline;
mod central;
mod cgroup;
mod cli;
mod config;
mod container;
mod control;
mod dns;
mod events;
mod fileid;
#[doc(hidden)]
pub mod fuzzing;
mod in_force;
mod kernel;
mod kube;
mod logging;
mod memory;
mod pipeline;
mod policy;
mod run;
mod sinks;
mod statefile;
mod systemd;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Exit code for configuration errors (what clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;

/// The `egress-agent` command line: parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    match cli.command {
        Command::Check { paths, config, policy_file_max_bytes } => {
            cli::check(&paths, config.as_deref(), policy_file_max_bytes)
        }
        Command::Explain(args) => cli::explain(&args),
        Command::Inventory(args) => cli::inventory(&args),
        Command::Run {
            policy,
            policy_file_max_bytes,
            policy_source,
            cgroup,
            events,
            events_follow_symlinks,
            no_cmdline,
            ring_bytes,
            flows,
            state,
            config,
            metrics,
            format,
            admin,
            pin_dir,
            fail_mode,
        } => {
            let file = match config.as_deref().map(config::AgentConfig::load).transpose() {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => {
                    tracing::error!(error = %e, "configuration refused");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            // Flags first, then the file, then the defaults.
            policy::files::set_max_bytes(
                policy_file_max_bytes.or(file.policy_file_max_bytes).unwrap_or(policy::files::DEFAULT_MAX_BYTES),
            );
            let cmdline = !no_cmdline && file.cmdline.unwrap_or(true);
            let pipeline = flows.settings(cmdline, &file);
            let default = cli::MetricsAddr(cli::METRICS_DEFAULT.parse().ok());
            let from_file = file.metrics.as_ref().and_then(|m| cli::metrics_addr(m.listen()).ok());
            let metrics = metrics.or(from_file).unwrap_or(default).0;
            // See sinks::spec::resolve for how --events and --format combine with `sinks:`.
            let mut specs =
                match sinks::spec::resolve(events.as_deref(), format, file.events.as_deref(), file.sinks.as_deref()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "configuration refused");
                        return ExitCode::from(EXIT_USAGE);
                    }
                };
            if events_follow_symlinks || file.events_follow_symlinks == Some(true) {
                sinks::spec::SinkSpec::follow_primary_symlinks(&mut specs);
            }
            let events: std::path::PathBuf = events.or(file.events).unwrap_or_else(|| "-".into());
            // SAFETY: isatty only reads the descriptor's state.
            let terminal = unsafe { libc::isatty(1) } == 1;
            let format = format.unwrap_or(if terminal { sinks::json::Format::Text } else { sinks::json::Format::Json });
            let outputs = run::Outputs { sinks: Some(specs), terminal };
            run::run_blocking_with(
                run::RunArgs {
                    ring_bytes: ring_bytes.or(file.ring_bytes).unwrap_or(agent_common::EVENTS_RING_BYTES),
                    policy: if policy.is_empty() { file.policy } else { policy },
                    policy_source: policy_source.options().or_config(file.policy_source.as_ref()),
                    cgroup: cgroup.or(file.cgroup),
                    events,
                    format,
                    pipeline,
                    state: state.or(file.state),
                    learn: None,
                    metrics,
                    admin: match admin.or(file.admin).unwrap_or_else(|| control::admin::DEFAULT_SOCKET.into()) {
                        p if p.as_os_str() == "off" => None,
                        p => Some(p),
                    },
                    host_root: file.host_root,
                    kubernetes: file.kubernetes.unwrap_or_default(),
                    pin: match pin_dir.or(file.pin_dir).unwrap_or_else(|| kernel::pin::DEFAULT_ROOT.into()) {
                        p if p.as_os_str() == "off" => None,
                        p => Some((p, fail_mode.or(file.fail_mode).unwrap_or(kernel::pin::FailMode::Open))),
                    },
                },
                outputs,
            )
        }
        Command::Learn(args) => cli::learn(args),
        Command::Audit(cli::AuditCommand::Verify { file, last }) => cli::audit_verify(&file, last.as_deref()),
        Command::Policy(cmd) => cli::policy_command(&cmd),
        Command::Status { admin, json } => cli::status(&admin, json),
        Command::Reload(admin) => cli::reload(&admin),
        Command::Block(args) => cli::block(&args),
        Command::Unblock(args) => cli::unblock(&args),
        Command::Uninstall { pin_dir, config } => cli::uninstall(pin_dir, config.as_deref()),
    }
}
