//! Project tasks: `cargo xtask setup | build | run | test | fuzz | bench | soak`.
//! Every task that needs the kernel toolchain provisions it first, so a fresh machine needs
//! nothing but these commands.

mod bench;
mod deploy;
mod fuzz;
mod setup;
mod soak;
mod util;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::util::{run, workspace_root};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building the kernel programs needs (idempotent).
    Setup {
        /// Also install the clients and servers the kernel tests drive (curl, python3, iproute2 ...).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the agent (and the embedded kernel programs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent; arguments after `--` go to `egress-agent run`.
    /// With none, it runs on the embedded default policy (monitor mode) for the whole host.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, each fuzz target briefly, then the kernel tests (root; real programs, real
    /// kernel, real clients).
    Test {
        /// Only the tests whose name contains this.
        filter: Option<String>,
    },
    /// Fuzz targets (cargo-fuzz, libFuzzer): the policy loader and compiler, the kernel's DNS
    /// parser built for the host, the event decoder, the configuration. Fails on a crash.
    Fuzz {
        /// One target (policy, dns, event, config); all of them without.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Check deploy/: the systemd unit, the Kubernetes manifests and the configurations (part of
    /// `test`).
    CheckDeploy,
    /// Benchmarks; prints ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// Soak: the agent enforcing under connection, DNS, reload and sink churn for N minutes;
    /// prints its memory, fds, kernel tables and counters every minute, and fails on growth
    /// after the warm-up or on attempts that do not add up. Run by hand, not part of `test`.
    Soak {
        #[arg(long, default_value_t = 5)]
        minutes: u32,
        /// Allowed TCP connections per second; the other workloads are paced in proportion.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// Internal: the soak's client, run inside the soak's namespace and cgroup.
    #[command(hide = true)]
    SoakClient(soak::client::ClientArgs),
    /// Internal: the benchmark's client, run inside the test namespace and cgroup.
    #[command(hide = true)]
    BenchClient(bench::ClientArgs),
    /// Internal: the DNS benchmark's client (in the cgroup) or its TCP listener (outside it).
    #[command(hide = true)]
    BenchDnsClient(bench::dns::ClientArgs),
    /// Internal: the flows benchmark's client (in the cgroup) or its server (outside it).
    #[command(hide = true)]
    BenchFlowsClient(bench::flows::ClientArgs),
    /// Internal: the events benchmark's client (in the cgroup) or its server (outside it).
    #[command(hide = true)]
    BenchEventsClient(bench::events::ClientArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup { test_deps } => {
            setup::kernel_toolchain()?;
            if test_deps {
                setup::test_deps()?;
            }
            Ok(())
        }
        Cmd::Build { release } => {
            setup::kernel_toolchain()?;
            build_agent(release).map(|_| ())
        }
        Cmd::Run { args } => {
            setup::kernel_toolchain()?;
            let bin = build_agent(true)?;
            let status = Command::new(&bin)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            if !status.success() {
                bail!("egress-agent exited with {status}");
            }
            Ok(())
        }
        Cmd::Test { filter } => test(filter.as_deref()),
        Cmd::Fuzz { target, seconds } => fuzz::run_targets(target.as_deref(), seconds),
        Cmd::CheckDeploy => {
            setup::kernel_toolchain()?;
            deploy::check(&build_agent(false)?)
        }
        Cmd::Bench { which } => {
            setup::kernel_toolchain()?;
            // Another build of the agent can be measured instead (an older commit, to compare).
            let bin = match std::env::var_os("EGRESS_AGENT_BENCH_BIN") {
                Some(b) => PathBuf::from(b),
                None => build_agent(true)?,
            };
            bench::run(which, &bin)
        }
        Cmd::Soak { minutes, rate } => {
            setup::kernel_toolchain()?;
            // As the benchmarks: the release build, or another one named by EGRESS_AGENT_BENCH_BIN.
            let bin = match std::env::var_os("EGRESS_AGENT_BENCH_BIN") {
                Some(b) => PathBuf::from(b),
                None => build_agent(true)?,
            };
            soak::run(&bin, minutes, rate)
        }
        Cmd::SoakClient(args) => soak::client::client(&args),
        Cmd::BenchClient(args) => bench::client(&args),
        Cmd::BenchDnsClient(args) => bench::dns::client(&args),
        Cmd::BenchFlowsClient(args) => bench::flows::client(&args),
        Cmd::BenchEventsClient(args) => bench::events::client_main(&args),
    }
}

/// Builds `egress-agent` and returns the path of the binary, as cargo reports it (so a
/// `CARGO_TARGET_DIR` or `build.target-dir` is honoured and no stale binary is picked up).
fn build_agent(release: bool) -> Result<PathBuf> {
    build_bin("agent", "egress-agent", release)
}

/// Builds binary `bin` of `package` and returns its path as cargo reports it.
fn build_bin(package: &str, bin: &str, release: bool) -> Result<PathBuf> {
    let root = workspace_root();
    let mut cmd = Command::new(env_cargo());
    cmd.current_dir(&root).args([
        "build",
        "--package",
        package,
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    cmd.stderr(std::process::Stdio::inherit());
    let out = util::output(&mut cmd)?;
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    exe.ok_or_else(|| anyhow::anyhow!("cargo built no `{bin}` executable"))
}

fn env_cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn test(filter: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the kernel tests load eBPF programs and create network namespaces: run `cargo xtask test` as root");
    }
    setup::kernel_toolchain()?;
    setup::test_deps()?;
    let root = workspace_root();
    // Unit tests of the pure logic (default members).
    let mut unit = Command::new(env_cargo());
    unit.current_dir(&root).arg("test");
    if let Some(f) = filter {
        unit.arg(f);
    }
    run(&mut unit)?;
    // Each fuzz target briefly (its seeds and a few hundred thousand mutations): a crash fails.
    if filter.is_none() {
        fuzz::run_targets(None, fuzz::TEST_SECONDS)?;
    }
    let bin = build_agent(false)?;
    // The unit file, the manifests and the configurations in deploy/.
    deploy::check(&bin)?;
    // Kernel tests share kernel state (cgroups, namespaces, attached programs): one at a time.
    let mut kernel = Command::new(env_cargo());
    kernel.current_dir(&root).args(["test", "--package", "egress-agent-tests", "--"]);
    if let Some(f) = filter {
        kernel.arg(f);
    }
    kernel.args(["--test-threads=1"]).env("EGRESS_AGENT_BIN", &bin);
    run(&mut kernel)
}
