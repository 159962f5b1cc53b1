//! Shadowing warnings: rules that allow to every process what another rule allows.

use std::collections::{BTreeSet, HashMap};

use agent_common::RuleEntry;
use ipnet::IpNet;

use super::{compile::RuleInfo, Problem};

/// At most this many shadowing warnings are listed; the rest are counted.
const MAX_SHADOW_WARNINGS: usize = 20;

/// The prefix itself and every enclosing prefix, most specific first.
pub(super) fn enclosing(net: IpNet) -> impl Iterator<Item = IpNet> {
    (0..=net.prefix_len()).rev().filter_map(move |len| IpNet::new(net.addr(), len).ok().map(|n| n.trunc()))
}

/// Rules that allow to every process what another rule allows: an `allow` rule that covers a
/// scoped vendor's destination and port makes the vendor's `processes` meaningless, and an
/// `allow` rule covered by another is redundant. Each warning names both places.
pub(super) fn shadowing(by_prefix: &HashMap<IpNet, Vec<RuleEntry>>, rules: &[RuleInfo]) -> Vec<Problem> {
    let mut found = BTreeSet::new();
    for (net, list) in by_prefix {
        for e in list {
            for up in enclosing(*net) {
                let Some(cover) = by_prefix.get(&up) else { continue };
                for f in cover {
                    let covers = f.selector == 0
                        && f.rule_id != e.rule_id
                        && f.protocols & e.protocols == e.protocols
                        && f.port_lo <= e.port_lo
                        && e.port_hi <= f.port_hi
                        // Between two any-process rules, report the later one as redundant.
                        && (e.selector != 0 || f.rule_id < e.rule_id);
                    if covers {
                        found.insert((e.rule_id, f.rule_id, *net, up));
                    }
                }
            }
        }
    }
    let total = found.len();
    let mut out: Vec<Problem> = found
        .into_iter()
        .take(MAX_SHADOW_WARNINGS)
        .filter_map(|(shadowed, by, net, up)| {
            let (s, b) = (rules.get(shadowed as usize)?, rules.get(by as usize)?);
            let place = s.place.clone()?;
            let by_place = b.place.as_ref().map_or_else(String::new, |p| format!(" at {p}"));
            let what = if s.vendor.is_some() { "its `processes` do not restrict it" } else { "this rule is redundant" };
            Some(Problem::warning(
                place,
                format!("{} to {net} is also allowed to every process by {} ({up}){by_place}: {what}", s.name, b.name),
            ))
        })
        .collect();
    if total > MAX_SHADOW_WARNINGS {
        if let Some(first) = out.first().map(|p| p.place.clone()) {
            out.push(Problem::warning(first, format!("... and {} more shadowed rules", total - MAX_SHADOW_WARNINGS)));
        }
    }
    out
}
