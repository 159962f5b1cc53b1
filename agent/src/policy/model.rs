//! The policy file format (`apiVersion: egress-agent/v1`, `kind: EgressPolicy`).
//!
//! Every value is checked while it is deserialized, so that a bad value is reported with the line
//! and column the YAML parser is at and the field path serde is at (see [`super::parse`]).

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::{IpNet, Ipv6Net};

use super::from_str_de::deserialize_from_str;
pub use super::process_model::{Comm, ExePattern, ProcessSelector};

pub use super::baseline_spec::{
    BaselineSpec, ByteSize, Cooldown, Factor, Interval, MinConnections, Offset, ResponseAction, ResponseFor,
    ResponseSpec, Sigmas, Warmup,
};
pub use crate::dns::name::DomainPattern;
use serde::Deserialize;

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
    /// What counts as a departure from each integration's learned rhythm and volume.
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    /// The /96 prefixes of this network's NAT64 gateways (RFC 6052) besides the well-known
    /// `64:ff9b::/96`: an address under one is decided as the IPv4 address in its last 32 bits.
    #[serde(default, rename = "nat64Prefixes")]
    pub nat64_prefixes: Vec<Nat64Prefix>,
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
    /// Overrides of `spec.baseline` for this vendor's traffic.
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    /// Opt-in automated response to this vendor's anomalies.
    #[serde(default)]
    pub response: Option<ResponseSpec>,
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
    /// ICMP and ICMPv6 echo requests from ping sockets; ports do not apply.
    Icmp,
}

