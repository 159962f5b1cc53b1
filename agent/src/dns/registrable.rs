//! The registrable domain (eTLD+1) of a name: the unit a third party owns, so that
//! `api.stripe.com` and `files.stripe.com` are one party while `foo.github.io` and
//! `bar.github.io` (a public suffix, anyone can register below it) are two.

/// The registrable domain of `name` (lowercase, without a trailing dot). A name that is itself a
/// public suffix, or whose suffix the list does not know (`host.corp.internal`), is its own
/// party: grouping unknown suffixes would merge unrelated internal hosts.
pub fn registrable(name: &str) -> String {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(domain) = psl::domain(name.as_bytes()) else { return name };
    if !domain.suffix().is_known() {
        return name;
    }
    match std::str::from_utf8(domain.as_bytes()) {
        Ok(d) => d.to_owned(),
        Err(_) => name,
    }
}

/// Longest policy name (see `policy::model::Name`).
const MAX_NAME: usize = 63;

/// A policy name for a party (`stripe.com` → `stripe-com`, `2001:db8::1` → `2001-db8--1`): every
/// character outside `[a-z0-9_-]` becomes `-`, and a name too long for the format is cut and
/// given a hash of the whole, so two long names stay distinct.
pub fn vendor_name(registrable: &str) -> String {
    let mut s: String = registrable
        .trim_end_matches('.')
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // A name starts with a letter or digit.
    let lead = s.len() - s.trim_start_matches(['-', '_']).len();
    s.drain(..lead);
    if s.is_empty() {
        s.push_str("party");
    }
    if s.len() > MAX_NAME {
        let hash = fnv1a(registrable.as_bytes());
        s.truncate(MAX_NAME - 9);
        s.push_str(&format!("-{:08x}", hash as u32));
    }
    s
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`, so a learned name does not
/// change between runs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Name;

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable("api.stripe.com"), "stripe.com");
        assert_eq!(registrable("files.stripe.com"), "stripe.com");
        assert_eq!(registrable("API.Stripe.com."), "stripe.com");
        assert_eq!(registrable("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("foo.github.io"), "foo.github.io");
        assert_eq!(registrable("x.foo.github.io"), "foo.github.io");
        // Itself a public suffix, or no known suffix: the name itself.
        assert_eq!(registrable("github.io"), "github.io");
        assert_eq!(registrable("co.uk"), "co.uk");
        assert_eq!(registrable("db.corp.internal-unknown-tld"), "db.corp.internal-unknown-tld");
        assert_eq!(registrable("localhost"), "localhost");
    }

    #[test]
    fn vendor_names_are_valid_policy_names() {
        assert_eq!(vendor_name("stripe.com"), "stripe-com");
        assert_eq!(vendor_name("2001:db8::1"), "2001-db8--1");
        assert_eq!(vendor_name("_dmarc.example.com"), "dmarc-example-com");
        let long = format!("{}.example.com", "a".repeat(80));
        let other = format!("{}.example.org", "a".repeat(80));
        for s in ["stripe.com", "203.0.113.7", "2001:db8::1", "_x", "", "-", &long, "Ünï.example"] {
            let n = vendor_name(s);
            assert!(n.parse::<Name>().is_ok(), "{s} -> {n}");
        }
        assert_ne!(vendor_name(&long), vendor_name(&other));
        assert_eq!(vendor_name(&long).len(), 63);
    }
}
