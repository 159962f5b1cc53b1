//! `egress-agent inventory`: the third parties the agent saw this host contact, by which
//! processes and how much, each with its standing in the policy (approved, unapproved, expired,
//! expiring), plus the policy's vendors nobody called lately and those nobody owns.

use std::{fmt::Write as _, net::IpAddr, path::PathBuf, process::ExitCode};

use clap::Args;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::{
    baseline::{
        inventory::{Inventory, Party, PartyKind, Usage},
        learn::rfc3339,
    },
    policy::{
        self,
        model::{Dest, PortRange, Vendor},
        Merged, Severity,
    },
    EXIT_USAGE,
};

/// An approval ending within this is reported as `expiring`.
const EXPIRING_WITHIN: Duration = Duration::days(30);

#[derive(Args)]
pub struct InventoryArgs {
    /// The agent's state directory (where it writes inventory.json).
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file or directory to judge against; repeatable. Without it, no status is given.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Vendors of the policy not contacted for this many days are listed for removal.
    #[arg(long, default_value_t = 30)]
    pub stale_days: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

pub fn inventory(a: &InventoryArgs) -> ExitCode {
    match run(a) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(a: &InventoryArgs) -> Result<String, String> {
    // Whole seconds: the report is read by people and diffed by scripts.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if !a.state.is_dir() {
        return Err(format!(
            "--state {}: not a directory (give the directory the agent's --state names)",
            a.state.display()
        ));
    }
    let path = Inventory::path(&a.state);
    if let Err(e) = std::fs::metadata(&path) {
        return Err(format!(
            "{}: {e} (the agent writes it when run with --state {})",
            path.display(),
            a.state.display()
        ));
    }
    let (inv, warning) = Inventory::load(&a.state);
    if let Some(w) = warning {
        return Err(format!("cannot use the inventory: {w}"));
    }
    let merged = if a.policy.is_empty() {
        None
    } else {
        let (m, _, warnings) =
            policy::load(&a.policy, now, &policy::resolve::HostResolver::new()).map_err(|e| e.to_string())?;
        for w in warnings.iter().filter(|w| w.severity == Severity::Warning) {
            eprintln!("{w}");
        }
        Some(m)
    };
    let r = report(&inv, merged.as_ref(), now, a.stale_days);
    Ok(match a.format {
        Format::Table => table(&r),
        Format::Json => json(&r),
        Format::Markdown => markdown(&r),
    })
}

/// A destination's standing in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A vendor of the policy allows it.
    Approved,
    /// Only the vendor that allowed it ends within [`EXPIRING_WITHIN`].
    Expiring,
    /// The vendor that covered it has ended.
    Expired,
    /// An infrastructure rule (`spec.allow`) allows it, for every process.
    Infrastructure,
    Unapproved,
    /// No policy was given.
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Expiring => "expiring",
            Status::Expired => "expired",
            Status::Infrastructure => "infrastructure",
            Status::Unapproved => "unapproved",
            Status::Unknown => "-",
        }
    }
}

