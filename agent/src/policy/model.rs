//! The policy file format (`apiVersion: egress-agent/v1`, `kind: EgressPolicy`).
//!
//! Every value is checked while it is deserialized, so that a bad value is reported with the line
//! and column the YAML parser is at and the field path serde is at (see [`super::parse`]).

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

pub use crate::dns::name::DomainPattern;
use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDoc {
    #[expect(dead_code, reason = "checked while parsing; read once a second version exists")]
    pub api_version: ApiVersion,
    #[expect(dead_code, reason = "checked while parsing; read once a second kind exists")]
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ApiVersion {
    #[serde(rename = "egress-agent/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Kind {
    EgressPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Name,
}

/// When several documents are merged, at most one value of `mode` and of `default` may be given
/// (or all the same); unset, they are `monitor` and `deny`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub default: Option<DefaultAction>,
    /// Infrastructure egress allowed to every process (resolvers, mirrors, ...).
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    #[serde(default)]
    pub vendors: Vec<Vendor>,
    /// How DNS answers allow domain destinations.
    #[serde(default)]
    pub dns: Option<DnsSpec>,
}

/// `spec.dns`: how answers teach addresses, and what a lookup of an unlisted name gets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// An address stays allowed for its TTL plus this after the last answer that named it.
    #[serde(default)]
    pub grace: Option<Grace>,
    /// A lookup of a name no rule covers.
    #[serde(default)]
    pub unlisted: Option<DefaultAction>,
    /// Trust answers only from these addresses (default: from wherever the query went).
    #[serde(default)]
    pub resolvers: Vec<ResolverAddr>,
}

/// A duration in seconds: `30s`, `2m`, `1h` or a number of seconds, at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace(pub u32);

impl Grace {
    pub const DEFAULT: Grace = Grace(30);
}

impl FromStr for Grace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => (&t[..i], &t[i..]),
            None => (t, "s"),
        };
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(format!("grace `{s}`: expected seconds (`30s`), minutes (`2m`) or hours (`1h`)")),
        };
        let n: u64 = num.parse().map_err(|_| format!("grace `{s}`: expected a number then s, m or h"))?;
        let secs = n.saturating_mul(mult);
        if secs > u64::from(agent_common::MAX_TTL_S) {
            return Err(format!("grace `{s}` is over a day: an address would outlive any answer by too much"));
        }
        Ok(Grace(secs as u32))
    }
}

/// A resolver address (no prefix length: a resolver is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolverAddr(pub IpAddr);

impl FromStr for ResolverAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let a: IpAddr =
            s.trim().parse().map_err(|_| format!("resolver `{s}` is not an address (one host, no prefix length)"))?;
        // An IPv4-mapped resolver address is IPv4 on the wire.
        let a = match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        Ok(ResolverAddr(a))
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing is refused; would-be denials are reported as `alert`.
    #[default]
    Monitor,
    /// Egress no rule allows fails with EPERM.
    Enforce,
}

/// What happens to egress that no rule allows.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Deny,
    Alert,
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Optional label, used as the rule name in events (`allow/<name>`).
    #[serde(default)]
    pub name: Option<Name>,
    /// Exactly one of `cidr` and `domain`.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    #[serde(default)]
    pub domain: Option<DomainPattern>,
    #[serde(default)]
    pub ports: Vec<PortRange>,
    #[serde(default)]
    pub protocols: Vec<Protocol>,
}

/// An approved third-party API: who owns the relationship, what it receives, where it lives and
/// which of our processes may call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vendor {
    pub name: Name,
    /// Team or person accountable for the relationship.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub purpose: Option<String>,
    /// Data classification tags the vendor receives (`pii`, `payment`, `health`, ...).
    #[serde(default)]
    pub data: Vec<Name>,
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub ports: Vec<PortRange>,
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    /// Who may call it; omitted or empty: any process.
    #[serde(default)]
    pub processes: Vec<ProcessSelector>,
    /// Overrides `spec.mode` for this vendor's traffic from processes it does not allow.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// End of a temporary approval: after it the vendor's rules are removed.
    #[serde(default)]
    pub expires: Option<Expiry>,
}

/// Which processes a rule is for. Every field given must match (and); several selectors in a
/// list are alternatives (or).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessSelector {
    /// Absolute path of the executable; `*`, `?` and `[...]` globs allowed. Matched by the
    /// file's identity (device and inode), so a copied or renamed binary does not match.
    #[serde(default)]
    pub exe: Option<ExePattern>,
    /// Task name (at most 15 bytes, as the kernel keeps it). Any process can set its own comm:
    /// combine with `exe`, `uid` or `cgroup` for anything that matters.
    #[serde(default)]
    pub comm: Option<Comm>,
    #[serde(default)]
    pub uid: Option<u32>,
    /// A user name, resolved to its uid when the policy is loaded.
    #[serde(default)]
    pub user: Option<String>,
    /// A cgroup path prefix under the cgroup2 mount (`/system.slice/billing.service`, a
    /// container's or pod's cgroup): the process's cgroup is it or below it.
    #[serde(default)]
    pub cgroup: Option<CgroupPrefix>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExePattern(pub String);

