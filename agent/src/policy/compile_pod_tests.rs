//! Pod, container and pod-metadata selectors: what they resolve to, and how they are validated.

use super::*;

#[test]
fn pod_and_container_selectors_name_their_cgroups() {
    let in_cgroup = |ancestors: Vec<u64>| ProcIdentity { cgroup_ancestors: ancestors, ..curl() };
    let a = in_cgroup(vec![1, 20, 21, 300, 301]);
    let b = in_cgroup(vec![1, 20, 21, 300, 302]);
    let c = in_cgroup(vec![1, 22, 303]);
    let d = |p: &CompiledPolicy, who: &ProcIdentity| {
        p.decide("192.0.2.1".parse().expect("ip"), 443, Protocol::Tcp, who).verdict
    };
    let spec = |sel: &str| {
        format!("  mode: enforce\n  vendors:\n    - name: s\n      destinations: [{{cidr: 192.0.2.1}}]\n      processes: [{sel}]\n")
    };

    // The pod's cgroup: both its containers, one kernel selector.
    let (p, w) = compiled(&spec(&format!("{{pod_uid: {POD}}}")));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.tables.selectors.len(), 2);
    assert_eq!((p.tables.selectors[1].cgroup_id, p.tables.selectors[1].cgroup_level), (300, 3));
    assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW, verdict::ALLOW, verdict::DENY]);

    // A glob matching two containers: two kernel selectors, either allows.
    let (p, _) = compiled(&spec("{container: \"aa*\"}"));
    assert_eq!(p.tables.selectors.len(), 2);
    assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW, verdict::DENY, verdict::DENY]);
    let (p, _) = compiled(&spec("{container: \"a*\"}"));
    assert_eq!(p.tables.selectors.len(), 4);
    assert_eq!(p.fingerprint.len(), 3);
    assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW; 3]);

    // A glob within a pod: that pod's containers only.
    let (p, _) = compiled(&spec(&format!("{{pod_uid: {POD}, container: \"a*\"}}")));
    assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW, verdict::ALLOW, verdict::DENY]);
    // A full id, and combined with other parts (all must match).
    let (p, _) = compiled(&spec(&format!("{{container: \"{}\", uid: 0}}", cid('c'))));
    assert_eq!([d(&p, &a), d(&p, &c)], [verdict::DENY, verdict::ALLOW]);

    // Nothing matches yet: match nothing, say why.
    let (p, w) = compiled(&spec("{container: \"ff*\"}"));
    assert_eq!(d(&p, &a), verdict::DENY);
    assert!(w.iter().any(|w| w.message.contains("no container matching `ff*`")), "{w:?}");
    let (_, w) = compiled(&spec("{pod_uid: 00000000-0000-0000-0000-000000000000}"));
    assert!(w.iter().any(|w| w.message.contains("no pod with uid 00000000-")), "{w:?}");
    assert_eq!(p.fingerprint, selector_fingerprint(&merged(&spec("{container: \"ff*\"}")), &FakeHost));
}