/// The whole report; field names are the JSON output's, kept stable.
#[derive(Debug, Serialize)]
pub struct Report {
    pub generated_at: String,
    /// The policy's name, when one was given.
    pub policy: Option<String>,
    pub parties: Vec<PartyReport>,
    /// Vendors not contacted for `stale_days` (or never): candidates for removal.
    pub stale_vendors: Vec<StaleVendor>,
    pub stale_days: u32,
    pub vendors_without_owner: Vec<String>,
    /// What did not fit in the inventory, if anything.
    pub overflow: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartyReport {
    pub party: String,
    pub kind: PartyKind,
    pub destinations: Vec<DestReport>,
    pub processes: Vec<ProcessReport>,
}

#[derive(Debug, Serialize)]
pub struct DestReport {
    /// A name, or an address reached without one.
    pub destination: String,
    pub status: Status,
    /// The policy vendor (or `allow/NAME` rule) that covers it.
    pub vendor: Option<String>,
    /// When that vendor's approval ends.
    pub expires: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub connections: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub ports: Vec<u16>,
    pub protocols: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub process: String,
    pub uid: u32,
    pub first_seen: String,
    pub last_seen: String,
    pub connections: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

#[derive(Debug, Serialize)]
pub struct StaleVendor {
    pub vendor: String,
    /// Last contact, or `None` for never.
    pub last_seen: Option<String>,
}

/// What a destination is, for matching against the policy.
enum Target<'a> {
    Name(&'a str),
    Addr(IpAddr),
}

fn covers(dest: &Dest, t: &Target) -> bool {
    match (dest, t) {
        (Dest::Domain(p), Target::Name(n)) => p.matches(n),
        (Dest::Cidr(net), Target::Addr(a)) => net.contains(a),
        _ => false,
    }
}

fn ports_within(allowed: &[PortRange], seen: &[u16]) -> bool {
    allowed.is_empty() || seen.iter().all(|p| allowed.iter().any(|r| (r.lo..=r.hi).contains(p)))
}

fn vendor_covers(v: &Vendor, t: &Target, ports: &[u16]) -> bool {
    v.destinations.iter().filter_map(|d| d.dest().ok()).any(|d| covers(&d, t)) && ports_within(&v.ports, ports)
}

/// The standing of one destination: the vendor covering it (a live one before an ended one),
/// else the vendor the agent matched when the policy has it, else an infrastructure rule.
fn status(
    m: &Merged,
    t: &Target,
    ports: &[u16],
    recorded: Option<&str>,
    now: OffsetDateTime,
) -> (Status, Option<String>, Option<OffsetDateTime>) {
    let judge = |v: &Vendor| match v.expires {
        Some(e) if e.0 <= now => (Status::Expired, Some(v.name.0.clone()), Some(e.0)),
        Some(e) if e.0 - now <= EXPIRING_WITHIN => (Status::Expiring, Some(v.name.0.clone()), Some(e.0)),
        e => (Status::Approved, Some(v.name.0.clone()), e.map(|e| e.0)),
    };
    let covering: Vec<&Vendor> = m.vendors.iter().map(|(v, _)| v).filter(|v| vendor_covers(v, t, ports)).collect();
    let live = covering.iter().map(|v| judge(v)).find(|j| j.0 != Status::Expired);
    if let Some(j) = live.or_else(|| covering.first().map(|v| judge(v))) {
        return j;
    }
    if let Some(v) = recorded.and_then(|r| m.vendors.iter().map(|(v, _)| v).find(|v| v.name.0 == r)) {
        return judge(v);
    }
    for (i, (a, _)) in m.allow.iter().enumerate() {
        if a.dest().is_ok_and(|d| covers(&d, t)) && ports_within(&a.ports, ports) {
            let name = a.name.as_ref().map_or_else(|| i.to_string(), ToString::to_string);
            return (Status::Infrastructure, Some(format!("allow/{name}")), None);
        }
    }
    (Status::Unapproved, None, None)
}

fn dest_report(dest: String, u: &Usage, s: (Status, Option<String>, Option<OffsetDateTime>)) -> DestReport {
    DestReport {
        destination: dest,
        status: s.0,
        vendor: s.1,
        expires: s.2.map(rfc3339),
        first_seen: rfc3339(u.first()),
        last_seen: rfc3339(u.last()),
        connections: u.connections,
        bytes_out: u.bytes_out,
        bytes_in: u.bytes_in,
        ports: u.ports.clone(),
        protocols: u.protocols.clone(),
    }
}

fn party_report(p: &Party, m: Option<&Merged>, now: OffsetDateTime) -> PartyReport {
    let recorded = (p.kind == PartyKind::Vendor).then_some(p.id.as_str());
    let judge = |t: Target, u: &Usage| match m {
        Some(m) => status(m, &t, &u.ports, recorded, now),
        None => (Status::Unknown, recorded.map(str::to_owned), None),
    };
    let mut destinations: Vec<DestReport> =
        p.names.iter().map(|(n, u)| dest_report(n.clone(), u, judge(Target::Name(n), u))).collect();
    destinations.extend(p.addrs.iter().map(|(a, u)| dest_report(a.to_string(), u, judge(Target::Addr(*a), u))));
    let processes = p
        .processes
        .iter()
        .map(|pu| ProcessReport {
            process: pu.process.clone(),
            uid: pu.uid,
            first_seen: rfc3339(pu.usage.first()),
            last_seen: rfc3339(pu.usage.last()),
            connections: pu.usage.connections,
            bytes_out: pu.usage.bytes_out,
            bytes_in: pu.usage.bytes_in,
        })
        .collect();
    PartyReport { party: p.id.clone(), kind: p.kind, destinations, processes }
}

/// The report for `inv` judged against `m` at `now`.
pub fn report(inv: &Inventory, m: Option<&Merged>, now: OffsetDateTime, stale_days: u32) -> Report {
    let parties: Vec<PartyReport> = inv.parties.values().map(|p| party_report(p, m, now)).collect();
    let mut stale_vendors = Vec::new();
    let mut vendors_without_owner = Vec::new();
    if let Some(m) = m {
        let cutoff = now - Duration::days(i64::from(stale_days));
        for (v, _) in &m.vendors {
            // Last contact over every destination the vendor covers (and every party filed under it).
            let last = inv
                .parties
                .values()
                .flat_map(|p| {
                    let under = p.kind == PartyKind::Vendor && p.id == v.name.0;
                    let names =
                        p.names.iter().filter(move |(n, u)| under || vendor_covers(v, &Target::Name(n), &u.ports));
                    let addrs =
                        p.addrs.iter().filter(move |(a, u)| under || vendor_covers(v, &Target::Addr(**a), &u.ports));
                    names.map(|x| x.1).chain(addrs.map(|x| x.1))
                })
                .map(Usage::last)
                .max();
            if last.is_none_or(|l| l < cutoff) {
                stale_vendors.push(StaleVendor { vendor: v.name.0.clone(), last_seen: last.map(rfc3339) });
            }
            if v.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
                vendors_without_owner.push(v.name.0.clone());
            }
        }
    }
    Report {
        generated_at: rfc3339(now),
        policy: m.map(|m| m.name.clone()),
        parties,
        stale_vendors,
        stale_days,
        vendors_without_owner,
        overflow: inv.overflow_note(),
    }
}

/// Bytes for people: 1536 → `1.5 KiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn status_cell(d: &DestReport) -> String {
    match (d.status, &d.expires) {
        (s @ (Status::Expiring | Status::Expired), Some(e)) => format!("{} {}", s.as_str(), end_for_people(e)),
        (s, _) => s.as_str().to_owned(),
    }
}