impl Protocol {
    /// As the policy writes it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
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

/// A NAT64 prefix (RFC 6052) the policy lists: IPv6, exactly /96, no host bits, and neither the
/// IPv4-mapped nor the IPv4-compatible prefix (the kernel sends those as IPv4, or not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nat64Prefix(pub Ipv6Net);

impl FromStr for Nat64Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let net: Ipv6Net = match s.parse::<IpNet>() {
            Ok(IpNet::V6(n)) => n,
            Ok(IpNet::V4(_)) => {
                return Err(format!("NAT64 prefix `{s}` is IPv4: write the IPv6 /96 the gateway translates"))
            }
            Err(_) => return Err(format!("invalid NAT64 prefix `{s}`: expected an IPv6 /96 such as 64:ff9b:1::/96")),
        };
        // RFC 6052's /32 to /64 prefixes split the IPv4 address around the reserved octet at
        // bits 64-71; the kernel reads it from the last 32 bits only.
        if net.prefix_len() != 96 {
            return Err(format!(
                "NAT64 prefix `{s}` is /{}: only /96 prefixes are supported (the IPv4 address in the last 32 bits); write the /96 your DNS64 synthesizes",
                net.prefix_len()
            ));
        }
        if net.trunc() != net {
            return Err(format!(
                "NAT64 prefix `{s}` has host bits set under its /96 mask; did you mean `{}`?",
                net.trunc()
            ));
        }
        let top = net.network().segments();
        if top[..6] == [0, 0, 0, 0, 0, 0xffff] {
            return Err(format!("NAT64 prefix `{s}` is the IPv4-mapped prefix: those addresses are IPv4 already"));
        }
        if top[..6] == [0; 6] {
            return Err(format!(
                "NAT64 prefix `{s}` is the IPv4-compatible prefix (deprecated, RFC 4291), which no NAT64 gateway uses"
            ));
        }
        Ok(Nat64Prefix(net))
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

deserialize_from_str!(Name, "a name");
deserialize_from_str!(Cidr, "a CIDR such as 10.0.0.0/8 or an address");
deserialize_from_str!(PortRange, "a port (443) or a port range (\"8000-8100\")");
deserialize_from_str!(Expiry, "a date or an RFC 3339 time");
deserialize_from_str!(DomainPattern, "a domain name (api.example.com) or wildcard (*.example.com)");
deserialize_from_str!(Grace, "a duration such as 30s, 2m or 1h");
deserialize_from_str!(ResolverAddr, "a resolver address");
deserialize_from_str!(Nat64Prefix, "an IPv6 /96 prefix such as 64:ff9b:1::/96");
deserialize_from_str!(Interval, "a duration such as 30s, 5m or 1h");
deserialize_from_str!(Warmup, "a duration such as 0s, 12h or 7d");
deserialize_from_str!(Cooldown, "a duration such as 10m or 1h");
deserialize_from_str!(ResponseFor, "a duration such as 10m or 1h");
deserialize_from_str!(Sigmas, "a number of standard deviations", float);
deserialize_from_str!(Factor, "a factor such as 4", float);
deserialize_from_str!(MinConnections, "a number of connections");
deserialize_from_str!(ByteSize, "a byte count such as 10MiB");
deserialize_from_str!(Offset, "an offset from UTC such as \"+00:00\"");

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        baseline::anomalies::AnomalyKind,
        policy::{merge, parse, Severity},
    };

    const HEAD: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n";

    fn spec(text: &str) -> Spec {
        let mut d = parse("p.yaml", &format!("{HEAD}spec:\n{text}")).unwrap_or_else(|e| panic!("{e:?}"));
        d.remove(0).doc.spec
    }

    /// Every problem of a text, parse and merge, one per line.
    fn problems(text: &str) -> String {
        let found = match parse("p.yaml", text) {
            Err(p) => p,
            Ok(d) => match merge(&d) {
                Err(crate::policy::PolicyError::Invalid(p)) => p,
                Err(e) => panic!("{e}"),
                Ok((_, w)) => w,
            },
        };
        found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn nat64_prefixes_parse_and_bad_ones_name_their_place() {
        let s = spec("  nat64Prefixes: [\"64:ff9b:1::/96\", \"2001:db8:64::/96\"]\n");
        let want: Vec<Nat64Prefix> =
            ["64:ff9b:1::/96", "2001:db8:64::/96"].iter().map(|p| Nat64Prefix(p.parse().expect("net"))).collect();
        assert_eq!(s.nat64_prefixes, want);
        for (value, words) in [
            ("64:ff9b:1::/64", "is /64: only /96 prefixes are supported"),
            ("64:ff9b::/32", "is /32: only /96 prefixes are supported"),
            ("64:ff9b::1/96", "has host bits set under its /96 mask; did you mean `64:ff9b::/96`?"),
            ("192.0.2.0/24", "is IPv4"),
            ("::ffff:0:0/96", "is the IPv4-mapped prefix"),
            ("::/96", "is the IPv4-compatible prefix"),
            ("nat64.example", "invalid NAT64 prefix"),
        ] {
            let p = problems(&format!("{HEAD}spec:\n  nat64Prefixes: [\"64:ff9b:2::/96\", \"{value}\"]\n"));
            assert!(p.starts_with("p.yaml:5:37: error: spec.nat64Prefixes[1]: "), "{value}: {p}");
            assert!(p.contains(words), "{value}: {p}");
        }
    }

    #[test]
    fn nat64_prefixes_merge_once_each_and_are_bounded() {
        let doc = |prefixes: &str| format!("{HEAD}spec:\n  nat64Prefixes: [{prefixes}]\n");
        let text = format!("{}---\n{}", doc("\"64:ff9b:1::/96\""), doc("\"64:ff9b:1::/96\", \"64:ff9b:2::/96\""));
        let (m, _) = merge(&parse("p.yaml", &text).expect("parse")).expect("merge");
        let nets: Vec<String> = m.nat64.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(nets, ["64:ff9b:1::/96", "64:ff9b:2::/96"]);
        assert_eq!(m.nat64[0].1.field, "spec.nat64Prefixes[0]");
        let many: Vec<String> =
            (0..=agent_common::MAX_NAT64_PREFIXES).map(|i| format!("\"64:ff9b:{i:x}::/96\"")).collect();
        let p = problems(&doc(&many.join(", ")));
        assert!(p.contains("error: spec.nat64Prefixes[64]: more than 64 NAT64 prefixes"), "{p}");
    }

    #[test]
    fn baseline_settings_parse() {
        let s = spec(
            "  baseline:\n    interval: 1m\n    warmup: 0s\n    cooldown: 2h\n    sigmas: 3.5\n    rateFactor: 5\n    volumeFactor: 2.5\n    minConnections: 50\n    minBytes: 512KiB\n    offHours: false\n    newDestinations: true\n    newProcesses: false\n    utcOffset: \"+05:30\"\n",
        );
        let b = s.baseline.expect("baseline");
        assert_eq!(b.interval, Some(Interval(Duration::from_secs(60))));
        assert_eq!(b.warmup, Some(Warmup(Duration::ZERO)));
        assert_eq!(b.cooldown, Some(Cooldown(Duration::from_secs(7200))));
        assert_eq!(
            (b.sigmas, b.rate_factor, b.volume_factor),
            (Some(Sigmas(3.5)), Some(Factor(5.0)), Some(Factor(2.5)))
        );
        assert_eq!((b.min_connections, b.min_bytes), (Some(MinConnections(50)), Some(ByteSize(512 * 1024))));
        assert_eq!((b.off_hours, b.new_destinations, b.new_processes), (Some(false), Some(true), Some(false)));
        assert_eq!(b.utc_offset, Some(Offset(time::macros::offset!(+5:30))));
        let s = spec("  baseline: {minBytes: 1048576, utcOffset: \"-08:00\", warmup: 7d}\n");
        let b = s.baseline.expect("baseline");
        assert_eq!(b.min_bytes, Some(ByteSize(1 << 20)));
        assert_eq!(b.utc_offset, Some(Offset(time::macros::offset!(-8))));
        assert_eq!(b.warmup, Some(Warmup(Duration::from_secs(7 * 86_400))));
        assert_eq!("10 MiB".parse::<ByteSize>(), Ok(ByteSize(10 << 20)));
        assert_eq!("1GiB".parse::<ByteSize>(), Ok(ByteSize(1 << 30)));
    }

    #[test]
    fn vendor_baseline_and_response_parse() {
        let s = spec(
            "  vendors:\n    - name: stripe\n      owner: payments\n      destinations: [{domain: api.stripe.com}]\n      baseline: {minBytes: 1MiB, interval: 30s}\n      response: {on: [volume_spike, rate_spike], action: block, for: 10m}\n",
        );
        let v = &s.vendors[0];
        let b = v.baseline.expect("baseline");
        assert_eq!((b.min_bytes, b.interval), (Some(ByteSize(1 << 20)), Some(Interval(Duration::from_secs(30)))));
        let r = v.response.as_ref().expect("response");
        assert_eq!(r.on, [AnomalyKind::VolumeSpike, AnomalyKind::RateSpike]);
        assert_eq!((r.action, r.duration), (ResponseAction::Block, ResponseFor(Duration::from_secs(600))));
    }

    #[test]
    fn bad_baseline_values_name_their_field() {
        for (yaml, field, words) in [
            ("interval: 2h", "spec.baseline.interval", "out of range 1s..1h"),
            ("interval: 0s", "spec.baseline.interval", "out of range"),
            ("interval: 5x", "spec.baseline.interval", "expected seconds"),
            ("warmup: 100d", "spec.baseline.warmup", "out of range"),
            ("cooldown: 0s", "spec.baseline.cooldown", "out of range"),
            ("sigmas: 0", "spec.baseline.sigmas", "above 0"),
            ("sigmas: lots", "spec.baseline.sigmas", "expected a number"),
            ("rateFactor: 0.5", "spec.baseline.rateFactor", "from 1 to 1000"),
            ("volumeFactor: -2", "spec.baseline.volumeFactor", "from 1 to 1000"),
            ("minConnections: 0", "spec.baseline.minConnections", "at least 1"),
            ("minConnections: 2.5", "spec.baseline.minConnections", "floating point"),
            ("minBytes: 10MB", "spec.baseline.minBytes", "KiB, MiB or GiB"),
            ("minBytes: 0", "spec.baseline.minBytes", "at least 1"),
            ("offHours: maybe", "spec.baseline.offHours", "boolean"),
            ("utcOffset: \"+5\"", "spec.baseline.utcOffset", "+HH:MM"),
            ("utcOffset: \"+24:00\"", "spec.baseline.utcOffset", "+HH:MM"),
            ("intervall: 5m", "spec.baseline", "unknown field `intervall`"),
        ] {
            let e = problems(&format!("{HEAD}spec:\n  baseline:\n    {yaml}\n"));
            assert!(e.starts_with("p.yaml:6:") || e.starts_with("p.yaml:5:"), "{yaml}: {e}");
            assert!(e.contains(&format!("error: {field}")) && e.contains(words), "{yaml}: {e}");
        }
        let v = |extra: &str| {
            format!("{HEAD}spec:\n  vendors:\n    - name: a\n      owner: x\n      destinations: [{{cidr: 1.1.1.1}}]\n      {extra}\n")
        };
        let e = problems(&v("baseline: {utcOffset: \"+01:00\"}"));
        assert!(e.contains("error: spec.vendors[0].baseline.utcOffset") && e.contains("one clock"), "{e}");
        let e = problems(&v("response: {on: [volume_spike], action: block, for: 2d}"));
        assert!(e.contains("error: spec.vendors[0].response.for") && e.contains("within a day"), "{e}");
        let e = problems(&v("response: {on: [exfiltration], action: block, for: 1h}"));
        assert!(e.contains("spec.vendors[0].response.on[0]") && e.contains("unknown variant"), "{e}");
        let e = problems(&v("response: {on: [rate_spike], action: kill, for: 1h}"));
        assert!(e.contains("spec.vendors[0].response.action"), "{e}");
        let e = problems(&v("response: {on: [], action: block, for: 1h}"));
        assert!(e.contains("error: spec.vendors[0].response.on: no anomaly kinds"), "{e}");
    }

    #[test]
    fn baseline_settings_merge_like_dns_settings() {
        let two = |a: &str, b: &str| format!("{HEAD}spec: {{baseline: {a}}}\n---\n{HEAD}spec: {{baseline: {b}}}\n");
        let docs = parse("p.yaml", &two("{interval: 1m}", "{interval: 60s}")).expect("parses");
        let (m, _) = merge(&docs).expect("the same settings twice merge");
        assert_eq!(m.baseline.interval, Some(Interval(Duration::from_secs(60))));
        let e = problems(&two("{interval: 1m}", "{interval: 2m}"));
        assert!(e.contains("error: spec.baseline: baseline settings differ from those at p.yaml:4:"), "{e}");
    }

    #[test]
    fn a_vendor_without_an_owner_is_warned_about() {
        for owner in ["", "      owner: \"  \"\n"] {
            let text =
                format!("{HEAD}spec:\n  vendors:\n    - name: acme\n{owner}      destinations: [{{cidr: 1.1.1.1}}]\n");
            let docs = parse("p.yaml", &text).expect("parses");
            let (_, w) = merge(&docs).expect("merges");
            assert_eq!(w.len(), 1, "{w:?}");
            assert_eq!(w[0].severity, Severity::Warning);
            assert_eq!(w[0].place.field, "spec.vendors[0].name");
            assert_eq!(w[0].message, "vendor `acme` has no owner: name the team accountable for it");
        }
    }
}