#[test]
fn pod_metadata_selectors_name_the_cgroups_of_the_pods_they_match() {
    let in_cgroup = |ancestors: Vec<u64>| ProcIdentity { cgroup_ancestors: ancestors, ..curl() };
    let (a, b, c) =
        (in_cgroup(vec![1, 20, 21, 300, 301]), in_cgroup(vec![1, 20, 21, 300, 302]), in_cgroup(vec![1, 22, 303]));
    let d = |p: &CompiledPolicy, who: &ProcIdentity| {
        p.decide("192.0.2.1".parse().expect("ip"), 443, Protocol::Tcp, who).verdict
    };
    let spec = |sel: &str| {
        format!("  mode: enforce\n  vendors:\n    - name: s\n      destinations: [{{cidr: 192.0.2.1}}]\n      processes: [{sel}]\n")
    };
    for sel in [
        "{pod_namespace: payments}",
        "{pod_namespace: payments, pod_name: \"checkout-*\"}",
        "{pod_namespace: payments, pod_labels: {app: checkout}}",
        "{pod_namespace: payments, pod_labels: {app: checkout, tier: web}}",
    ] {
        let (p, w) = compiled(&spec(sel));
        assert!(w.is_empty(), "{sel}: {w:?}");
        assert_eq!(
            (p.tables.selectors[1].cgroup_id, p.tables.selectors[1].cgroup_level),
            (300, 3),
            "{sel}: the pod's cgroup"
        );
        assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW, verdict::ALLOW, verdict::DENY], "{sel}");
    }
    // Within the pods matched, one container.
    let (p, _) = compiled(&spec("{pod_namespace: payments, pod_labels: {app: checkout}, container: \"aa*\"}"));
    assert_eq!([d(&p, &a), d(&p, &b), d(&p, &c)], [verdict::ALLOW, verdict::DENY, verdict::DENY]);
    // Every part must match: another namespace, a label value that differs, a missing label.
    for sel in [
        "{pod_namespace: other}",
        "{pod_namespace: other, pod_labels: {app: checkout}}",
        "{pod_namespace: payments, pod_labels: {app: billing}}",
        "{pod_namespace: payments, pod_labels: {app: checkout, team: x}}",
        "{pod_namespace: payments, pod_name: \"web-*\"}",
    ] {
        let (p, w) = compiled(&spec(sel));
        assert_eq!(d(&p, &a), verdict::DENY, "{sel}");
        assert!(w.iter().any(|w| w.message.contains("no pod with")), "{sel}: {w:?}");
    }
    // No pod list: nothing matches, and the warning says how to get one.
    let text = format!(
        "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{}",
        spec("{pod_namespace: payments}")
    );
    let (m, _) = merge(&parse("t.yaml", &text).expect("parse")).expect("merge");
    let (p, w) = compile(&m, &NoPodList, time::macros::datetime!(2026-11-23 12:00 UTC)).expect("compile");
    assert_eq!(d(&p, &a), verdict::DENY);
    assert!(w.iter().any(|w| w.message.contains("kubernetes: {pods: api}")), "{w:?}");
}

#[test]
fn pod_metadata_selectors_are_validated() {
    let refused = |sel: &str| {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n  vendors:\n    - name: s\n      destinations: [{{cidr: 192.0.2.1}}]\n      processes:\n        - {sel}\n");
        match parse("t.yaml", &text) {
            Err(e) => format!("{e:?}"),
            Ok(docs) => merge(&docs).err().map(|e| e.to_string()).unwrap_or_default(),
        }
    };
    assert!(refused("{pod_namespace: Payments}").contains("is not a namespace name"));
    assert!(refused("{pod_namespace: a, pod_labels: {}}").contains("an empty map would match every pod"));
    assert!(refused("{pod_namespace: a, pod_labels: {\"-bad\": x}}").contains("is not a label key"));
    assert!(refused("{pod_namespace: a, pod_labels: {app: \"a b\"}}").contains("is not a label value"));
    assert!(refused("{pod_namespace: a, pod_name: \"Web_1\"}").contains("pod_name `Web_1`"));
    // Labels and names are anyone's to choose in a namespace of their own.
    for sel in ["{pod_labels: {app: checkout}}", "{pod_name: \"checkout-*\"}"] {
        let e = refused(sel);
        assert!(e.contains("need `pod_namespace`") && e.contains("processes[0]"), "{sel}: {e}");
    }
    let e = refused("{cgroup: /x, pod_namespace: payments}");
    assert!(e.contains("give `cgroup` or `pod_uid`/`pod_namespace`"), "{e}");
}

fn merged(spec: &str) -> Merged {
    let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n{spec}");
    let docs = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e:?}"));
    merge(&docs).unwrap_or_else(|e| panic!("{e}")).0
}

#[test]
fn pod_and_container_selectors_are_validated_with_their_place() {
    let refused = |sel: &str| {
        let text = format!("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {{name: t}}\nspec:\n  vendors:\n    - name: s\n      destinations: [{{cidr: 192.0.2.1}}]\n      processes:\n        - {sel}\n");
        match parse("t.yaml", &text) {
            Err(e) => format!("{e:?}"),
            Ok(docs) => merge(&docs).err().map(|e| e.to_string()).unwrap_or_default(),
        }
    };
    let e = refused("{pod_uid: not-a-uid}");
    assert!(e.contains("pod_uid `not-a-uid` is not a pod UID") && e.contains("t.yaml"), "{e}");
    let e = refused("{container: \"\"}");
    assert!(e.contains("empty glob"), "{e}");
    let e = refused("{container: \"3f2a\"}");
    assert!(e.contains("`3f2a*`"), "{e}");
    let e = refused(&format!("{{cgroup: /x, pod_uid: {POD}}}"));
    assert!(e.contains("give `cgroup` or `pod_uid`/`pod_namespace`") && e.contains("processes[0]"), "{e}");
}
