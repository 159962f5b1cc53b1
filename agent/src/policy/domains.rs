//! Domain destinations compiled for the kernel: each pattern's rule entries together with those
//! of every wildcard that also covers its names (most specific first), as prefixes do with their
//! enclosing prefixes. The kernel then needs one trie lookup per query and one rule list per
//! learnt address.

use std::collections::BTreeMap;

use agent_common::{DestValue, RuleEntry, MAX_RULES_PER_PREFIX};

use crate::dns::name::DomainPattern;

/// One pattern of the policy, as the kernel's trie holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEntry {
    pub pattern: DomainPattern,
    /// The rule entries that apply to the pattern's names.
    pub value: DestValue,
    /// Wildcards only: the pattern whose rules apply to the base name itself (the nearest
    /// enclosing wildcard), since `*.S` does not cover `S`.
    pub at: Option<DomainPattern>,
}

/// The wildcards of `table` that cover every name of `p` (for `*.S`: those covering `S`), the
/// nearest first.
fn enclosing<'a>(
    wildcards: &'a [&'a DomainPattern],
    p: &'a DomainPattern,
) -> impl Iterator<Item = &'a DomainPattern> + 'a {
    let name = p.base();
    wildcards.iter().copied().filter(move |w| w.matches(name) && *w != p)
}

/// Builds the entries, appending rule entries to `entries`. `Err` names the pattern whose
/// rule list exceeds the kernel's per-destination budget.
pub fn build(
    by_pattern: &BTreeMap<DomainPattern, Vec<RuleEntry>>,
    entries: &mut Vec<RuleEntry>,
) -> Result<Vec<DomainEntry>, (DomainPattern, u32)> {
    let mut wildcards: Vec<&DomainPattern> = by_pattern.keys().filter(|p| p.is_wildcard()).collect();
    // Longest base first: the nearest enclosing wildcard comes first.
    wildcards.sort_by_key(|w| std::cmp::Reverse(w.base().len()));
    let mut out = Vec::new();
    for (p, own) in by_pattern {
        let first = entries.len() as u32;
        entries.extend_from_slice(own);
        for w in enclosing(&wildcards, p) {
            entries.extend_from_slice(&by_pattern[w]);
        }
        let count = entries.len() as u32 - first;
        if count > MAX_RULES_PER_PREFIX {
            return Err((p.clone(), count));
        }
        let at = if p.is_wildcard() { enclosing(&wildcards, p).next().cloned() } else { None };
        out.push(DomainEntry { pattern: p.clone(), value: DestValue { first, count }, at });
    }
    Ok(out)
}

/// The entry whose rules apply to the names of `p` in this table: its own, or, for a pattern
/// the table does not have (one retired by a reload, or a name asked about), the nearest
/// wildcard covering it.
pub fn lookup<'a>(table: &'a [DomainEntry], p: &DomainPattern) -> Option<&'a DomainEntry> {
    if let Some(e) = table.iter().find(|e| &e.pattern == p) {
        return Some(e);
    }
    let name = p.base();
    table
        .iter()
        .filter(|e| e.pattern.is_wildcard() && e.pattern.matches(name) && &e.pattern != p)
        .max_by_key(|e| e.pattern.base().len())
}

/// The entry that applies to a query for `name` (canonical), as the kernel's trie finds it.
pub fn for_name<'a>(table: &'a [DomainEntry], name: &str) -> Option<&'a DomainEntry> {
    let exact: DomainPattern = name.parse().ok()?;
    lookup(table, &exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rule_id: u32) -> RuleEntry {
        RuleEntry { rule_id, ..Default::default() }
    }

    fn p(s: &str) -> DomainPattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_get_their_own_and_enclosing_wildcards_rules_nearest_first() {
        let by: BTreeMap<_, _> = [
            (p("api.stripe.com"), vec![entry(1)]),
            (p("*.stripe.com"), vec![entry(2)]),
            (p("*.com"), vec![entry(3)]),
            (p("*.a.stripe.com"), vec![entry(4)]),
        ]
        .into_iter()
        .collect();
        let mut entries = Vec::new();
        let t = build(&by, &mut entries).expect("fits");
        let ids = |e: &DomainEntry| -> Vec<u32> {
            entries[e.value.first as usize..(e.value.first + e.value.count) as usize]
                .iter()
                .map(|r| r.rule_id)
                .collect()
        };
        assert_eq!(ids(for_name(&t, "api.stripe.com").expect("listed")), [1, 2, 3]);
        assert_eq!(ids(for_name(&t, "x.a.stripe.com").expect("listed")), [4, 2, 3]);
        assert_eq!(ids(for_name(&t, "a.stripe.com").expect("listed")), [2, 3]);
        assert_eq!(ids(for_name(&t, "stripe.com").expect("listed")), [3]);
        assert!(for_name(&t, "com").is_none());
        let wild = t.iter().find(|e| e.pattern == p("*.a.stripe.com")).expect("entry");
        assert_eq!(wild.at, Some(p("*.stripe.com")));
        // A retired pattern takes the rules of what still covers it.
        assert_eq!(ids(lookup(&t, &p("*.b.stripe.com")).expect("covered")), [2, 3]);
    }
}
