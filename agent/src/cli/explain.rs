//! `egress-agent explain`: what the kernel would decide for one connection (or one name), with
//! the same matching code and tables the agent installs.

use std::{os::unix::fs::MetadataExt as _, process::ExitCode};

use agent_common::{verdict, RULE_DEFAULT};

use super::{ExplainArgs, ProtoArg};
use crate::{
    dns::name::canonical_name,
    policy::{
        self,
        compile::ProcIdentity,
        model::{DefaultAction, Mode, Protocol},
        Severity,
    },
    EXIT_USAGE,
};

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
        ProtoArg::Icmp => Protocol::Icmp,
    };
    let d = if let Some(name) = &a.domain {
        let name = match canonical_name(name) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("--domain: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let (entry, d) = compiled.decide_domain(&name, a.port, proto, &proc);
        match entry {
            Some(e) => println!("lookup of {name}: allow (covered by `{}`)", e.pattern),
            None => {
                let v = match (compiled.tables.dns.unlisted, compiled.mode) {
                    (DefaultAction::Allow, _) => "allow",
                    (DefaultAction::Deny, Mode::Enforce) => "deny",
                    _ => "alert",
                };
                let unlisted = format!("{:?}", compiled.tables.dns.unlisted).to_lowercase();
                println!("lookup of {name}: {v} (no rule covers it; dns.unlisted is {unlisted})");
            }
        }
        print!("connection to an address from its answer, port {}: ", a.port);
        d
    } else if let Some(dst) = a.dst {
        if let std::net::IpAddr::V6(v6) = dst.ip() {
            // Said first: the rules below are the IPv4 address's.
            match compiled.nat64(v6) {
                Some((v4, prefix, Some(at))) => println!("{v6} is {v4} (NAT64 prefix {prefix}, listed at {at})"),
                Some((v4, prefix, None)) => println!("{v6} is {v4} (NAT64 prefix {prefix})"),
                None => {}
            }
        }
        compiled.decide(dst.ip(), dst.port(), proto, &proc)
    } else {
        eprintln!("give --dst or --domain");
        return ExitCode::from(EXIT_USAGE);
    };
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
        // `pod_uid` and `container` selectors match through the cgroup ancestors below; say
        // which container and pod those are.
        if let Some(line) = container_line(&path) {
            println!("{line}");
        }
        Ok(ProcIdentity {
            exe: Some((exe.dev, exe.ino)),
            uid,
            comm: comm.trim().to_owned(),
            cgroup_ancestors: ancestors(&path),
            // As /proc shows it now; the kernel's record, made at exec, may know more.
            tamper: crate::kernel::exec_ids::tamper_of(std::path::Path::new(&base)),
        })
    } else if let Some(exe) = &a.exe {
        let id = crate::fileid::file_id(exe).map_err(|e| format!("--exe {}: {e}", exe.display()))?;
        let comm = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // SAFETY: no preconditions.
        let uid = a.uid.unwrap_or_else(|| unsafe { libc::getuid() });
        let cgroup_ancestors = a.cgroup.as_deref().map(ancestors).unwrap_or_default();
        let tamper = if a.tampered { agent_common::tamper::LOADER_ENV } else { 0 };
        Ok(ProcIdentity { exe: Some((id.dev, id.ino)), uid, comm, cgroup_ancestors, tamper })
    } else {
        Err("give --exe or --pid".into())
    }
}

/// What the cgroup path says about the process's container and pod, if anything.
fn container_line(path: &str) -> Option<String> {
    let id = crate::container::parse(path);
    if id.is_empty() {
        return None;
    }
    let mut parts = vec![format!("cgroup {path}")];
    if let Some(c) = &id.container {
        let runtime = id.runtime.map_or("unknown", crate::container::Runtime::as_str);
        parts.push(format!("container {c} ({runtime})"));
    }
    if let Some(p) = &id.pod_uid {
        let qos = id.qos.map_or("", crate::container::Qos::as_str);
        parts.push(format!("pod_uid {p} (qos {qos})"));
    }
    Some(format!("process: {}", parts.join(", ")))
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
