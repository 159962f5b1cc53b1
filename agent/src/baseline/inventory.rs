//! The third parties this host talks to: for each party (a policy vendor, else a registrable
//! domain, else an address) the names and addresses reached, and per process and user when,
//! how often, how much and on which ports. Persisted in the state directory so that `inventory`
//! and `learn` can read what a long monitor-mode run saw.
//!
//! Every collection is bounded when an entry is added, not trimmed later: the agent records on
//! its event path and a host that contacts millions of addresses must not grow it without end.
//! What does not fit is counted, and the counts are shown with the inventory.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{dns::registrable::registrable, statefile};

/// Parties kept; contacts with further parties are counted in [`Inventory::dropped_contacts`].
pub const MAX_PARTIES: usize = 4096;
/// Names, and addresses reached without a name, kept per party.
pub const MAX_NAMES: usize = 256;
pub const MAX_ADDRS: usize = 256;
/// (process, uid) pairs kept per party.
pub const MAX_PROCESSES: usize = 64;
/// Ports kept per name, address or process.
pub const MAX_PORTS: usize = 32;
/// Protocols kept per entry: there are three the kernel reports; the bound is for files edited
/// by hand.
const MAX_PROTOCOLS: usize = 4;

/// The file in the state directory, and its envelope kind and version (see [`statefile`]).
pub const FILE: &str = "inventory.json";
const KIND: &str = "inventory";
const VERSION: u32 = 1;

/// One connection (or its byte counts), as the run loop knows it after enrichment.
#[derive(Debug, Clone, Copy)]
pub struct Contact<'a> {
    /// Executable path, or `comm:NAME` when the executable is unknown.
    pub process: &'a str,
    pub uid: u32,
    /// The policy vendor whose rule matched, if any.
    pub vendor: Option<&'a str>,
    /// The name the process resolved to this address, if known.
    pub domain: Option<&'a str>,
    pub dst: IpAddr,
    pub dport: u16,
    /// `tcp`, `udp` or `icmp`.
    pub proto: &'a str,
}

/// How a party is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartyKind {
    /// A vendor of the policy the agent ran (its rule matched).
    Vendor,
    /// The registrable domain of the names the process resolved.
    Domain,
    /// An address reached without a name and outside every vendor.
    Address,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Keyed by [`party_key`].
    #[serde(default)]
    pub parties: BTreeMap<String, Party>,
    /// Contacts not recorded because [`MAX_PARTIES`] parties were known already.
    #[serde(default)]
    pub dropped_contacts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub kind: PartyKind,
    /// Vendor name, registrable domain or address.
    pub id: String,
    #[serde(default)]
    pub names: BTreeMap<String, Usage>,
    /// Addresses reached without a name.
    #[serde(default)]
    pub addrs: BTreeMap<IpAddr, Usage>,
    #[serde(default)]
    pub processes: Vec<ProcessUsage>,
    #[serde(default)]
    pub dropped: Dropped,
}

/// What did not fit in a party (see the bounds above).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Names not listed (their traffic still counts for the process).
    pub names: u64,
    pub addrs: u64,
    /// Contacts from processes beyond [`MAX_PROCESSES`].
    pub processes: u64,
    /// Ports not listed, over every entry of the party.
    pub ports: u64,
}

impl Dropped {
    pub fn any(&self) -> bool {
        *self != Dropped::default()
    }
}

/// When and how much: times are Unix seconds (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub first_seen: i64,
    pub last_seen: i64,
    pub connections: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Sorted.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Sorted.
    #[serde(default)]
    pub protocols: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Executable path, or `comm:NAME`.
    pub process: String,
    pub uid: u32,
    pub usage: Usage,
}

/// The key a contact is filed under: its vendor, else the registrable domain of its name, else
/// its address (IPv4-mapped addresses as IPv4, as the policy matches them).
pub fn party_key(c: &Contact) -> (PartyKind, String) {
    if let Some(v) = c.vendor {
        return (PartyKind::Vendor, v.to_owned());
    }
    if let Some(d) = c.domain {
        return (PartyKind::Domain, registrable(d));
    }
    (PartyKind::Address, unmapped(c.dst).to_string())
}

fn map_key(kind: PartyKind, id: &str) -> String {
    let k = match kind {
        PartyKind::Vendor => "vendor",
        PartyKind::Domain => "domain",
        PartyKind::Address => "address",
    };
    format!("{k}/{id}")
}

fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

impl Usage {
    fn new(t: i64) -> Self {
        Usage { first_seen: t, last_seen: t, ..Default::default() }
    }

