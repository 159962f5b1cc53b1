//! Domain names as a policy author writes them, and the byte forms the kernel matches them in.
//!
//! Everything here is pure: parsing is strict up front so that the kernel only ever sees names
//! it can compare byte for byte (lowercase A-labels), and a policy that would not mean what its
//! author thinks (a misplaced `*`, an address written as a domain) is refused with a fix.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;

/// Longest label DNS can carry: its length byte has two bits reserved for compression pointers.
const MAX_LABEL: usize = 63;
/// Longest name in text form (no trailing dot): 255 wire bytes less the first length byte and the
/// final 0.
const MAX_NAME: usize = 253;
/// Longest name in wire form, final 0 included (RFC 1035 2.3.4).
const MAX_WIRE: usize = 255;

/// One domain destination of a policy: an exact name (`api.stripe.com`) or every name strictly
/// below a base (`*.stripe.com`).
///
/// The text is canonical (lowercase A-labels, no trailing dot) so that two spellings of the same
/// pattern compare, hash and deduplicate as equal, and so the kernel key can be built from it
/// without further normalization.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainPattern {
    text: String,
}

impl DomainPattern {
    /// The canonical text, as [`fmt::Display`] writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_wildcard(&self) -> bool {
        self.text.starts_with("*.")
    }

    /// The name without its `*.`: what a wildcard's trie key is built from.
    pub fn base(&self) -> &str {
        self.text.strip_prefix("*.").unwrap_or(&self.text)
    }

    /// `name` must already be canonical (see [`canonical_name`]): comparing raw text here would
    /// let `API.stripe.com.` slip past a rule the kernel applies to `api.stripe.com`.
    ///
    /// A wildcard does not match its base (`*.stripe.com` does not cover `stripe.com`), the DNS
    /// wildcard reading, so allowing every subdomain never silently allows the apex as well.
    pub fn matches(&self, name: &str) -> bool {
        if !self.is_wildcard() {
            return self.text == name;
        }
        let base = self.base();
        // The byte before the base must be a dot, and something must come before that dot:
        // otherwise `xstripe.com` or `stripe.com` itself would match.
        match name.strip_suffix(base).and_then(|head| head.strip_suffix('.')) {
            Some(head) => !head.is_empty(),
            None => false,
        }
    }

    /// The key of this pattern in the kernel's domain trie: exact names end with 0, wildcards do
    /// not, so a longest-prefix lookup with a query's key finds the exact entry or the nearest
    /// enclosing wildcard.
    pub fn rkey(&self) -> Vec<u8> {
        if self.is_wildcard() {
            rkey_suffix(self.base())
        } else {
            rkey_exact(&self.text)
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DomainPattern {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let (body, shown) = prepare(input)?;
        let base = body.strip_prefix("*.").unwrap_or(&body);
        if base.is_empty() || base.contains('*') {
            return Err(wildcard_error(&shown));
        }
        check_name(base, &shown)?;
        Ok(DomainPattern { text: body })
    }
}

/// Normalizes a name being asked about (not a pattern), the same way patterns are normalized, so
/// that a question such as `explain --domain API.Stripe.com.` finds the rule written for
/// `api.stripe.com`.
pub fn canonical_name(input: &str) -> Result<String, String> {
    let (body, shown) = prepare(input)?;
    if body.contains('*') {
        return Err(format!(
            "domain `{shown}` contains `*`: give a concrete name to look up, such as `api.example.com`"
        ));
    }
    check_name(&body, &shown)?;
    Ok(body)
}

/// Steps shared by patterns and names: trim, IDNA to lowercase A-labels, drop one trailing dot.
/// Returns the ASCII body and the input as it should appear in messages.
///
/// IDNA runs first, on the whole text, because UTS 46 maps some characters onto the ones the
/// later checks look at (the ideographic full stop `。` to `.`, full-width digits to digits,
/// `﹡` to `*`); checking before mapping would judge a different string than the one stored.
fn prepare(input: &str) -> Result<(String, String), String> {
    let trimmed = input.trim();
    let shown = printable(trimmed);
    if trimmed.is_empty() || trimmed == "." {
        return Err(format!("domain `{shown}` is empty: write a name such as `api.example.com` or `*.example.com`"));
    }
    if trimmed.contains("://") {
        return Err(format!(
            "domain `{shown}` looks like a URL: write only the host name, without scheme, port or path \
             (`https://api.example.com/v1` → `api.example.com`)"
        ));
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| {
        format!(
            "domain `{shown}` is not a valid internationalized name (IDNA conversion failed): check for a \
             mistyped `xn--` label, a label mixing right-to-left and left-to-right scripts, or invisible characters"
        )
    })?;
    let body = ascii.strip_suffix('.').map(str::to_owned).unwrap_or(ascii);
    Ok((body, shown))
}

/// An address among the domains would be compared as text against query names and never match
/// anything, silently; the author almost certainly meant a `cidr:` destination.
fn address_error(name: &str, shown: &str) -> Option<String> {
    let unbracketed = name.strip_prefix('[').and_then(|b| b.strip_suffix(']')).unwrap_or(name);
    let as_cidr = |what: &str| {
        // YAML would read a bare `::`-bearing value fine, but quoting IPv6 is the habit worth showing.
        let value = if unbracketed.contains(':') { format!("\"{unbracketed}\"") } else { unbracketed.to_owned() };
        Some(format!("`{shown}` is {what}, not a domain: list it as `cidr: {value}` instead"))
    };
    if unbracketed.parse::<IpAddr>().is_ok() {
        return as_cidr("an IP address");
    }
    if let Some((addr, prefix)) = name.split_once('/') {
        if addr.parse::<IpAddr>().is_ok() && prefix.parse::<u8>().is_ok() {
            return as_cidr("a network");
        }
    }
    // `10.0.0` or `1.2.3.4.5`: not an address, but no real name is all digits, and URL parsers
    // read such names as IPv4, so this is a mistyped address rather than a domain.
    if name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return Some(format!(
            "`{shown}` has only numeric labels, so it is not a domain: if it is an address or a network, \
             list it under `cidr:` instead"
        ));
    }
    None
}

