//! The command line; the commands other than `run` have a file each.

mod audit;
mod block;
mod check;
mod explain;
mod inventory;
mod learn;
mod policy;
mod reload;
mod status;
mod uninstall;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

pub use audit::audit_verify;
pub use block::{block, unblock};
pub use check::check;
pub use explain::explain;
pub use inventory::{inventory, InventoryArgs};
pub use learn::{learn, write_learnt};
pub use policy::{policy_command, PolicyCommand, PolicySourceArgs};
pub use reload::reload;
pub use status::status;
pub use uninstall::uninstall;

#[derive(Parser)]
#[command(
    name = "egress-agent",
    version,
    about = "Per-process egress allowlisting for third-party vendors, in the kernel"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the kernel programs, enforce or monitor the policy, and write events as JSON lines.
    Run {
        /// Policy file or directory of `*.yaml` files; repeatable, all merge into one policy.
        /// Or one signed policy bundle, polled: `https://…`, `http://…` or `file:///…` (README
        /// "Central policy"). Without it the embedded default (monitor mode) is used.
        #[arg(long)]
        policy: Vec<PathBuf>,
        /// Largest policy file read (default 8388608 bytes); a larger one is refused unread.
        #[arg(long, value_name = "N", value_parser = policy_file_max_bytes)]
        policy_file_max_bytes: Option<u64>,
        #[command(flatten)]
        policy_source: PolicySourceArgs,
        /// cgroup v2 directory to watch (absolute, or relative to the cgroup2 mount); default: the
        /// root of the hierarchy, i.e. the whole host.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Where events go: a file (appended to) or `-` for stdout (the default).
        #[arg(long)]
        events: Option<PathBuf>,
        /// The events file may be a symbolic link (by default one is refused: a link planted
        /// there would have the agent append to any file).
        #[arg(long)]
        events_follow_symlinks: bool,
        /// Leave command lines out of events (they can carry secrets passed as arguments).
        #[arg(long)]
        no_cmdline: bool,
        /// Capacity of the kernel's event ring buffer in bytes: a power of two, at least 4096
        /// (an event takes 120 bytes). Larger absorbs longer bursts; overflows are counted.
        #[arg(long, value_parser = ring_bytes)]
        ring_bytes: Option<u32>,
        #[command(flatten)]
        flows: FlowArgs,
        /// Directory for what the agent learns over time (inventory, baselines) and its audit
        /// trail, kept across restarts. Without it nothing is learnt or kept.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The agent's configuration file (YAML): everything that is not policy. Flags given
        /// here override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics on ADDR:PORT at /metrics (default 127.0.0.1:9464), or `off`.
        #[arg(long, value_parser = metrics_addr)]
        metrics: Option<MetricsAddr>,
        /// `json` lines, or `text`: a line per event for a person (default: text when events go
        /// to a terminal, else json).
        #[arg(long, value_enum)]
        format: Option<crate::sinks::json::Format>,
        /// The admin socket `status`, `reload` and `block` use (default
        /// /run/egress-agent/admin.sock; root-only), or `off`.
        #[arg(long)]
        admin: Option<PathBuf>,
        /// Pin the datapath in this bpffs directory so it outlives the agent (default
        /// /sys/fs/bpf/egress-agent; a new agent adopts it), or `off`.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// What a deliberate stop (SIGTERM, SIGINT) does with a pinned datapath: `open` detaches
        /// everything (default), `closed` leaves the last policy enforcing.
        #[arg(long, value_enum)]
        fail_mode: Option<crate::kernel::pin::FailMode>,
    },
    /// Validate policy files or directories (merged into one policy): print every problem with
    /// file, line, column and field, then what the policy allows. Exits 2 on any error.
    Check {
        #[arg(required_unless_present = "config")]
        paths: Vec<PathBuf>,
        /// Also (or only) validate an agent configuration file, and the policy it names.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Largest policy file read (default: the configuration's `policyFileMaxBytes`, else
        /// 8388608 bytes).
        #[arg(long, value_name = "N", value_parser = policy_file_max_bytes)]
        policy_file_max_bytes: Option<u64>,
    },
    /// Would this connection be allowed, and by which rule? Same matching code as the agent.
    Explain(ExplainArgs),
    /// The third parties the agent saw (from its state directory): by which processes, when,
    /// how much, and each one's standing in the policy; plus unused and unowned vendors.
    Inventory(InventoryArgs),
    /// The audit trail `run --state DIR` keeps in DIR/audit.jsonl.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signed policy bundles for central policy: make keys, sign, verify.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// What the running agent is doing: policy and generation, uptime, the last hour per
    /// vendor, kernel table fill, sinks, kill switch and blocks (from its admin socket).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// The whole status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The running agent reads its policy again; prints whether it was installed or refused.
    Reload(AdminArgs),
    /// Kill switch: refuse a vendor's destinations (CIDRs and learnt addresses) to every process
    /// within a second, whatever the policy and its mode say; or, with --all, all egress but the
    /// policy's infrastructure `allow` rules. Kept across agent restarts until lifted or expired.
    Block(BlockArgs),
    /// Lift a kill switch block.
    Unblock(UnblockArgs),
    /// Remove the pinned datapath (which detaches its programs), saying what was removed.
    /// Refused while an agent runs with it.
    Uninstall {
        /// The pinned datapath's directory (default: the configuration's `pinDir`, else
        /// /sys/fs/bpf/egress-agent).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Watch in monitor mode (nothing is refused) for a while, then write a policy that allows
    /// what was seen: one vendor per registrable domain, the processes, ports and protocols
    /// used, with counts in comments for review.
    Learn(LearnArgs),
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain: names the first edited, deleted, inserted or reordered record, or a
    /// truncated tail. Exits 0 when intact, 1 otherwise.
    Verify {
        file: PathBuf,
        /// The hash of the newest record a sink received (an off-host copy): the file must
        /// still have it, or records were deleted from its end.
        #[arg(long)]
        last: Option<String>,
    },
}

