//! The pod list the Kubernetes API (`/api/v1/pods`) and the kubelet (`/pods`) both answer with
//! (a `PodList`), reduced to what events and selectors use: each pod's UID, namespace, name and
//! labels. Everything else in a pod (its spec, its status) is skipped unread by serde.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// A node runs at most a few hundred pods (the kubelet's default limit is 110): a list much
/// longer than this means the node filter is missing (the whole cluster's pods) and is refused.
/// Labels are all kept (selectors may name any of them): the body's size bounds them.
pub const MAX_PODS: usize = 5_000;

/// What the agent knows of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The pods of this node by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIndex {
    pub by_uid: HashMap<String, std::sync::Arc<PodMeta>>,
    /// Pods in the list (a static pod is in `by_uid` twice: its node UID and its mirror's).
    pub pods: usize,
}

#[derive(Deserialize)]
struct List {
    kind: Option<String>,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Meta {
    uid: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Deserialize, Default)]
struct Annotations {
    /// A static pod (a manifest on the node) has its own UID on the node, which names its
    /// cgroup; the API server shows a mirror of it under another UID, with the node's in this.
    #[serde(rename = "kubernetes.io/config.mirror")]
    mirror: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("not a pod list: {0}")]
    NotAList(String),
    #[error(
        "{0} pods, more than the {MAX_PODS} a node can run: is the node filter (kubernetes.node, NODE_NAME) right?"
    )]
    TooMany(usize),
}

/// Parses a `PodList`. Pods whose UID is not one (or whose metadata is incomplete) are skipped:
/// they could never match a cgroup. A mirror pod's node UID (see [`Annotations`]) is an alias
/// only: it never takes the place of a pod's own UID, and a UID two pods claim as an alias is
/// dropped — an annotation is whatever the pod's author wrote.
pub fn parse(body: &[u8]) -> Result<PodIndex, ListError> {
    let list: List = serde_json::from_slice(body).map_err(|e| ListError::NotAList(e.to_string()))?;
    if list.kind.as_deref().is_some_and(|k| k != "PodList") {
        return Err(ListError::NotAList(format!("kind is `{}`", list.kind.unwrap_or_default())));
    }
    if list.items.len() > MAX_PODS {
        return Err(ListError::TooMany(list.items.len()));
    }
    let uid_of = |s: &str| crate::container::canonical_uid(s).filter(|_| !s.contains('_'));
    let mut by_uid = HashMap::with_capacity(list.items.len());
    let mut aliases: HashMap<String, Option<std::sync::Arc<PodMeta>>> = HashMap::new();
    let mut pods = 0;
    for Item { metadata: m } in list.items {
        let (Some(uid), Some(namespace), Some(name)) = (m.uid.as_deref().and_then(uid_of), m.namespace, m.name) else {
            continue;
        };
        let meta = std::sync::Arc::new(PodMeta { namespace, name, labels: m.labels });
        pods += 1;
        if let Some(alias) = m.annotations.mirror.as_deref().and_then(uid_of) {
            aliases.entry(alias).and_modify(|a| *a = None).or_insert_with(|| Some(meta.clone()));
        }
        by_uid.insert(uid, meta);
    }
    for (alias, meta) in aliases {
        if let (Some(meta), false) = (meta, by_uid.contains_key(&alias)) {
            by_uid.insert(alias, meta);
        }
    }
    Ok(PodIndex { by_uid, pods })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab";
    const B: &str = "11111111-2222-4333-8444-555555555555";

    #[test]
    fn a_pod_list_is_indexed_by_uid_and_a_static_pod_by_its_node_uid_too() {
        let body = format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"1"}},"items":[
              {{"metadata":{{"uid":"{A}","namespace":"payments","name":"checkout-7d9f","labels":{{"app":"checkout"}}}},"spec":{{"nodeName":"n1"}},"status":{{"phase":"Running"}}}},
              {{"metadata":{{"uid":"0a0a0a0a-0000-4000-8000-000000000000","namespace":"kube-system","name":"etcd-n1",
                 "annotations":{{"kubernetes.io/config.mirror":"{B}","other":"x"}}}}}},
              {{"metadata":{{"uid":"not-a-uid","namespace":"x","name":"y"}}}}]}}"#
        );
        let idx = parse(body.as_bytes()).expect("list");
        let a = &idx.by_uid[A];
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("payments", "checkout-7d9f"));
        assert_eq!(a.labels.get("app").map(String::as_str), Some("checkout"));
        assert_eq!(idx.by_uid[B].name, "etcd-n1", "a static pod is found by the UID its cgroup has");
        assert_eq!(idx.by_uid.len(), 3, "the mirror UID, the node UID and pod A; not the bad UID");
        assert_eq!(idx.pods, 2);
    }

    #[test]
    fn a_mirror_annotation_never_takes_another_pods_uid() {
        let item = |uid: &str, ns: &str, mirror: Option<&str>| {
            let ann =
                mirror.map_or(String::new(), |m| format!(r#","annotations":{{"kubernetes.io/config.mirror":"{m}"}}"#));
            format!(r#"{{"metadata":{{"uid":"{uid}","namespace":"{ns}","name":"p"{ann}}}}}"#)
        };
        let c = "22222222-2222-4222-8222-222222222222";
        let d = "33333333-3333-4333-8333-333333333333";
        let e = "44444444-4444-4444-8444-444444444444";
        let body = format!(
            r#"{{"kind":"PodList","items":[{},{},{},{},{}]}}"#,
            item(A, "payments", None),
            item(B, "zzz", Some(A)),
            item(c, "x", Some(e)),
            item(d, "y", Some(e)),
            r#"{"metadata":{"uid":"55555555-5555-4555-8555-555555555555","name":"no-namespace"}}"#
        );
        let idx = parse(body.as_bytes()).expect("an incomplete item is skipped, not fatal");
        assert_eq!(idx.by_uid[A].namespace, "payments", "an alias never replaces a pod's own UID");
        assert!(!idx.by_uid.contains_key(e), "a UID two pods claim is nobody's");
        assert_eq!(idx.pods, 4);
    }

    #[test]
    fn other_objects_and_lists_too_long_are_refused() {
        assert!(matches!(parse(br#"{"kind":"Status","status":"Failure"}"#), Err(ListError::NotAList(_))));
        assert!(matches!(parse(b"<html>"), Err(ListError::NotAList(_))));
        let items: Vec<String> =
            (0..=MAX_PODS).map(|i| format!(r#"{{"metadata":{{"uid":"{i}","namespace":"n","name":"p"}}}}"#)).collect();
        let body = format!(r#"{{"kind":"PodList","items":[{}]}}"#, items.join(","));
        assert_eq!(parse(body.as_bytes()), Err(ListError::TooMany(MAX_PODS + 1)));
    }

    #[test]
    fn every_label_is_kept() {
        let labels: Vec<String> = (0..200).map(|i| format!(r#""k{i:03}":"v""#)).collect();
        let body = format!(
            r#"{{"kind":"PodList","items":[{{"metadata":{{"uid":"{A}","namespace":"n","name":"p","labels":{{{}}}}}}}]}}"#,
            labels.join(",")
        );
        assert_eq!(parse(body.as_bytes()).expect("list").by_uid[A].labels.len(), 200);
    }
}
