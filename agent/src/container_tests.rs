use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab";
const UID_: &str = "6f1c2d3e_0a1b_4c5d_8e9f_0123456789ab";

fn ident(
    runtime: Option<Runtime>,
    container: bool,
    pod: Option<Qos>,
) -> (Option<Runtime>, Option<String>, Option<String>, Option<Qos>) {
    (runtime, container.then(|| ID.to_owned()), pod.map(|_| UID.to_owned()), pod)
}

fn got(path: &str) -> (Option<Runtime>, Option<String>, Option<String>, Option<Qos>) {
    let i = parse(path);
    (i.runtime, i.container, i.pod_uid, i.qos)
}

#[test]
fn kubernetes_systemd_driver() {
    use Qos::*;
    use Runtime::*;
    for (path, want) in [
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            ident(Some(Containerd), true, Some(Burstable)),
        ),
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
            ident(Some(CriO), true, Some(Burstable)),
        ),
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"),
            ident(Some(Docker), true, Some(Burstable)),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            ident(Some(Containerd), true, Some(Guaranteed)),
        ),
        (
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"),
            ident(Some(CriO), true, Some(BestEffort)),
        ),
        // CRI-O with crun puts the container's processes one level down.
        (
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope/container"),
            ident(Some(CriO), true, Some(BestEffort)),
        ),
        // The pod's own cgroup, and conmon: the pod, no container.
        (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"), ident(None, false, Some(Burstable))),
        (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"),
            ident(None, false, Some(Burstable)),
        ),
        // Another cgroup root (kind: --cgroup-root=/kubelet).
        (
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            ident(Some(Containerd), true, Some(BestEffort)),
        ),
    ] {
        assert_eq!(got(&path), want, "{path}");
    }
}