    /// Adds one observation; returns the number of ports that did not fit (0 or 1).
    fn add(&mut self, t: i64, connections: u64, out: u64, inb: u64, port: u16, proto: &str) -> u64 {
        self.first_seen = self.first_seen.min(t);
        self.last_seen = self.last_seen.max(t);
        self.connections = self.connections.saturating_add(connections);
        self.bytes_out = self.bytes_out.saturating_add(out);
        self.bytes_in = self.bytes_in.saturating_add(inb);
        if let Err(i) = self.protocols.binary_search_by(|p| p.as_str().cmp(proto)) {
            if self.protocols.len() < MAX_PROTOCOLS {
                self.protocols.insert(i, proto.to_owned());
            }
        }
        // Port 0 is what ICMP reports: no port.
        if port == 0 {
            return 0;
        }
        match self.ports.binary_search(&port) {
            Ok(_) => 0,
            Err(_) if self.ports.len() >= MAX_PORTS => 1,
            Err(i) => {
                self.ports.insert(i, port);
                0
            }
        }
    }

    /// Folds `o` in; returns the ports that did not fit.
    pub(crate) fn merge(&mut self, o: &Usage) -> u64 {
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
        self.connections = self.connections.saturating_add(o.connections);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        for p in &o.protocols {
            if let Err(i) = self.protocols.binary_search(p) {
                if self.protocols.len() < MAX_PROTOCOLS {
                    self.protocols.insert(i, p.clone());
                }
            }
        }
        let mut dropped = 0;
        for p in &o.ports {
            if let Err(i) = self.ports.binary_search(p) {
                if self.ports.len() < MAX_PORTS {
                    self.ports.insert(i, *p);
                } else {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    pub fn first(&self) -> OffsetDateTime {
        from_unix(self.first_seen)
    }

    pub fn last(&self) -> OffsetDateTime {
        from_unix(self.last_seen)
    }
}

fn from_unix(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Party {
    fn new(kind: PartyKind, id: String) -> Self {
        Party {
            kind,
            id,
            names: BTreeMap::new(),
            addrs: BTreeMap::new(),
            processes: Vec::new(),
            dropped: Dropped::default(),
        }
    }

    fn record(&mut self, t: i64, c: &Contact, connections: u64, out: u64, inb: u64) {
        let dest = match c.domain {
            Some(d) => bounded_entry(&mut self.names, d.trim_end_matches('.').to_ascii_lowercase(), MAX_NAMES, t),
            None => bounded_entry(&mut self.addrs, unmapped(c.dst), MAX_ADDRS, t),
        };
        match dest {
            Some(u) => self.dropped.ports += u.add(t, connections, out, inb, c.dport, c.proto),
            None if c.domain.is_some() => self.dropped.names += 1,
            None => self.dropped.addrs += 1,
        }
        let i = match self.processes.iter().position(|p| p.process == c.process && p.uid == c.uid) {
            Some(i) => i,
            None if self.processes.len() >= MAX_PROCESSES => {
                self.dropped.processes += 1;
                return;
            }
            None => {
                self.processes.push(ProcessUsage { process: c.process.to_owned(), uid: c.uid, usage: Usage::new(t) });
                self.processes.len() - 1
            }
        };
        if let Some(p) = self.processes.get_mut(i) {
            self.dropped.ports += p.usage.add(t, connections, out, inb, c.dport, c.proto);
        }
    }

    fn merge(&mut self, o: &Party) {
        for (n, u) in &o.names {
            match bounded_entry(&mut self.names, n.clone(), MAX_NAMES, u.first_seen) {
                Some(mine) => self.dropped.ports += mine.merge(u),
                None => self.dropped.names += 1,
            }
        }
        for (a, u) in &o.addrs {
            match bounded_entry(&mut self.addrs, *a, MAX_ADDRS, u.first_seen) {
                Some(mine) => self.dropped.ports += mine.merge(u),
                None => self.dropped.addrs += 1,
            }
        }
        for p in &o.processes {
            if let Some(mine) = self.processes.iter_mut().find(|m| m.process == p.process && m.uid == p.uid) {
                self.dropped.ports += mine.usage.merge(&p.usage);
            } else if self.processes.len() < MAX_PROCESSES {
                self.processes.push(p.clone());
            } else {
                self.dropped.processes += p.usage.connections.max(1);
            }
        }
        let d = &o.dropped;
        self.dropped.names += d.names;
        self.dropped.addrs += d.addrs;
        self.dropped.processes += d.processes;
        self.dropped.ports += d.ports;
    }
}

/// The entry for `key`, created (first seen at `t`) if the map has room.
fn bounded_entry<K: Ord>(map: &mut BTreeMap<K, Usage>, key: K, max: usize, t: i64) -> Option<&mut Usage> {
    if map.len() >= max && !map.contains_key(&key) {
        return None;
    }
    Some(map.entry(key).or_insert_with(|| Usage::new(t)))
}

impl Inventory {
    /// A connection attempt.
    /// The fill of the party table, and of the names and addresses of all parties.
    pub fn fill(&self) -> [crate::memory::CacheFill; 2] {
        use crate::memory::CacheFill;
        let kept: usize = self.parties.values().map(|p| p.names.len() + p.addrs.len()).sum();
        [
            CacheFill::new("inventory_parties", self.parties.len(), MAX_PARTIES),
            CacheFill::new("inventory_names_addresses", kept, MAX_PARTIES * (MAX_NAMES + MAX_ADDRS)),
        ]
    }

    pub fn record_connect(&mut self, now: OffsetDateTime, c: &Contact) {
        self.record(now, c, 1, 0, 0);
    }

    /// Bytes a connection moved (reported when it closes, or periodically).
    pub fn record_bytes(&mut self, now: OffsetDateTime, c: &Contact, bytes_out: u64, bytes_in: u64) {
        self.record(now, c, 0, bytes_out, bytes_in);
    }

    fn record(&mut self, now: OffsetDateTime, c: &Contact, connections: u64, out: u64, inb: u64) {
        let (kind, id) = party_key(c);
        let key = map_key(kind, &id);
        if !self.parties.contains_key(&key) && self.parties.len() >= MAX_PARTIES {
            self.dropped_contacts += 1;
            return;
        }
        let party = self.parties.entry(key).or_insert_with(|| Party::new(kind, id));
        party.record(now.unix_timestamp(), c, connections, out, inb);
    }

    /// Folds another inventory in (an older file into the one being built, say), within the
    /// same bounds.
    pub fn merge_from(&mut self, other: &Inventory) {
        self.dropped_contacts += other.dropped_contacts;
        for (key, p) in &other.parties {
            if let Some(mine) = self.parties.get_mut(key) {
                mine.merge(p);
            } else if self.parties.len() < MAX_PARTIES {
                self.parties.insert(key.clone(), p.clone());
            } else {
                self.dropped_contacts += p.processes.iter().map(|u| u.usage.connections).sum::<u64>().max(1);
            }
        }
    }

    /// Everything that did not fit, over the whole inventory.
    pub fn dropped(&self) -> (u64, Dropped) {
        let mut d = Dropped::default();
        for p in self.parties.values() {
            d.names += p.dropped.names;
            d.addrs += p.dropped.addrs;
            d.processes += p.dropped.processes;
            d.ports += p.dropped.ports;
        }
        (self.dropped_contacts, d)
    }

    /// One line saying what did not fit, or `None` when everything did.
    pub fn overflow_note(&self) -> Option<String> {
        let (contacts, d) = self.dropped();
        if contacts == 0 && !d.any() {
            return None;
        }
        Some(format!(
            "inventory full in places: {contacts} contacts with parties beyond {MAX_PARTIES}, {} names beyond {MAX_NAMES} per party, {} addresses beyond {MAX_ADDRS} per party, {} contacts from processes beyond {MAX_PROCESSES} per party, {} ports beyond {MAX_PORTS} per entry were not listed",
            d.names, d.addrs, d.processes, d.ports
        ))
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Writes `dir/inventory.json` atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        statefile::save(&Self::path(dir), KIND, VERSION, self)
    }

    /// Reads `dir/inventory.json`. Never fails: a missing file is an empty inventory, and an
    /// unusable one is set aside (or, if it cannot be moved, left in place) with a warning saying
    /// so, because the inventory is advisory and must not keep the agent from starting.
    pub fn load(dir: &Path) -> (Self, Option<String>) {
        let path = Self::path(dir);
        match statefile::load::<Inventory>(&path, KIND, VERSION) {
            Ok(statefile::Loaded::Absent) => (Inventory::default(), None),
            Ok(statefile::Loaded::Read(inv)) => {
                // A file edited by hand may exceed the bounds: rebuilding through merge_from
                // applies them.
                let mut bounded = Inventory::default();
                bounded.merge_from(&inv);
                (bounded, None)
            }
            Ok(statefile::Loaded::SetAside { reason, moved_to }) => (
                Inventory::default(),
                Some(format!(
                    "{}: {reason}; moved to {} and a new inventory started",
                    path.display(),
                    moved_to.display()
                )),
            ),
            Err(e) => (
                Inventory::default(),
                Some(format!(
                    "{}: cannot read or move it ({e}); a new inventory is started and will replace it when saved",
                    path.display()
                )),
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    pub const T0: OffsetDateTime = time::macros::datetime!(2026-11-01 09:00 UTC);

    pub fn contact<'a>(
        process: &'a str,
        domain: Option<&'a str>,
        dst: &str,
        dport: u16,
        proto: &'a str,
    ) -> Contact<'a> {
        Contact { process, uid: 1000, vendor: None, domain, dst: dst.parse().unwrap(), dport, proto }
    }

    /// The inventory the learn and inventory tests share: two Stripe names from one executable,
    /// an address reached without a name, a resolver, and a process known only by its comm.
    pub fn sample() -> Inventory {
        let mut inv = Inventory::default();
        let api = contact("/opt/billing/bin/api", Some("api.stripe.com"), "54.187.174.169", 443, "tcp");
        let files = contact("/opt/billing/bin/api", Some("files.stripe.com"), "54.187.216.72", 443, "tcp");
        let bare = contact("/opt/billing/bin/api", None, "203.0.113.7", 8443, "tcp");
        let dns = contact("/usr/lib/systemd/systemd-resolved", None, "10.0.0.2", 53, "udp");
        let comm = contact("comm:backup", Some("s3.amazonaws.com"), "52.216.1.1", 443, "tcp");
        for (i, c) in [api, files, bare, dns, comm].iter().enumerate() {
            let t = T0 + time::Duration::hours(i as i64);
            inv.record_connect(t, c);
            inv.record_connect(t + time::Duration::days(1), c);
            inv.record_bytes(t + time::Duration::days(1), c, 1000 * (i as u64 + 1), 5000);
        }
        inv
    }

    #[test]
    fn parties_by_vendor_domain_or_address() {
        let mut inv = sample();
        let stripe = &inv.parties["domain/stripe.com"];
        assert_eq!(stripe.names.keys().collect::<Vec<_>>(), ["api.stripe.com", "files.stripe.com"]);
        assert_eq!(stripe.processes.len(), 1);
        let p = &stripe.processes[0].usage;
        assert_eq!((p.connections, p.bytes_out, p.bytes_in, p.ports.as_slice()), (4, 3000, 10000, &[443][..]));
        assert_eq!(p.first(), T0);
        assert_eq!(p.last(), T0 + time::Duration::days(1) + time::Duration::hours(1));
        assert!(inv.parties["address/203.0.113.7"].addrs.contains_key(&"203.0.113.7".parse().unwrap()));
        // A vendor match files under the vendor; a mapped address as IPv4.
        let mut c = contact("/usr/bin/curl", None, "::ffff:1.2.3.4", 443, "tcp");
        inv.record_connect(T0, &c);
        assert!(inv.parties.contains_key("address/1.2.3.4"));
        c.vendor = Some("stripe");
        inv.record_connect(T0, &c);
        let v = &inv.parties["vendor/stripe"];
        assert_eq!((v.kind, v.addrs.len()), (PartyKind::Vendor, 1));
        assert_eq!(inv.overflow_note(), None);
    }

    #[test]
    fn bounded_and_overflow_counted() {
        let mut inv = Inventory::default();
        for i in 0..(MAX_PARTIES as u32 + 10) {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)).to_string();
            inv.record_connect(T0, &contact("/bin/x", None, &a, 443, "tcp"));
        }
        assert_eq!(inv.parties.len(), MAX_PARTIES);
        assert_eq!(inv.dropped_contacts, 10);
        let mut inv = Inventory::default();
        let names: Vec<String> = (0..300).map(|i| format!("h{i}.example.com")).collect();
        let exes: Vec<String> = (0..70).map(|i| format!("/bin/p{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            let c = contact(&exes[i % 70], Some(n), "192.0.2.1", 1000 + i as u16, "tcp");
            inv.record_connect(T0, &c);
        }
        let p = &inv.parties["domain/example.com"];
        assert_eq!(p.names.len(), MAX_NAMES);
        assert_eq!(p.processes.len(), MAX_PROCESSES);
        assert_eq!(p.dropped.names, 300 - MAX_NAMES as u64);
        assert!(p.dropped.processes > 0);
        assert!(p.processes.iter().all(|u| u.usage.ports.len() <= MAX_PORTS));
        let note = inv.overflow_note().expect("overflow is reported");
        assert!(note.contains("44 names"), "{note}");
    }

    #[test]
    fn saves_loads_and_sets_aside() {
        let dir = std::env::temp_dir().join(format!("ea-inventory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Inventory::load(&dir), (Inventory::default(), None));
        let inv = sample();
        inv.save(&dir).unwrap();
        let (back, warning) = Inventory::load(&dir);
        assert_eq!(warning, None);
        assert_eq!(back, inv);
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        let (back, warning) = Inventory::load(&dir);
        assert_eq!(back, Inventory::default());
        assert!(warning.is_some_and(|w| w.contains("moved to")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn merge_adds_up() {
        let mut a = sample();
        a.merge_from(&sample());
        let p = &a.parties["domain/stripe.com"].processes[0].usage;
        assert_eq!(p.connections, 8);
        assert_eq!(a.parties.len(), sample().parties.len());
    }
}
