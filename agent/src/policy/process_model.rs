//! Process selectors as a policy writes them: which processes a vendor's rules are for, by
//! executable, task name, user, cgroup, and container or Kubernetes pod.

use std::{collections::BTreeMap, str::FromStr};

use serde::Deserialize;

pub use crate::container::{IdGlob, PodUid};

use super::from_str_de::deserialize_from_str;

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
    /// A Kubernetes pod, by UID: every container of the pod (its cgroup is found on this host,
    /// and found again when the pod is recreated).
    #[serde(default)]
    pub pod_uid: Option<PodUid>,
    /// Containers by id: a full 64-hex id or a glob (`3f2a*`). With `pod_uid` or the other
    /// `pod_` fields, only those pods'.
    #[serde(default)]
    pub container: Option<IdGlob>,
    /// Pods of this Kubernetes namespace. Like `pod_name` and `pod_labels`, it needs the pods'
    /// metadata (config `kubernetes.pods`): the pods of this node are matched by UID to their
    /// cgroups, so the kernel checks the cgroup as for `pod_uid`.
    #[serde(default)]
    pub pod_namespace: Option<K8sName>,
    /// Pods by name: exact or a glob (`checkout-*`: a Deployment's pods have generated suffixes).
    #[serde(default)]
    pub pod_name: Option<PodNameGlob>,
    /// Pods carrying every one of these labels with these values (as `matchLabels`).
    #[serde(default)]
    pub pod_labels: Option<Labels>,
    /// Only a process whose dynamic loader was not steered by its environment at exec
    /// (`LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH`), that was not traced (ptrace) since, and
    /// whose exec the agent saw: no code but the executable's (and its libraries') runs in it.
    #[serde(default)]
    pub untampered: bool,
}

impl ProcessSelector {
    /// Names pods (by UID or by metadata): matched through the pods' cgroups.
    pub fn names_pod(&self) -> bool {
        self.pod_uid.is_some() || self.needs_pod_metadata()
    }

    /// Names pods by what only their metadata says (namespace, name, labels).
    pub fn needs_pod_metadata(&self) -> bool {
        self.pod_namespace.is_some() || self.pod_name.is_some() || self.pod_labels.is_some()
    }

    /// Whether a pod's metadata satisfies the `pod_namespace`, `pod_name` and `pod_labels` given.
    pub fn pod_matches(&self, meta: &crate::kube::PodMeta) -> bool {
        self.pod_namespace.as_ref().is_none_or(|n| n.0 == meta.namespace)
            && self.pod_name.as_ref().is_none_or(|g| g.matches(&meta.name))
            && self.pod_labels.as_ref().is_none_or(|l| l.0.iter().all(|(k, v)| meta.labels.get(k) == Some(v)))
    }

    /// The pods this selector names, for messages: `namespace payments, name checkout-*, labels app=web`.
    pub fn pod_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.pod_uid {
            parts.push(format!("uid {u}"));
        }
        if let Some(n) = &self.pod_namespace {
            parts.push(format!("namespace {}", n.0));
        }
        if let Some(n) = &self.pod_name {
            parts.push(format!("name {}", n.0));
        }
        if let Some(l) = &self.pod_labels {
            let kv: Vec<String> = l.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("labels {}", kv.join(",")));
        }
        parts.join(", ")
    }
}

/// A namespace (or other) name as Kubernetes writes it: a DNS label, at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct K8sName(pub String);

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl FromStr for K8sName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !is_dns_label(s) {
            return Err(format!(
                "pod_namespace `{s}` is not a namespace name (lowercase letters, digits and `-`, at most 63), so it could never match"
            ));
        }
        Ok(K8sName(s.to_owned()))
    }
}

/// A pod name or a glob over pod names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodNameGlob(pub String);

impl FromStr for PodNameGlob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = |b: u8| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'*' | b'?' | b'[' | b']' | b'!')
        };
        if s.is_empty() || s.len() > 253 || !s.bytes().all(ok) {
            return Err(format!(
                "pod_name `{s}`: a pod name has lowercase letters, digits, `-` and `.` (globs: `*`, `?`, `[...]`), at most 253"
            ));
        }
        glob::Pattern::new(s).map_err(|e| format!("pod_name `{s}` is not a valid glob: {e}"))?;
        Ok(PodNameGlob(s.to_owned()))
    }
}

impl PodNameGlob {
    pub fn matches(&self, name: &str) -> bool {
        glob::Pattern::new(&self.0).is_ok_and(|p| p.matches(name))
    }
}

/// `pod_labels`: label keys and values as Kubernetes allows them, at least one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = BTreeMap::<String, String>::deserialize(d)?;
        if map.is_empty() {
            return Err(D::Error::custom("pod_labels: an empty map would match every pod; name at least one label"));
        }
        for (k, v) in &map {
            label_key(k).map_err(D::Error::custom)?;
            label_value(k, v).map_err(D::Error::custom)?;
        }
        Ok(Labels(map))
    }
}

/// `[prefix/]name`: the prefix a DNS subdomain (at most 253), the name at most 63 characters.
fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = k.rsplit_once('/').map_or((None, k), |(p, n)| (Some(p), n));
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    let prefix_ok = |p: &str| p.len() <= 253 && p.split('.').all(is_dns_label);
    if name_ok(name) && prefix.is_none_or(prefix_ok) {
        Ok(())
    } else {
        Err(format!(
            "pod_labels: `{k}` is not a label key ([prefix/]name; the name at most 63 letters, digits, `-`, `_`, `.`)"
        ))
    }
}

fn label_value(k: &str, v: &str) -> Result<(), String> {
    let ok = v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (v.is_empty()
            || (v.as_bytes()[0].is_ascii_alphanumeric() && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pod_labels: the value `{v}` of `{k}` is not a label value (at most 63 letters, digits, `-`, `_`, `.`)"
        ))
    }
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

deserialize_from_str!(ExePattern, "an absolute executable path (globs allowed)");
deserialize_from_str!(Comm, "a task name");
deserialize_from_str!(CgroupPrefix, "a cgroup path");
deserialize_from_str!(PodUid, "a pod UID");
deserialize_from_str!(IdGlob, "a container id or glob");
deserialize_from_str!(K8sName, "a namespace name");
deserialize_from_str!(PodNameGlob, "a pod name or glob");
