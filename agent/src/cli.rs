//! The command line, and the commands that only read: `check` and `explain`.

use std::{net::SocketAddr, os::unix::fs::MetadataExt as _, path::PathBuf, process::ExitCode};

use agent_common::{verdict, RULE_DEFAULT};
use clap::{Args, Parser, Subcommand};

use crate::{
    policy::{
        self,
        compile::{CompiledPolicy, ProcIdentity},
        model::Protocol,
        Merged, Severity,
    },
    EXIT_USAGE,
};

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
        /// Without it the embedded default (monitor mode) is used.
        #[arg(long)]
        policy: Vec<PathBuf>,
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
        /// Capacity of the kernel's event ring buffer in bytes: a power of two, at least 4096
        /// (an event takes 120 bytes). Larger absorbs longer bursts; overflows are counted.
        #[arg(long, default_value_t = agent_common::EVENTS_RING_BYTES, value_parser = ring_bytes)]
        ring_bytes: u32,
    },
    /// Validate policy files or directories (merged into one policy): print every problem with
    /// file, line, column and field, then what the policy allows. Exits 2 on any error.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Would this connection be allowed, and by which rule? Same matching code as the agent.
    Explain(ExplainArgs),
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
    /// With --exe: the cgroup path under the cgroup2 mount (default: none matches).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Destination, `ADDR:PORT` (`[v6]:port` for IPv6).
    #[arg(long)]
    pub dst: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: ProtoArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

fn ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
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