/// An approval's end as its author wrote it: `expires: 2026-12-15` ends at midnight after that
/// day, which reads as `through 2026-12-15`; other ends as the time itself.
fn end_for_people(rfc: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339) else {
        return rfc.to_owned();
    };
    match t.date().previous_day() {
        Some(day) if t.time() == time::Time::MIDNIGHT => format!("through {day}"),
        _ => rfc.to_owned(),
    }
}

fn processes_cell(p: &PartyReport) -> String {
    p.processes.iter().map(|x| format!("{} (uid {})", x.process, x.uid)).collect::<Vec<_>>().join(", ")
}

const HEADER: [&str; 10] =
    ["PARTY", "DESTINATION", "STATUS", "VENDOR", "PROCESSES", "FIRST SEEN", "LAST SEEN", "CONN", "OUT", "IN"];

fn rows(r: &Report) -> Vec<[String; 10]> {
    let mut out = Vec::new();
    for p in &r.parties {
        let procs = processes_cell(p);
        for d in &p.destinations {
            out.push([
                p.party.clone(),
                d.destination.clone(),
                status_cell(d),
                d.vendor.clone().unwrap_or_else(|| "-".into()),
                procs.clone(),
                d.first_seen.clone(),
                d.last_seen.clone(),
                d.connections.to_string(),
                human(d.bytes_out),
                human(d.bytes_in),
            ]);
        }
    }
    out
}