fn wildcard_error(shown: &str) -> String {
    format!(
        "domain `{shown}` has a misplaced `*`: a wildcard is only allowed as the whole first label \
         (`*.example.com`), and a lone `*` would match every name, so it is not accepted"
    )
}

/// The character and length rules, on the ASCII form. `_` is allowed because real service names
/// use it (`_dmarc.example.com`, SRV names); hostname (LDH) rules would refuse them.
/// Addresses are refused here, on the name without its `*.`, so that `*.10.0.0.1` is caught too.
fn check_name(name: &str, shown: &str) -> Result<(), String> {
    if let Some(e) = address_error(name, shown) {
        return Err(e);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("domain `{shown}` has an empty label: remove the leading dot or the doubled `..`"));
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "domain `{shown}` has a label of {} bytes (`{}…`): DNS labels are at most {MAX_LABEL} bytes",
                label.len(),
                label.get(..16).unwrap_or(label)
            ));
        }
        if let Some(c) = label.chars().find(|&c| !is_label_char(c)) {
            let what = match c {
                ':' => " (ports and IPv6 addresses are not domains)",
                '/' => " (paths and networks are not domains)",
                ' ' => " (a space)",
                _ => "",
            };
            return Err(format!(
                "domain `{shown}` contains `{}`{what}: labels may only use letters, digits, `-` and `_`",
                c.escape_default()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "domain `{shown}` has the label `{label}` starting or ending with `-`: \
                 a hyphen is only allowed inside a label"
            ));
        }
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "domain `{shown}` is {} bytes long: a name is at most {MAX_NAME} bytes (without `*.` and the trailing dot)",
            name.len()
        ));
    }
    Ok(())
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// Messages are one line: control characters in the input are escaped rather than written out.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Length byte of a label. Canonical names never have labels over 63 bytes; anything longer is cut
/// so that the output is always well-formed and a kernel parser reading it cannot lose its place.
fn label_len(label: &[u8]) -> (u8, &[u8]) {
    debug_assert!(label.len() <= MAX_LABEL, "label over {MAX_LABEL} bytes in a canonical name");
    let cut = &label[..label.len().min(MAX_LABEL)];
    // `cut` is at most 63 bytes, so the conversion cannot fail.
    (u8::try_from(cut.len()).unwrap_or(MAX_LABEL as u8), cut)
}