#[test]
fn kubernetes_cgroupfs_driver() {
    use Qos::*;
    use Runtime::*;
    for (path, want) in [
        (format!("/kubepods/burstable/pod{UID}/{ID}"), ident(Some(Unknown), true, Some(Burstable))),
        (format!("/kubepods/pod{UID}/{ID}"), ident(Some(Unknown), true, Some(Guaranteed))),
        (format!("/kubepods/besteffort/pod{UID}/{ID}"), ident(Some(Unknown), true, Some(BestEffort))),
        (format!("/kubepods/besteffort/pod{UID}/crio-{ID}"), ident(Some(CriO), true, Some(BestEffort))),
        (format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"), ident(None, false, Some(BestEffort))),
        (format!("/kubepods/burstable/pod{UID}"), ident(None, false, Some(Burstable))),
    ] {
        assert_eq!(got(&path), want, "{path}");
    }
    // `pod<uid>` is only a pod under kubepods.
    assert_eq!(got(&format!("/elsewhere/pod{UID}")), ident(None, false, None));
    assert_eq!(parse(&format!("/kubepods/pod{UID}/{ID}")).pod_cgroup.as_deref(), Some(&*format!("/kubepods/pod{UID}")));
}

#[test]
fn docker_podman_containerd_without_kubernetes() {
    use Runtime::*;
    for (path, runtime) in [
        (format!("/system.slice/docker-{ID}.scope"), Docker),
        (format!("/docker/{ID}"), Docker),
        (format!("/machine.slice/libpod-{ID}.scope"), Podman),
        (format!("/machine.slice/libpod-{ID}.scope/container"), Podman),
        (format!("/machine.slice/machine-libpod_pod_abc.slice/libpod-{ID}.scope"), Podman),
        (format!("/libpod_parent/libpod-{ID}"), Podman),
        (format!("/system.slice/nerdctl-{ID}.scope"), Containerd),
        (format!("/system.slice/cri-containerd-{ID}.scope"), Containerd),
        (format!("/default/{ID}"), Containerd),
        (format!("/system.slice/crio-{ID}.scope"), CriO),
    ] {
        assert_eq!(got(&path), ident(Some(runtime), true, None), "{path}");
        assert!(parse(&path).pod_cgroup.is_none());
    }
    // A user's delegated subtree names anything its owner likes: nothing in it is attributed
    // (rootless containers included).
    let rootless = format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
    assert_eq!(got(&rootless), ident(None, false, None), "{rootless}");
    let spoof = format!(
        "/user.slice/user-1000.slice/user@1000.service/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(got(&spoof), ident(None, false, None), "{spoof}");
    // Monitors are not the container.
    for path in [format!("/machine.slice/libpod-conmon-{ID}.scope"), format!("/system.slice/crio-conmon-{ID}.scope")] {
        assert_eq!(got(&path), ident(None, false, None), "{path}");
    }
}

#[test]
fn nested_prefixes_match_anywhere() {
    let p = format!(
        "/ea-test-123-0/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(got(&p), ident(Some(Runtime::Containerd), true, Some(Qos::Burstable)));
    assert_eq!(
        parse(&p).pod_cgroup.as_deref(),
        Some(&*format!("/ea-test-123-0/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"))
    );
    // Below a container, its processes name the cgroups: the outer container wins, so a
    // container cannot claim a pod's or another container's identity by creating look-alikes
    // in its own cgroup namespace (kind's pods get the node's container).
    let outer = "f".repeat(64);
    let kind = format!("/system.slice/docker-{outer}.scope/kubepods/burstable/pod{UID}/{ID}");
    assert_eq!(parse(&kind).container.as_deref(), Some(&*outer));
    assert_eq!(parse(&kind).pod_uid, None);
    let node = format!("/system.slice/docker-{outer}.scope/system.slice/kubelet.service");
    assert_eq!(parse(&node).container.as_deref(), Some(&*outer));
    let inner = format!("/system.slice/docker-{outer}.scope/docker/{ID}");
    assert_eq!(parse(&inner).container.as_deref(), Some(&*outer));
    // Inside a pod, a container's look-alike of another pod keeps the real pod and container.
    let inpod = format!(
        "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/kubepods-besteffort-pod{}.slice/cri-containerd-{outer}.scope",
        UID_.replace('6', "7")
    );
    assert_eq!(got(&inpod), ident(Some(Runtime::Containerd), true, Some(Qos::Guaranteed)));
}

#[test]
fn malformed_ids_are_not_containers() {
    let short = &ID[..63];
    let upper = ID.to_ascii_uppercase();
    for path in [
        format!("/system.slice/docker-{short}.scope"),
        format!("/system.slice/docker-{ID}0.scope"),
        format!("/system.slice/docker-{}g.scope", &ID[..63]),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", &UID_[..35]),
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot-a-uid.slice".to_owned(),
        format!("/kubepods/burstable/pod{}x", &UID[..35]),
        format!("/{ID}"),
        "/user.slice/user-0.slice/session-1.scope".to_owned(),
        "/system.slice/docker.service".to_owned(),
        "/".to_owned(),
        String::new(),
    ] {
        assert!(parse(&path).is_empty(), "{path}: {:?}", parse(&path));
    }
    // Upper-case hex is accepted and reported in lower case.
    assert_eq!(parse(&format!("/docker/{upper}")).container.as_deref(), Some(ID));
    // A uid mixing `-` and `_` is not one.
    assert_eq!(canonical_uid("6f1c2d3e-0a1b_4c5d-8e9f-0123456789ab"), None);
    assert_eq!(canonical_uid(UID_).as_deref(), Some(UID));
}

#[test]
fn own_names_the_last_component_only() {
    assert!(matches!(
        own(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")),
        Some(Component::Pod { qos: Qos::Guaranteed, .. })
    ));
    assert!(matches!(own(&format!("/docker/{ID}")), Some(Component::Container { runtime: Runtime::Docker, .. })));
    assert_eq!(own(&format!("/docker/{ID}/sub")), None);
    assert_eq!(own(&format!("/machine.slice/libpod-conmon-{ID}.scope")), Some(Component::Monitor));
}

#[test]
fn selector_values() {
    assert!("".parse::<IdGlob>().is_err());
    assert!("3f2a".parse::<IdGlob>().is_err(), "a short id without a glob");
    assert!("3f2a*".parse::<IdGlob>().is_ok());
    assert!("xyz*".parse::<IdGlob>().is_err());
    assert!("[0-3]*".parse::<IdGlob>().is_ok());
    assert!("[*".parse::<IdGlob>().is_err());
    let g: IdGlob = "0123*".parse().expect("glob");
    assert!(g.matches(ID));
    assert!(!g.matches(&"f".repeat(64)));
    let full: IdGlob = ID.to_ascii_uppercase().parse().expect("full id");
    assert!(full.matches(ID));
    assert_eq!(UID.parse::<PodUid>().map(|p| p.0), Ok(UID.to_owned()));
    assert!(UID_.parse::<PodUid>().is_err(), "the escaped form is the cgroup's, not the pod's");
    assert!("abc".parse::<PodUid>().is_err());
    assert_eq!(UID.to_ascii_uppercase().parse::<PodUid>().map(|p| p.0), Ok(UID.to_owned()));
}

#[test]
fn walk_finds_pods_and_containers() {
    let dir = std::env::temp_dir().join(format!("ea-container-{}", std::process::id()));
    let pod = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
    for sub in [
        format!("{pod}/cri-containerd-{ID}.scope"),
        format!("{pod}/crio-conmon-{ID}.scope"),
        "system.slice/x.service".into(),
        // Look-alikes a container or a user could create: not found.
        format!("{pod}/cri-containerd-{ID}.scope/kubepods-besteffort-pod{}.slice", UID_.replace('6', "7")),
        format!(
            "user.slice/user@1000.service/kubepods-besteffort-pod{}.slice/docker-{}.scope",
            UID_.replace('6', "8"),
            "e".repeat(64)
        ),
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let found = walk(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [format!("/{pod}"), format!("/{pod}/cri-containerd-{ID}.scope")]);
    assert_eq!(found[0].depth, 3);
    assert_eq!(found[1].pod_uid.as_deref(), Some(UID));
    assert_eq!(parents(&found), ["/kubepods.slice/kubepods-burstable.slice".to_owned(), format!("/{pod}")]);
}