/// Where the running agent's admin socket is.
#[derive(Args, Clone)]
pub struct AdminArgs {
    /// The agent's admin socket (default: the configuration's `admin`, else
    /// /run/egress-agent/admin.sock).
    #[arg(long)]
    pub admin: Option<PathBuf>,
    /// The agent's configuration file, to find its admin socket.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl AdminArgs {
    /// Sends `request`; on failure prints why and returns None.
    pub fn ask(&self, request: &crate::control::admin::Request) -> Option<serde_json::Value> {
        let from_config = match self.config.as_deref().map(crate::config::AgentConfig::load).transpose() {
            Ok(c) => c.and_then(|c| c.admin),
            Err(e) => {
                eprintln!("{e}");
                return None;
            }
        };
        let path = self.admin.clone().or(from_config).unwrap_or_else(|| crate::control::admin::DEFAULT_SOCKET.into());
        match crate::control::admin::ask(&path, request) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("{e}");
                None
            }
        }
    }
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["vendor", "all"]))]
pub struct BlockArgs {
    /// The vendor (its `name` in the policy).
    pub vendor: Option<String>,
    /// Everything but the infrastructure `allow` rules.
    #[arg(long)]
    pub all: bool,
    /// How long: `90s`, `30m`, `1h`, `2d` (default: until `unblock`).
    #[arg(long = "for", value_parser = duration)]
    pub r#for: Option<std::time::Duration>,
    /// Why, for the audit trail and the events.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["vendor", "all"]))]
pub struct UnblockArgs {
    pub vendor: Option<String>,
    /// Lift `block --all`.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct LearnArgs {
    /// How long to watch: `90s`, `30m`, `1h`, `2d`, or seconds.
    #[arg(long, value_parser = duration)]
    pub duration: std::time::Duration,
    /// cgroup v2 directory to watch (as for `run`); default: the whole host.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// A base policy (repeatable): what it allows is left out of the proposal. It runs in
    /// monitor mode while learning, whatever its `mode` says.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Where the proposed policy is written (refused if it exists, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub force: bool,
    /// `metadata.name` of the proposed policy.
    #[arg(long, default_value = "learned")]
    pub name: String,
    /// Also write the events seen while learning (a file, or `-` for stdout).
    #[arg(long)]
    pub events: Option<PathBuf>,
    #[command(flatten)]
    pub flows: FlowArgs,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("process").required(true).args(["exe", "pid"]))]
