//! `egress-agent check`: validates policy files and summarizes what they compile to.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    baseline::{
        anomalies::AnomalyKind,
        settings::{BaselineSettings, Thresholds},
    },
    policy::{self, compile::CompiledPolicy, Merged},
    EXIT_USAGE,
};

/// `config`: an agent configuration file to validate too; with no `paths`, its policy (or the
/// embedded default) is checked. `max_bytes`: the largest policy file read (else the
/// configuration's, else the default).
pub fn check(paths: &[PathBuf], config: Option<&std::path::Path>, max_bytes: Option<u64>) -> ExitCode {
    let mut paths = paths.to_vec();
    let mut max_from_config = None;
    if let Some(c) = config {
        match crate::config::AgentConfig::load(c) {
            Ok(cfg) => {
                println!("config {}: ok", c.display());
                if paths.is_empty() {
                    paths = cfg.policy;
                }
                max_from_config = cfg.policy_file_max_bytes;
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let paths = &paths[..];
    policy::files::set_max_bytes(max_bytes.or(max_from_config).unwrap_or(policy::files::DEFAULT_MAX_BYTES));
    match crate::central::location(paths) {
        Ok(None) => {}
        Ok(Some(l)) => {
            println!("policy: the bundle at {l}, fetched by the agent: check a bundle file with `egress-agent policy verify`");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
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
    if !c.tables.nat64.is_empty() {
        let listed: Vec<String> = c.tables.nat64.iter().map(|(n, _)| n.to_string()).collect();
        let _ = writeln!(
            s,
            "  nat64: addresses under 64:ff9b::/96 (always) and {} decided as the IPv4 address they embed",
            listed.join(", ")
        );
    }
    let baselines = BaselineSettings::from_merged(m);
    let off = baselines.utc_offset;
    let _ = writeln!(
        s,
        "  baseline: {}; hours of day at UTC{}{:02}:{:02}",
        thresholds(&baselines.global),
        if off.is_negative() { '-' } else { '+' },
        off.whole_hours().unsigned_abs(),
        off.minutes_past_hour().unsigned_abs()
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
        if baselines.vendors.contains_key(&v.name.0) {
            let _ = writeln!(s, "    baseline: {}", thresholds(baselines.thresholds(Some(&v.name.0))));
        }
        let responses: Vec<String> = AnomalyKind::ALL
            .iter()
            .filter_map(|k| baselines.response(&v.name.0, *k).map(|d| format!("{k} (block {})", secs(d))))
            .collect();
        if !responses.is_empty() {
            let _ = writeln!(s, "    response: {}", responses.join(", "));
        }
        if let Some(exes) = c.vendor_exes.get(&v.name.0).filter(|e| !e.is_empty()) {
            let _ = writeln!(s, "    executables now: {}", exes.join(", "));
        }
    }
    s
}

/// One line of baseline thresholds.
fn thresholds(t: &Thresholds) -> String {
    let kinds: Vec<&str> = AnomalyKind::ALL.iter().filter(|k| t.enabled(**k)).map(|k| k.as_str()).collect();
    format!(
        "interval {}, warm-up {}, cooldown {}; rate spike at max({}, mean x {}, mean + {} sd) connections, volume spike at max({}, mean x {}, mean + {} sd) bytes out; flags {}",
        secs(t.interval),
        secs(t.warmup),
        secs(t.cooldown),
        t.min_connections,
        t.rate_factor,
        t.sigmas,
        bytes(t.min_bytes),
        t.volume_factor,
        t.sigmas,
        kinds.join(", ")
    )
}

fn bytes(n: u64) -> String {
    match n {
        n if n > 0 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n > 0 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n > 0 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

fn secs(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