/// Labels of a canonical name; the empty name (the root) has none.
fn labels(name: &str) -> impl DoubleEndedIterator<Item = &[u8]> {
    name.split('.').filter(|l| !l.is_empty()).map(str::as_bytes)
}

fn push_labels<'a>(out: &mut Vec<u8>, labels: impl Iterator<Item = &'a [u8]>) {
    for label in labels {
        let (len, bytes) = label_len(label);
        out.push(len);
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
/// DNS wire form of a canonical name, as it appears in a query's question: what the kernel
/// compares an answer's question against.
pub fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    push_labels(&mut out, labels(name));
    out.push(0);
    out
}

/// Trie key of an exact name. Labels are reversed so that names sharing a parent share a key
/// prefix, which is what lets an LPM trie find wildcards; the final 0 keeps `stripe.com` from
/// being a prefix of `api.stripe.com`.
pub fn rkey_exact(name: &str) -> Vec<u8> {
    let mut out = rkey_suffix(name);
    out.push(0);
    out
}

/// Trie key of the wildcard `*.base`: the key of `base` without its final 0, so that it is a
/// prefix of the key of every name below `base` (and, one byte short, of `base` itself, which
/// the kernel tells apart by length).
pub fn rkey_suffix(base: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + 2);
    push_labels(&mut out, labels(base).rev());
    out
}

#[cfg(test)]
/// Reads a wire-form name: its labels, or `None` when it is not exactly one well-formed name
/// (compression pointers, over-long labels, missing or early 0, bytes after the 0).
fn wire_labels(wire: &[u8]) -> Option<Vec<&[u8]>> {
    if wire.len() > MAX_WIRE {
        return None;
    }
    let mut labels = Vec::new();
    let mut pos = 0;
    loop {
        let len = usize::from(*wire.get(pos)?);
        if len == 0 {
            return (pos + 1 == wire.len()).then_some(labels);
        }
        if len > MAX_LABEL {
            return None;
        }
        labels.push(wire.get(pos + 1..pos + 1 + len)?);
        pos += 1 + len;
    }
}