impl FromStr for ExePattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("exe `{s}` is not an absolute path: it could never match an executable"));
        }
        // Resolution runs every few seconds: a recursive glob would walk whole trees each time.
        if s.contains("**") || s.starts_with("/proc/") || s.starts_with("/sys/") {
            return Err(format!("exe `{s}`: `**` and paths under /proc or /sys are not allowed; name the directory"));
        }
        glob::Pattern::new(s).map_err(|e| format!("exe `{s}` is not a valid glob: {e}"))?;
        Ok(ExePattern(s.to_owned()))
    }
}

/// The kernel keeps 15 bytes of a task's name: a longer selector could never match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Comm(pub String);

impl FromStr for Comm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!("comm `{s}` has {} bytes; a task name has 1 to 15, so it could never match", s.len()));
        }
        Ok(Comm(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPrefix(pub String);

impl FromStr for CgroupPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') || s.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!(
                "cgroup `{s}` must be an absolute path under the cgroup2 mount, such as /system.slice/app.service"
            ));
        }
        Ok(CgroupPrefix(s.trim_end_matches('/').to_owned()))
    }
}

/// End of an approval: a date (valid through that day, UTC) or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry(pub time::OffsetDateTime);

impl FromStr for Expiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use time::format_description::well_known::Rfc3339;
        if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Expiry(t));
        }
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let d = time::Date::parse(s, &fmt)
            .map_err(|_| format!("expires `{s}`: expected a date (2026-12-31) or an RFC 3339 time"))?;
        let end = d.next_day().map_or(time::PrimitiveDateTime::MAX.assume_utc(), |n| n.midnight().assume_utc());
        Ok(Expiry(end))
    }
}

/// Where a vendor lives: exactly one of a network (`cidr`) or a name (`domain`, an exact name or
/// `*.suffix`), whose addresses are learnt from DNS answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub cidr: Option<Cidr>,
    #[serde(default)]
    pub domain: Option<DomainPattern>,
}

/// Where a rule's destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Cidr(IpNet),
    Domain(DomainPattern),
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Dest::Cidr(n) => write!(f, "{n}"),
            Dest::Domain(d) => write!(f, "{d}"),
        }
    }
}

impl Destination {
    /// The destination, or why it is not one.
    pub fn dest(&self) -> Result<Dest, &'static str> {
        dest_of(self.cidr, self.domain.as_ref())
    }
}

impl AllowRule {
    pub fn dest(&self) -> Result<Dest, &'static str> {
        dest_of(self.cidr, self.domain.as_ref())
    }
}

fn dest_of(cidr: Option<Cidr>, domain: Option<&DomainPattern>) -> Result<Dest, &'static str> {
    match (cidr, domain) {
        (Some(c), None) => Ok(Dest::Cidr(c.0)),
        (None, Some(d)) => Ok(Dest::Domain(d.clone())),
        (Some(_), Some(_)) => Err("give `cidr` or `domain`, not both: write two destinations"),
        (None, None) => Err("a destination needs `cidr` (10.0.0.0/8) or `domain` (api.example.com, *.example.com)"),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A name: 1 to 63 characters of `[a-z0-9._-]`, starting with a letter or digit, so that it is
/// safe in metric labels, file names and log fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(pub String);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        let starts_ok = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty() || s.len() > 63 || !starts_ok || !s.chars().all(ok_char) {
            return Err(format!(
                "invalid name `{s}`: use 1-63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
            ));
        }
        Ok(Name(s.to_owned()))
    }
}

/// A network in canonical form: a bare address is a host route (/32 or /128); host bits set
/// under the mask are refused, since `10.0.0.1/8` is almost always a typo for something narrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let net: IpNet = match s.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                s.parse().map_err(|_| format!("invalid CIDR `{s}`: expected an address or address/prefix-length"))?
            }
        };
        // IPv4-mapped destinations are matched as IPv4: a mapped rule would never match.
        if let IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                return Err(format!(
                    "CIDR `{s}` is IPv4-mapped, and such destinations are matched as IPv4: write `{v4}/{}`",
                    v6.prefix_len() - 96
                ));
            }
        }
        if net.trunc() != net {
            return Err(format!(
                "CIDR `{s}` has host bits set under its /{} mask; did you mean `{}`?",
                net.prefix_len(),
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

/// An inclusive port range. In YAML: `443` or `"8000-8100"`. Port 0 is not a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { lo: 1, hi: u16::MAX };
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("invalid port `{}`: expected 1-65535", s.trim())),
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
            None => {
                let p = parse_port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("invalid port range `{s}`: {lo} is above {hi}"));
        }
        Ok(PortRange { lo, hi })
    }
}

/// Deserializes a `FromStr` type from a YAML string (or, for ports, an integer), so that its
/// error carries the parser's location.
macro_rules! deserialize_from_str {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$ty, E> {
                        n.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

deserialize_from_str!(Name, "a name");
deserialize_from_str!(Cidr, "a CIDR such as 10.0.0.0/8 or an address");
deserialize_from_str!(PortRange, "a port (443) or a port range (\"8000-8100\")");
deserialize_from_str!(ExePattern, "an absolute executable path (globs allowed)");
deserialize_from_str!(Comm, "a task name");
deserialize_from_str!(CgroupPrefix, "a cgroup path");
deserialize_from_str!(Expiry, "a date or an RFC 3339 time");
deserialize_from_str!(DomainPattern, "a domain name (api.example.com) or wildcard (*.example.com)");
deserialize_from_str!(Grace, "a duration such as 30s, 2m or 1h");
deserialize_from_str!(ResolverAddr, "a resolver address");