pub fn check(paths: &[PathBuf]) -> ExitCode {
    match policy::load(paths, time::OffsetDateTime::now_utc(), &policy::resolve::HostResolver::new()) {
        Ok((merged, compiled, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            print!("{}", summary(&merged, &compiled));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// What the policy allows, for people: mode, infrastructure rules, and per vendor its owner,
/// data, destinations, ports and processes.
fn summary(m: &Merged, c: &CompiledPolicy) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let list = |v: &[String]| if v.is_empty() { "any".to_owned() } else { v.join(", ") };
    let _ = writeln!(s, "policy `{}`: ok; mode {:?}, default {:?}", m.name, m.mode, m.default);
    let _ = writeln!(
        s,
        "  kernel tables: {} IPv4 and {} IPv6 prefixes, {} domain patterns, {} rule entries, {} process selectors, {} executables",
        c.tables.v4.len(),
        c.tables.v6.len(),
        c.tables.domains.len(),
        c.tables.entries.len(),
        c.tables.selectors.len() - 1,
        c.tables.exe_keys.len()
    );
    for (i, (a, _)) in m.allow.iter().enumerate() {
        let name = a.name.as_ref().map_or_else(|| i.to_string(), ToString::to_string);
        let ports: Vec<String> = a.ports.iter().map(ToString::to_string).collect();
        let protos: Vec<String> = a.protocols.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
        let _ = writeln!(
            s,
            "  allow/{name}: {} ports {} protocols {} for every process",
            a.dest().map_or_else(|e| e.to_owned(), |d| d.to_string()),
            list(&ports),
            list(&protos)
        );
    }
    for (v, _) in &m.vendors {
        let dests: Vec<String> = v.destinations.iter().map(|d| d.dest().map_or_else(|e| e.to_owned(), |d| d.to_string())).collect();
        let ports: Vec<String> = v.ports.iter().map(ToString::to_string).collect();
        let protos: Vec<String> = v.protocols.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
        let data: Vec<String> = v.data.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  vendor/{}: owner {}, purpose {}, data [{}]{}{}",
            v.name,
            v.owner.as_deref().unwrap_or("-"),
            v.purpose.as_deref().unwrap_or("-"),
            data.join(", "),
            v.mode.map_or_else(String::new, |m| format!(", mode {m:?}")),
            v.expires.map_or_else(String::new, |e| {
                let at = e.0.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                format!(", approved until {at}")
            }),
        );
        let _ = writeln!(s, "    destinations {} ports {} protocols {}", list(&dests), list(&ports), list(&protos));
        if v.processes.is_empty() {
            let _ = writeln!(s, "    processes: any");
        }
        for p in &v.processes {
            let mut parts = Vec::new();
            if let Some(e) = &p.exe {
                parts.push(format!("exe {}", e.0));
            }
            if let Some(c) = &p.comm {
                parts.push(format!("comm {}", c.0));
            }
            if let Some(u) = p.uid {
                parts.push(format!("uid {u}"));
            }
            if let Some(u) = &p.user {
                parts.push(format!("user {u}"));
            }
            if let Some(c) = &p.cgroup {
                parts.push(format!("cgroup {}", c.0));
            }
            let _ = writeln!(s, "    process: {}", parts.join(" and "));
        }
        if let Some(exes) = c.vendor_exes.get(&v.name.0).filter(|e| !e.is_empty()) {
            let _ = writeln!(s, "    executables now: {}", exes.join(", "));
        }
    }
    s
}

pub fn explain(a: &ExplainArgs) -> ExitCode {
    let (_, compiled, warnings) =
        match policy::load(&a.policy, time::OffsetDateTime::now_utc(), &policy::resolve::HostResolver::new()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
    for w in warnings.iter().filter(|w| w.severity == Severity::Warning) {
        eprintln!("{w}");
    }
    let proc = match identity(a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let proto = match a.proto {
        ProtoArg::Tcp => Protocol::Tcp,
        ProtoArg::Udp => Protocol::Udp,
    };
    let d = compiled.decide(a.dst.ip(), a.dst.port(), proto, &proc);
    let verdict = match d.verdict {
        verdict::ALLOW => "allow",
        verdict::DENY => "deny",
        _ => "alert",
    };
    let rule = compiled.rule(d.rule_id);
    let because = match rule {
        Some(r) if d.flags & agent_common::event_flags::PROCESS_NOT_ALLOWED != 0 => {
            format!("{} reserves this destination to its processes and this process is not one of them", r.name)
        }
        Some(r) => format!("allowed by {}", r.name),
        None if d.rule_id == RULE_DEFAULT => {
            format!("no rule allows it; mode {:?}, default {:?}", compiled.mode, compiled.default)
        }
        None => "unknown rule".to_owned(),
    };
    let at = rule.and_then(|r| r.place.as_ref()).map_or_else(String::new, |p| format!(" (defined at {p})"));
    println!("{verdict}: {because}{at}");
    ExitCode::SUCCESS
}

fn identity(a: &ExplainArgs) -> Result<ProcIdentity, String> {
    if let Some(pid) = a.pid {
        let base = format!("/proc/{pid}");
        let exe = crate::fileid::file_id(std::path::Path::new(&format!("{base}/exe")))
            .map_err(|e| format!("--pid {pid}: {base}/exe: {e}"))?;
        let comm = std::fs::read_to_string(format!("{base}/comm")).map_err(|e| format!("--pid {pid}: {e}"))?;
        let status = std::fs::read_to_string(format!("{base}/status")).map_err(|e| format!("--pid {pid}: {e}"))?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| format!("--pid {pid}: no Uid in {base}/status"))?;
        let cg = std::fs::read_to_string(format!("{base}/cgroup")).map_err(|e| format!("--pid {pid}: {e}"))?;
        let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_owned();
        Ok(ProcIdentity {
            exe: Some((exe.dev, exe.ino)),
            uid,
            comm: comm.trim().to_owned(),
            cgroup_ancestors: ancestors(&path),
        })
    } else if let Some(exe) = &a.exe {
        let id = crate::fileid::file_id(exe).map_err(|e| format!("--exe {}: {e}", exe.display()))?;
        let comm = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // SAFETY: no preconditions.
        let uid = a.uid.unwrap_or_else(|| unsafe { libc::getuid() });
        let cgroup_ancestors = a.cgroup.as_deref().map(ancestors).unwrap_or_default();
        Ok(ProcIdentity { exe: Some((id.dev, id.ino)), uid, comm, cgroup_ancestors })
    } else {
        Err("give --exe or --pid".into())
    }
}

/// Ids of a cgroup path and its ancestors, root first (the inode of each directory).
fn ancestors(path: &str) -> Vec<u64> {
    let Ok(mount) = crate::cgroup::cgroup2_mount() else { return Vec::new() };
    // Levels above a subtree mount are not visible; no selector can name them from here anyway.
    let mut out = vec![0; crate::cgroup::cgroup2_root_depth() as usize];
    let mut dir = mount;
    if let Ok(m) = std::fs::metadata(&dir) {
        out.push(m.ino());
    }
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        dir.push(comp);
        match std::fs::metadata(&dir) {
            Ok(m) => out.push(m.ino()),
            Err(_) => break,
        }
    }
    out
}
