//! Which records a sink takes: by `kind`, `verdict` and `vendor`. An empty list takes any value.
//!
//! A record without the field a non-empty list names is not taken (an anomaly has no `verdict`,
//! so `verdicts: [deny]` means denied attempts only): a filter never lets through more than it
//! says. Audit records (`kind: audit`) go only to sinks whose `kinds` names `audit`: they are the
//! agent's own actions, not traffic, and a SIEM receiving every connection should not get them
//! mixed in unasked.

use serde::Deserialize;
use serde_json::Value;

/// The kind of the audit trail's records as the sinks get them (`Pipeline::audit`).
pub const AUDIT_KIND: &str = "audit";

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub verdicts: Vec<String>,
    #[serde(default)]
    pub vendors: Vec<String>,
}

fn takes(list: &[String], v: &Value) -> bool {
    list.is_empty() || v.as_str().is_some_and(|s| list.iter().any(|l| l == s))
}

impl Filter {
    pub fn matches(&self, rec: &Value) -> bool {
        let kind = rec["kind"].as_str().unwrap_or("");
        if kind == AUDIT_KIND && !self.kinds.iter().any(|k| k == AUDIT_KIND) {
            return false;
        }
        takes(&self.kinds, &rec["kind"])
            && takes(&self.verdicts, &rec["verdict"])
            && takes(&self.vendors, &rec["vendor"])
    }

    /// The kinds the agent writes, for validating a filter.
    pub const KINDS: &'static [&'static str] =
        &["connect", "flow", "dns", "anomaly", "response", "kill_switch", AUDIT_KIND];
    pub const VERDICTS: &'static [&'static str] = &["allow", "deny", "alert"];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(kinds: &[&str], verdicts: &[&str], vendors: &[&str]) -> Filter {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Filter { kinds: own(kinds), verdicts: own(verdicts), vendors: own(vendors) }
    }

    #[test]
    fn empty_lists_take_everything_but_audit() {
        let all = Filter::default();
        assert!(all.matches(&json!({"kind": "connect", "verdict": "allow"})));
        assert!(all.matches(&json!({"kind": "anomaly"})));
        assert!(!all.matches(&json!({"kind": "audit", "audit": "agent_start"})));
        assert!(f(&["audit"], &[], &[]).matches(&json!({"kind": "audit"})));
    }

    #[test]
    fn each_list_must_match_and_a_missing_field_does_not() {
        let deny = f(&[], &["deny"], &[]);
        assert!(deny.matches(&json!({"kind": "connect", "verdict": "deny"})));
        assert!(!deny.matches(&json!({"kind": "connect", "verdict": "allow"})));
        assert!(!deny.matches(&json!({"kind": "anomaly"})), "no verdict: not taken");
        let stripe = f(&["connect", "anomaly"], &[], &["stripe"]);
        assert!(stripe.matches(&json!({"kind": "anomaly", "vendor": "stripe"})));
        assert!(!stripe.matches(&json!({"kind": "anomaly", "vendor": null})));
        assert!(!stripe.matches(&json!({"kind": "flow", "vendor": "stripe"})));
    }
}