#[cfg(test)]
/// The exact-name trie key of a name in wire form, built the way the kernel builds it from a
/// query, so userspace (tests, `explain`) can reproduce the kernel's lookup. ASCII letters are
/// lowercased as the kernel does, because resolvers may randomize case (DNS 0x20) and the trie
/// holds lowercase keys.
pub fn rkey_from_wire(wire: &[u8]) -> Option<Vec<u8>> {
    let labels = wire_labels(wire)?;
    let mut out = Vec::with_capacity(wire.len());
    for label in labels.into_iter().rev() {
        let (len, bytes) = label_len(label);
        out.push(len);
        out.extend(bytes.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    Some(out)
}

/// A wire-form name as text for logs and events. The bytes come from the network (or a kernel
/// buffer that may have cut them), so nothing is trusted: anything but a label character is
/// escaped zone-file style (`\DDD`, `\.`) so a hostile name cannot forge a different-looking name
/// or break a log line, and reading stops at the first malformed or truncated label, keeping the
/// complete labels before it.
pub fn name_from_wire(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        let len = usize::from(len);
        if len == 0 || len > MAX_LABEL || pos + 1 + len + 1 > MAX_WIRE {
            break;
        }
        let Some(label) = wire.get(pos + 1..pos + 1 + len) else { break };
        if pos > 0 {
            out.push('.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(char::from(b)),
                b'.' => out.push_str("\\."),
                // Writing to a String cannot fail.
                _ => _ = write!(out, "\\{b:03}"),
            }
        }
        pos += 1 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pat(s: &str) -> DomainPattern {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn refused(s: &str) -> String {
        match s.parse::<DomainPattern>() {
            Ok(p) => panic!("{s:?} should be refused, parsed as {p}"),
            Err(e) => e,
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(pat("api.stripe.com").to_string(), "api.stripe.com");
        assert_eq!(pat("  API.Stripe.COM.\n").to_string(), "api.stripe.com");
        assert_eq!(pat("*.Stripe.com.").to_string(), "*.stripe.com");
        assert_eq!(pat("_dmarc.example.com").as_str(), "_dmarc.example.com");
        assert_eq!(pat("_sip._tcp.example.com").as_str(), "_sip._tcp.example.com");
        assert_eq!(pat("localhost").as_str(), "localhost");
        assert_eq!(pat("*.com").as_str(), "*.com");
        assert_eq!(pat("a-b.c--d.com").as_str(), "a-b.c--d.com");
        assert_eq!(pat("API.stripe.com"), pat("api.stripe.com."));
    }

    #[test]
    fn idn_stored_as_a_labels() {
        assert_eq!(pat("bücher.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(pat("*.bücher.example").as_str(), "*.xn--bcher-kva.example");
        assert_eq!(pat("BÜCHER.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(pat("xn--bcher-kva.example"), pat("bücher.example"));
        // UTS 46 maps the ideographic full stop and full-width letters.
        assert_eq!(pat("ＡＰＩ．stripe.com。").as_str(), "api.stripe.com");
        assert_eq!(canonical_name("bücher.example").as_deref(), Ok("xn--bcher-kva.example"));
        let e = refused("xn--zz.com");
        assert!(e.contains("`xn--zz.com`") && e.contains("IDNA"), "{e}");
    }

    #[test]
    fn misplaced_wildcards_refused() {
        for s in ["*", "*.", "**.a.com", "a.*.com", "*a.com", "a*.com", "*.*.a.com", "*..", "﹡a.com"] {
            let e = refused(s);
            assert!(e.contains("whole first label") && e.contains("`*.example.com`"), "{s}: {e}");
            assert!(e.contains("lone `*` would match every name"), "{s}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(refused("*").contains("`*`"));
        assert!(refused("a.*.com").contains("`a.*.com`"));
    }

    #[test]
    fn empty_labels_refused() {
        for s in ["a..com", ".a.com", "a.com..", "*..com"] {
            let e = refused(s);
            assert!(e.contains(&format!("`{s}`")) && e.contains("empty label"), "{e}");
        }
        assert_eq!(refused("a..com"), "domain `a..com` has an empty label: remove the leading dot or the doubled `..`");
        for s in ["", "  ", "."] {
            assert!(refused(s).contains("is empty"), "{s:?}");
        }
    }

    #[test]
    fn characters_refused() {
        for (s, c) in [("a!.com", "!"), ("a b.com", " "), ("a.com:443", ":"), ("a/b.com", "/"), ("a\\.com", "\\\\")] {
            let e = refused(s);
            assert!(e.contains(&format!("contains `{c}`")), "{s}: {e}");
            assert!(e.contains("letters, digits, `-` and `_`"), "{e}");
        }
        let e = refused("a\n.com");
        assert!(!e.contains('\n') && e.contains("a\\n.com"), "{e}");
        assert!(refused("https://api.stripe.com/v1").contains("URL"));
    }

    #[test]
    fn hyphens_at_label_ends_refused() {
        for s in ["-a.com", "a-.com", "*.-a.com", "a.com-"] {
            let e = refused(s);
            assert!(e.contains("starting or ending with `-`"), "{s}: {e}");
        }
    }

    #[test]
    fn label_length_limits() {
        let l63 = "a".repeat(63);
        assert_eq!(pat(&format!("{l63}.com")).as_str(), format!("{l63}.com"));
        let e = refused(&format!("{l63}a.com"));
        assert!(e.contains("64 bytes") && e.contains("at most 63"), "{e}");
    }

    #[test]
    fn name_length_limits() {
        // 3 labels of 63 + 1 label of 61 + 3 dots = 253.
        let l63 = "a".repeat(63);
        let n253 = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(n253.len(), 253);
        assert_eq!(pat(&n253).as_str(), n253);
        assert_eq!(pat(&format!("{n253}.")).as_str(), n253);
        assert_eq!(pat(&format!("*.{n253}")).base(), n253);
        assert_eq!(wire(&n253).len(), 255);
        let n254 = format!("{n253}b");
        let e = refused(&n254);
        assert!(e.contains("254 bytes") && e.contains("at most 253"), "{e}");
        assert!(refused(&format!("*.{n254}")).contains("254 bytes"));
    }

    #[test]
    fn addresses_refused_with_cidr_hint() {
        for s in ["10.0.0.1", "10.0.0.1.", "2001:db8::1", "[2001:db8::1]", "10.0.0.0/8", "2001:db8::/32", "10.0.0"] {
            let e = refused(s);
            assert!(e.contains(&format!("`{s}`")) && e.contains("`cidr:"), "{s}: {e}");
        }
        assert!(refused("10.0.0.0/8").contains("`cidr: 10.0.0.0/8`"));
        assert!(refused("2001:db8::1").contains("`cidr: \"2001:db8::1\"`"));
        assert!(refused("*.10.0.0.1").contains("`cidr: 10.0.0.1`"));
        assert!(refused("10.0.0").contains("only numeric labels"));
        assert!(refused("[2001:db8::1]").contains("`cidr: \"2001:db8::1\"`"));
        assert!(canonical_name("10.0.0.1").is_err_and(|e| e.contains("cidr:")));
        // A numeric label among others is a name.
        assert_eq!(pat("1.example.com").as_str(), "1.example.com");
        assert_eq!(pat("123.456.com").as_str(), "123.456.com");
    }

    #[test]
    fn canonical_name_normalizes_and_refuses_wildcards() {
        assert_eq!(canonical_name(" API.Stripe.COM. ").as_deref(), Ok("api.stripe.com"));
        assert_eq!(canonical_name("_dmarc.example.com").as_deref(), Ok("_dmarc.example.com"));
        assert!(canonical_name("*.stripe.com").is_err_and(|e| e.contains("`*.stripe.com`") && e.contains("`*`")));
        assert!(canonical_name("a..com").is_err_and(|e| e.contains("empty label")));
    }

    #[test]
    fn base_and_wildcard() {
        let w = pat("*.stripe.com");
        assert!(w.is_wildcard());
        assert_eq!(w.base(), "stripe.com");
        let e = pat("api.stripe.com");
        assert!(!e.is_wildcard());
        assert_eq!(e.base(), "api.stripe.com");
    }

    #[test]
    fn matching_examples() {
        let w = pat("*.stripe.com");
        assert!(w.matches("a.stripe.com"));
        assert!(w.matches("a.b.stripe.com"));
        assert!(!w.matches("stripe.com"));
        assert!(!w.matches("xstripe.com"));
        assert!(!w.matches(".stripe.com"));
        assert!(!w.matches("stripe.com.evil"));
        let e = pat("api.stripe.com");
        assert!(e.matches("api.stripe.com"));
        assert!(!e.matches("a.api.stripe.com"));
    }

    #[test]
    fn wire_and_rkey_examples() {
        assert_eq!(wire("api.stripe.com"), b"\x03api\x06stripe\x03com\x00");
        assert_eq!(wire(""), [0]);
        assert_eq!(rkey_exact("api.stripe.com"), b"\x03com\x06stripe\x03api\x00");
        assert_eq!(rkey_exact(""), [0]);
        assert_eq!(rkey_suffix("stripe.com"), b"\x03com\x06stripe");
        assert_eq!(pat("*.stripe.com").rkey(), b"\x03com\x06stripe");
        assert_eq!(pat("api.stripe.com").rkey(), b"\x03com\x06stripe\x03api\x00");
        assert_eq!(rkey_from_wire(b"\x03api\x06stripe\x03com\x00"), Some(rkey_exact("api.stripe.com")));
        assert_eq!(rkey_from_wire(b"\x03API\x06StRiPe\x03com\x00"), Some(rkey_exact("api.stripe.com")));
        assert_eq!(rkey_from_wire(&[0]), Some(vec![0]));
    }

    #[test]
    fn rkey_from_wire_refuses_malformed() {
        for bad in [
            &b""[..],
            b"\x03api",
            b"\x03api\x03co",
            b"\x03api\x00\x00",
            b"\xc0\x0c",
            b"\x40aaaa\x00",
            b"\x03com\x00junk",
        ] {
            assert_eq!(rkey_from_wire(bad), None, "{bad:?}");
        }
        // 256 bytes: four 63-byte labels.
        let long: Vec<u8> = (0..4).flat_map(|_| std::iter::once(63).chain([b'a'; 63])).chain([0]).collect();
        assert_eq!(long.len(), 257);
        assert_eq!(rkey_from_wire(&long), None);
    }

    #[test]
    fn name_from_wire_examples() {
        assert_eq!(name_from_wire(b"\x03api\x06stripe\x03com\x00"), "api.stripe.com");
        assert_eq!(name_from_wire(b"\x03API\x06_dmarc\x00"), "api._dmarc");
        assert_eq!(name_from_wire(b"\x03a.b\x03c d\x01\\\x00"), "a\\.b.c\\032d.\\092");
        assert_eq!(name_from_wire(b"\x02\xc3\xbc\x00"), "\\195\\188");
        assert_eq!(name_from_wire(&[0]), "");
        assert_eq!(name_from_wire(b""), "");
        // Truncated or malformed: the complete labels read so far.
        assert_eq!(name_from_wire(b"\x03api\x06stri"), "api");
        assert_eq!(name_from_wire(b"\x03api\xc0\x0c"), "api");
        assert_eq!(name_from_wire(b"\x03api\x03com"), "api.com");
    }

    const ALPHABET: [&str; 5] = ["a", "b", "ab", "x-y", "_s"];

    fn label_list() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(&ALPHABET[..]), 1..=4)
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_rules_and_rkeys(wild: bool, p in label_list(), n in label_list()) {
            let base = p.join(".");
            let text = if wild { format!("*.{base}") } else { base.clone() };
            let pattern: DomainPattern = text.parse().map_err(TestCaseError::fail)?;
            let name = n.join(".");
            prop_assert_eq!(canonical_name(&name), Ok(name.clone()));

            let by_rules = if wild {
                n.len() > p.len() && n[n.len() - p.len()..] == p[..]
            } else {
                n == p
            };
            prop_assert_eq!(pattern.matches(&name), by_rules);

            let key = rkey_exact(&name);
            if wild {
                let suffix = rkey_suffix(pattern.base());
                prop_assert_eq!(&pattern.rkey(), &suffix);
                prop_assert_eq!(pattern.matches(&name), key.starts_with(&suffix) && key.len() > suffix.len() + 1);
            } else {
                prop_assert_eq!(&pattern.rkey(), &rkey_exact(&base));
                prop_assert_eq!(pattern.matches(&name), pattern.rkey() == key);
            }
            prop_assert_eq!(rkey_from_wire(&wire(&name)), Some(key));
            prop_assert_eq!(name_from_wire(&wire(&name)), name);
        }

        #[test]
        fn name_from_wire_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let text = name_from_wire(&bytes);
            prop_assert!(!text.chars().any(char::is_control));
            let _ = rkey_from_wire(&bytes);
        }

        #[test]
        fn wire_round_trips(name in "[a-z0-9_][a-z0-9_-]{0,10}[a-z0-9_](\\.[a-z0-9_]{1,12}){0,5}") {
            let w = wire(&name);
            prop_assert_eq!(name_from_wire(&w), name.clone());
            let key = rkey_from_wire(&w);
            prop_assert_eq!(key.as_ref().map(Vec::len), Some(w.len()));
            prop_assert_eq!(key, Some(rkey_exact(&name)));
        }

        #[test]
        fn parse_never_panics_and_is_idempotent(s in "\\PC{0,40}") {
            if let Ok(p) = s.parse::<DomainPattern>() {
                prop_assert_eq!(p.to_string().parse::<DomainPattern>(), Ok(p.clone()));
                prop_assert!(p.base().len() <= MAX_NAME);
            }
        }
    }
}