/// Text safe in a terminal or a table cell: one line, no control characters (names come from
/// the host's processes).
fn cell(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn footer(r: &Report, bullet: &str, code: impl Fn(&str) -> String) -> String {
    let mut s = String::new();
    if r.policy.is_some() {
        if r.stale_vendors.is_empty() {
            let _ = writeln!(s, "\nEvery vendor was contacted in the last {} days.", r.stale_days);
        } else {
            let _ = writeln!(s, "\nVendors not contacted in the last {} days (candidates for removal):", r.stale_days);
            for v in &r.stale_vendors {
                let when = v
                    .last_seen
                    .as_deref()
                    .map_or_else(|| "never contacted".to_owned(), |l| format!("last contact {l}"));
                let _ = writeln!(s, "{bullet}{}: {when}", code(&v.vendor));
            }
        }
        if !r.vendors_without_owner.is_empty() {
            let _ = writeln!(s, "\nVendors without an owner:");
            for v in &r.vendors_without_owner {
                let _ = writeln!(s, "{bullet}{}", code(v));
            }
        }
    } else {
        let _ = writeln!(s, "\nNo --policy given: statuses are not judged.");
    }
    if let Some(o) = &r.overflow {
        let _ = writeln!(s, "\nNote: {o}");
    }
    s
}

pub fn table(r: &Report) -> String {
    let rows: Vec<[String; 10]> = rows(r).into_iter().map(|row| row.map(|c| cell(&c))).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            // Counts and sizes read best right-aligned.
            if i >= 7 {
                let _ = write!(l, "{c:>w$}  ");
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        let _ = writeln!(s, "{}", l.trim_end());
    };
    line(&mut s, &HEADER);
    for row in &rows {
        line(&mut s, &row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        let _ = writeln!(s, "(no contacts recorded yet)");
    }
    s.push_str(&footer(r, "  ", |v| v.to_owned()));
    s
}

pub fn markdown(r: &Report) -> String {
    let esc = |c: &str| cell(c).replace('|', "\\|");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Third parties contacted{} (as of {})\n",
        r.policy.as_deref().map_or_else(String::new, |p| format!(", against policy `{}`", esc(p))),
        r.generated_at
    );
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        HEADER.iter().enumerate().map(|(i, _)| if i >= 7 { "---:|" } else { "---|" }).collect::<String>()
    );
    for row in rows(r) {
        let _ = writeln!(s, "| {} |", row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
    }
    s.push_str(&footer(r, "- ", |v| format!("`{}`", esc(v))));
    s
}

pub fn json(r: &Report) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string_pretty(r).map_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()), |j| j + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::inventory::tests::{contact, sample, T0},
        policy::{merge, parse},
    };

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-20 12:00 UTC);

    fn merged(spec: &str) -> Merged {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: prod}}\nspec:\n{spec}");
        merge(&parse("p.yaml", &text).unwrap()).unwrap().0
    }

    fn policy() -> Merged {
        merged(
            "  allow:\n    - {name: dns, cidr: 10.0.0.0/8, ports: [53]}\n  vendors:\n    - {name: stripe, owner: payments, destinations: [{domain: \"*.stripe.com\"}], ports: [443], expires: 2026-12-01}\n    - {name: s3, owner: backup, destinations: [{domain: s3.amazonaws.com}], expires: 2026-11-01}\n    - {name: unused, destinations: [{domain: old.example.com}]}\n",
        )
    }

    fn find<'a>(r: &'a Report, dest: &str) -> &'a DestReport {
        r.parties.iter().flat_map(|p| &p.destinations).find(|d| d.destination == dest).unwrap()
    }

    #[test]
    fn statuses() {
        let r = report(&sample(), Some(&policy()), NOW, 30);
        let api = find(&r, "api.stripe.com");
        assert_eq!((api.status, api.vendor.as_deref()), (Status::Expiring, Some("stripe")));
        assert_eq!(api.expires.as_deref(), Some("2026-12-02T00:00:00Z"));
        assert_eq!(find(&r, "s3.amazonaws.com").status, Status::Expired);
        assert_eq!(find(&r, "203.0.113.7").status, Status::Unapproved);
        let dns = find(&r, "10.0.0.2");
        assert_eq!((dns.status, dns.vendor.as_deref()), (Status::Infrastructure, Some("allow/dns")));
        // Far from its end the same vendor approves; a port it does not list is not approved.
        let r = report(&sample(), Some(&policy()), T0 - Duration::days(60), 30);
        assert_eq!(find(&r, "files.stripe.com").status, Status::Approved);
        let m = merged("  vendors:\n    - {name: stripe, destinations: [{domain: \"*.stripe.com\"}], ports: [8443]}\n");
        assert_eq!(find(&report(&sample(), Some(&m), NOW, 30), "api.stripe.com").status, Status::Unapproved);
        // A party the agent filed under a vendor is judged by that vendor.
        let mut inv = Inventory::default();
        let mut c = contact("/bin/x", None, "198.51.100.1", 443, "tcp");
        c.vendor = Some("stripe");
        inv.record_connect(NOW, &c);
        assert_eq!(find(&report(&inv, Some(&policy()), NOW, 30), "198.51.100.1").status, Status::Expiring);
        assert_eq!(find(&report(&inv, None, NOW, 30), "198.51.100.1").status, Status::Unknown);
    }

    #[test]
    fn stale_and_ownerless_vendors() {
        let r = report(&sample(), Some(&policy()), NOW, 30);
        let stale: Vec<(&str, Option<&str>)> =
            r.stale_vendors.iter().map(|s| (s.vendor.as_str(), s.last_seen.as_deref())).collect();
        assert_eq!(stale, [("unused", None)]);
        assert_eq!(r.vendors_without_owner, ["unused"]);
        let r = report(&sample(), Some(&policy()), NOW, 10);
        assert_eq!(r.stale_vendors.len(), 3, "{:?}", r.stale_vendors);
    }

    #[test]
    fn formats() {
        let r = report(&sample(), Some(&policy()), NOW, 30);
        let t = table(&r);
        assert!(t.starts_with("PARTY"), "{t}");
        let line = t.lines().find(|l| l.contains("api.stripe.com")).unwrap();
        for want in
            ["stripe.com", "expiring through 2026-12-01", "/opt/billing/bin/api (uid 1000)", "2026-11-01T09:00:00Z"]
        {
            assert!(line.contains(want), "{want}: {line}");
        }
        assert!(t.contains("  unused: never contacted") && t.contains("Vendors without an owner"), "{t}");
        let md = markdown(&r);
        assert!(md.contains("| PARTY | DESTINATION |") && md.contains("|---|---|"), "{md}");
        assert!(md.lines().any(|l| l.starts_with("| stripe.com | api.stripe.com | expiring")), "{md}");
        assert!(md.contains("- `unused`: never contacted"), "{md}");
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["policy"], "prod");
        let d =
            &v["parties"].as_array().unwrap().iter().find(|p| p["party"] == "stripe.com").unwrap()["destinations"][0];
        assert_eq!((d["destination"].as_str(), d["status"].as_str()), (Some("api.stripe.com"), Some("expiring")));
        assert_eq!(v["stale_vendors"][0]["vendor"], "unused");
        assert!(v["stale_vendors"][0]["last_seen"].is_null());
        // Text from processes cannot break a row.
        let mut inv = Inventory::default();
        inv.record_connect(NOW, &contact("/tmp/a|b\nc", None, "192.0.2.1", 443, "tcp"));
        let md = markdown(&report(&inv, None, NOW, 30));
        assert!(md.contains("/tmp/a\\|b?c"), "{md}");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