pub struct ExplainArgs {
    /// Policy file or directory; repeatable.
    #[arg(long, required = true)]
    pub policy: Vec<PathBuf>,
    /// The executable making the connection (its comm is taken from the file name).
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// A running process making the connection (exe, comm, uid and cgroup from /proc).
    #[arg(long)]
    pub pid: Option<u32>,
    /// With --exe: the user id (default: yours).
    #[arg(long)]
    pub uid: Option<u32>,
    /// With --exe: the process was started with LD_PRELOAD, LD_AUDIT or LD_LIBRARY_PATH, or is
    /// traced (it fails `untampered: true` selectors).
    #[arg(long)]
    pub tampered: bool,
    /// With --exe: the cgroup path under the cgroup2 mount (default: none matches).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Destination, `ADDR:PORT` (`[v6]:port` for IPv6).
    #[arg(long, required_unless_present = "domain", conflicts_with = "domain")]
    pub dst: Option<SocketAddr>,
    /// A name instead of an address: is its lookup allowed, and would a connection to an
    /// address learnt from its answer be (on `--port`)?
    #[arg(long)]
    pub domain: Option<String>,
    /// With --domain: the destination port.
    #[arg(long, default_value_t = 443, requires = "domain")]
    pub port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: ProtoArg,
}

/// How flows and repeated attempts become records.
#[derive(Args, Clone)]
pub struct FlowArgs {
    /// Flows tracked at once (the kernel's table); past 90% the oldest are reported and evicted.
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=(1 << 22)))]
    pub max_flows: Option<u32>,
    /// Seconds between the records of a long-lived flow (0: only when it ends).
    #[arg(long)]
    pub flow_update: Option<u64>,
    /// Connect records per second for one process, destination, verdict and rule; further
    /// attempts are folded into one record that says how many (`suppressed`). 0: never fold.
    #[arg(long)]
    pub events_per_key: Option<u32>,
}

impl FlowArgs {
    /// The pipeline's settings: these flags, else the configuration file, else the defaults
    /// (131,072 flows, updates every 60 s, 5 records per key per second).
    pub fn settings(&self, cmdline: bool, c: &crate::config::AgentConfig) -> crate::pipeline::Settings {
        crate::pipeline::Settings {
            cmdline,
            max_flows: self.max_flows.or(c.max_flows).unwrap_or(agent_common::MAX_FLOWS),
            flow_update: std::time::Duration::from_secs(self.flow_update.or(c.flow_update).unwrap_or(60)),
            events_per_key: self.events_per_key.or(c.events_per_key).unwrap_or(5),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
    /// An echo request from a ping socket (`--port` does not apply).
    Icmp,
}

/// Where metrics are served: an address, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

/// The default metrics address: loopback only.
pub const METRICS_DEFAULT: &str = "127.0.0.1:9464";

pub fn metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|_| format!("`{s}` is not ADDR:PORT (such as 127.0.0.1:9464) or `off`"))
}

/// A duration: a number followed by `s`, `m`, `h` or `d` (seconds without a unit).
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (such as 90s, 30m, 1h, 2d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("`{s}`: a duration must be more than zero"));
    }
    Ok(std::time::Duration::from_secs(n.saturating_mul(mult)))
}

fn ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

/// Bounds of `--policy-file-max-bytes` and `policyFileMaxBytes`.
pub const POLICY_FILE_MAX_BYTES: std::ops::RangeInclusive<u64> = 1024..=(1 << 30);

pub fn policy_file_max_bytes(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|_| format!("`{s}` is not a number of bytes"))?;
    check_policy_file_max_bytes(n)
}

pub fn check_policy_file_max_bytes(n: u64) -> Result<u64, String> {
    if !POLICY_FILE_MAX_BYTES.contains(&n) {
        return Err(format!(
            "{n} is not between {} and {}",
            POLICY_FILE_MAX_BYTES.start(),
            POLICY_FILE_MAX_BYTES.end()
        ));
    }
    Ok(n)
}

/// An error with its causes, each said once (our messages often embed their source already).
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
