//! `egress-agent check`: validates policy files and summarizes what they compile to.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    policy::{self, compile::CompiledPolicy, Merged},
    EXIT_USAGE,
};

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
    let dns = &c.tables.dns;
    let resolvers: Vec<String> = dns.resolvers.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "  dns: addresses from answers allowed for TTL + {} s; unlisted lookups {}; answers trusted from {}",
        dns.grace_s,
        format!("{:?}", dns.unlisted).to_lowercase(),
        if resolvers.is_empty() { "wherever the query went".to_owned() } else { resolvers.join(", ") }
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
        let dests: Vec<String> =
            v.destinations.iter().map(|d| d.dest().map_or_else(|e| e.to_owned(), |d| d.to_string())).collect();
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
