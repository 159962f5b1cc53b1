//! Container attribution: what a cgroup path says about the container and the Kubernetes pod a
//! process runs in. Runtimes name their cgroups after the container id, and the kubelet names
//! pod cgroups after the pod UID and its QoS class, under either cgroup driver:
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | Docker | `docker-<id>.scope` | `/docker/<id>` |
//! | containerd | `cri-containerd-<id>.scope`, `nerdctl-<id>.scope` | `/<namespace>/<id>` |
//! | CRI-O | `crio-<id>.scope` | `crio-<id>` |
//! | Podman | `libpod-<id>.scope` | `/libpod_parent/libpod-<id>` |
//! | pod | `kubepods[-<qos>]-pod<uid with _>.slice` | `/kubepods[/<qos>]/pod<uid>` |
//!
//! Components are matched wherever they are in the path: the agent may itself run in a
//! container whose cgroup namespace hides the upper levels, so no fixed prefix can be relied on.
//! But a name is only trusted where its owner could not have chosen it: below a container's
//! cgroup (which a container with a writable cgroup namespace controls) and below a user's
//! delegated subtree (`user@UID.service`, which that user controls) anyone could create a
//! look-alike `kubepods-pod<victim>.slice/cri-containerd-<victim>.scope`. So the outermost
//! container wins, and nothing in a user's subtree is attributed (rootless containers are not;
//! nor are pods of a Kubernetes nested in a container, such as kind: they get the node's
//! container). Parsing is pure and allocation-light; the enricher caches it per cgroup id.

use std::{fmt, path::Path};

/// The container runtime that named a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare container id under a pod (cgroupfs driver): containerd, CRI-O via cri-dockerd and
    /// Docker all name it that way.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// A pod's Kubernetes QoS class, from the cgroup the kubelet put it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::BestEffort => "besteffort",
        }
    }
}

/// What a cgroup path says about its container and pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub runtime: Option<Runtime>,
    /// 64 lowercase hex digits.
    pub container: Option<String>,
    /// Canonical dashed UUID, lowercase.
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
    /// The pod's own cgroup, a prefix of the path parsed (its containers are below it).
    pub pod_cgroup: Option<String>,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        self.container.is_none() && self.pod_uid.is_none()
    }
}

/// What one path component is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Pod {
        uid: String,
        qos: Qos,
    },
    Container {
        runtime: Runtime,
        id: String,
    },
    /// A runtime's monitor process (conmon of CRI-O and Podman): it belongs to the pod, but it
    /// is not the container, whose id it carries.
    Monitor,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// A pod UID, dashed (`-`) or as the systemd driver escapes it (`_`), in canonical form.
pub fn canonical_uid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let sep = b[8];
    if sep != b'-' && sep != b'_' {
        return None;
    }
    let ok = b.iter().enumerate().all(|(i, &c)| match i {
        8 | 13 | 18 | 23 => c == sep,
        _ => c.is_ascii_hexdigit(),
    });
    ok.then(|| s.replace('_', "-").to_ascii_lowercase())
}

/// Classifies component `name`; `parent` is the component above it (`None` at the top), as the
/// cgroupfs layouts only say what a directory is through where it sits.
pub fn component(parent: Option<&str>, name: &str) -> Option<Component> {
    if let Some(stem) = name.strip_suffix(".slice") {
        // systemd driver: `kubepods-pod<uid>.slice`, `kubepods-burstable-pod<uid>.slice`, with any
        // slice prefix before (`kubelet-kubepods-...` under another cgroup root).
        let (head, uid) = stem.rsplit_once("-pod")?;
        let qos = if head.ends_with("kubepods-burstable") {
            Qos::Burstable
        } else if head.ends_with("kubepods-besteffort") {
            Qos::BestEffort
        } else if head.ends_with("kubepods") {
            Qos::Guaranteed
        } else {
            return None;
        };
        return canonical_uid(uid).map(|uid| Component::Pod { uid, qos });
    }
    if let Some(uid) = name.strip_prefix("pod") {
        // cgroupfs driver: `/kubepods/pod<uid>`, `/kubepods/<qos>/pod<uid>`.
        let qos = match parent {
            Some("kubepods") => Qos::Guaranteed,
            Some("burstable") => Qos::Burstable,
            Some("besteffort") => Qos::BestEffort,
            _ => return None,
        };
        return canonical_uid(uid).map(|uid| Component::Pod { uid, qos });
    }
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("docker-", Runtime::Docker),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ] {
        let Some(rest) = stem.strip_prefix(prefix) else { continue };
        if let Some(id) = rest.strip_prefix("conmon-") {
            return is_container_id(id).then_some(Component::Monitor);
        }
        return is_container_id(rest).then(|| Component::Container { runtime, id: rest.to_ascii_lowercase() });
    }
    // A bare id: cgroupfs layouts, where the parent says who made it.
    if !is_container_id(name) {
        return None;
    }
    let runtime = match parent {
        Some("docker" | "moby") => Runtime::Docker,
        Some(p) if p.starts_with("pod") && canonical_uid(&p[3..]).is_some() => Runtime::Unknown,
        Some(p) if p.ends_with(".slice") && component(None, p).is_some() => Runtime::Unknown,
        // containerd's cgroupfs layout is `/<namespace>/<id>` (`/default/<id>` for nerdctl).
        Some(_) => Runtime::Containerd,
        None => return None,
    };
    Some(Component::Container { runtime, id: name.to_ascii_lowercase() })
}

/// The identity of a cgroup path (relative to the cgroup2 mount, or any suffix of it): the
/// innermost container and the pod it is in. A monitor (conmon) cgroup has its pod but no
/// container.
pub fn parse(path: &str) -> Identity {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut id = Identity::default();
    let mut pod_at = None;
    for (i, name) in comps.iter().enumerate() {
        // A user's delegated subtree: the user names everything below it.
        if delegated(name) {
            return Identity::default();
        }
        let parent = i.checked_sub(1).map(|p| comps[p]);
        match component(parent, name) {
            // The first pod only, and not below a container (see the module documentation).
            Some(Component::Pod { uid, qos }) if id.pod_uid.is_none() => {
                id = Identity { pod_uid: Some(uid), qos: Some(qos), ..Identity::default() };
                pod_at = Some(i);
            }
            // The outermost container is the process's; whatever is below it, its own processes
            // named.
            Some(Component::Container { runtime, id: cid }) => {
                id.runtime = Some(runtime);
                id.container = Some(cid);
                break;
            }
            // A runtime's monitor (conmon) is no container, and has none below it.
            Some(Component::Monitor) => break,
            _ => {}
        }
    }
    if let Some(p) = pod_at {
        id.pod_cgroup = Some(format!("/{}", comps[..=p].join("/")));
    }
    id
}

/// `user@UID.service`: systemd's delegation of a cgroup subtree to a user.
fn delegated(name: &str) -> bool {
    name.strip_prefix("user@")
        .and_then(|r| r.strip_suffix(".service"))
        .is_some_and(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
}

/// The identity that the last component of `path` introduces: a pod or container cgroup itself,
/// not one below it. What a `pod_uid` or `container` selector can name.
pub fn own(path: &str) -> Option<Component> {
    let mut it = path.rsplit('/').filter(|c| !c.is_empty());
    let name = it.next()?;
    component(it.next(), name)
}

/// A `container` selector: a full id or a glob over ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdGlob(pub String);

impl std::str::FromStr for IdGlob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("container: an empty glob matches no container; give an id or a glob such as `3f2a*`".into());
        }
        let globby = s.contains(['*', '?', '[']);
        if !globby && !is_container_id(s) {
            return Err(format!(
                "container `{s}` is not a full container id (64 hex digits); for a short id write a glob such as `{s}*`"
            ));
        }
        if !s.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, '*' | '?' | '[' | ']' | '!' | '-')) {
            return Err(format!("container `{s}`: a container id has hex digits only (globs: `*`, `?`, `[...]`)"));
        }
        glob::Pattern::new(s).map_err(|e| format!("container `{s}` is not a valid glob: {e}"))?;
        Ok(IdGlob(s.to_ascii_lowercase()))
    }
}

impl IdGlob {
    pub fn matches(&self, id: &str) -> bool {
        glob::Pattern::new(&self.0).is_ok_and(|p| p.matches(id))
    }
}

impl fmt::Display for IdGlob {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pod UID as a selector names it: dashed, 36 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodUid(pub String);

impl std::str::FromStr for PodUid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match canonical_uid(s) {
            Some(u) if !s.contains('_') => Ok(PodUid(u)),
            _ => Err(format!(
                "pod_uid `{s}` is not a pod UID: 36 characters, dashed, such as 6f1c2d3e-0000-4a5b-8c9d-0123456789ab (kubectl get pod NAME -o jsonpath='{{.metadata.uid}}')"
            )),
        }
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pod or container cgroup found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to the cgroup2 mount, with a leading `/`.
    pub path: String,
    /// Inode of its directory: the cgroup id.
    pub id: u64,
    /// Components below the mount.
    pub depth: u32,
    /// What its own last component is.
    pub what: Component,
    /// The pod it is in (itself for a pod).
    pub pod_uid: Option<String>,
}

/// Upper bound on directories visited per walk, as for the enricher's cgroup names.
const MAX_VISITED: usize = 65_536;

/// Every pod and container cgroup under `mount`, in path order.
pub fn walk(mount: &Path) -> Vec<Found> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack = vec![(mount.to_path_buf(), String::new(), 0u32)];
    let mut visited = 0;
    while let Some((dir, rel, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_VISITED {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
            // Nothing below a user's delegated subtree is trusted, nor walked (its owner could
            // create enough cgroups to exhaust the walk).
            if delegated(&name) {
                continue;
            }
            let child = format!("{rel}/{name}");
            let mut descend = true;
            if let Some(what) = own(&child) {
                // Only where the full path gives the cgroup this very identity: a look-alike
                // below a container (or a second pod level) is not one.
                let full = parse(&child);
                let trusted = match &what {
                    Component::Pod { uid, .. } => full.pod_uid.as_ref() == Some(uid) && full.container.is_none(),
                    Component::Container { id, .. } => full.container.as_ref() == Some(id),
                    Component::Monitor => false,
                };
                // Below a container nothing is trusted: not walked either.
                descend = !matches!(what, Component::Container { .. } | Component::Monitor);
                if trusted {
                    if let Ok(m) = e.metadata() {
                        out.push(Found {
                            path: child.clone(),
                            id: m.ino(),
                            depth: depth + 1,
                            what,
                            pod_uid: full.pod_uid,
                        });
                    }
                }
            }
            if descend {
                stack.push((e.path(), child, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Directories where pod and container cgroups appear: the parent of each found, and each pod
/// (its containers come and go). Watching them makes a new container's selector resolve at once.
pub fn parents(found: &[Found]) -> Vec<String> {
    let mut out: Vec<String> = found
        .iter()
        .flat_map(|f| {
            let parent = f.path.rsplit_once('/').map(|(p, _)| if p.is_empty() { "/".to_owned() } else { p.to_owned() });
            let pod = matches!(f.what, Component::Pod { .. }).then(|| f.path.clone());
            parent.into_iter().chain(pod)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
