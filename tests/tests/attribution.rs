//! Kernel tests of container attribution: cgroups shaped like each runtime's and the kubelet's
//! (created below the test's own cgroup), processes run inside them, and what events say and
//! `pod_uid`/`container` selectors decide about them.

use std::{process::Command, time::Duration};

use egress_agent_tests::{policy, py, wait_for, TestEnv, ADDR4};
use serde_json::Value;

const WEB: u16 = 8080;

/// A container id made of one repeated hex digit, distinct per test shape.
fn cid(d: char) -> String {
    d.to_string().repeat(64)
}

/// A pod UID ending in `n`, and its systemd-escaped form.
fn pod(n: u8) -> (String, String) {
    let uid = format!("6f1c2d3e-0a1b-4c5d-8e9f-0000000000{n:02x}");
    let escaped = uid.replace('-', "_");
    (uid, escaped)
}

/// Runs the test client (one TCP attempt to ADDR4:WEB) in the sub-cgroup `rel`.
fn connect_from(env: &TestEnv, rel: &str) -> Value {
    let out = env
        .in_sub_cgroup(rel, "python3", &[&py("client.py"), "tcp", ADDR4, &WEB.to_string()])
        .output()
        .expect("run client");
    assert!(out.status.success(), "client in {rel}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("client in {rel}: {out:?}: {e}"))
}

fn burstable_pod(escaped: &str) -> String {
    format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{escaped}.slice")
}

/// A cgroup below the test's, and the runtime, container, pod UID and QoS its events carry.
type Shape<'a> = (String, Option<&'a str>, Option<String>, Option<&'a str>, Option<&'a str>);

#[test]
fn events_name_the_runtime_container_pod_and_qos_of_each_cgroup_shape() {
    let mut env = TestEnv::new("attrib");
    env.server("tcp", ADDR4, WEB);
    let (u1, e1) = pod(1);
    let (u2, e2) = pod(2);
    let (u3, e3) = pod(3);
    let shapes: Vec<Shape> = vec![
        // Kubernetes, systemd driver.
        (
            format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('1')),
            Some("containerd"),
            Some(cid('1')),
            Some(&u1),
            Some("burstable"),
        ),
        (
            format!("kubepods.slice/kubepods-pod{e2}.slice/crio-{}.scope", cid('2')),
            Some("cri-o"),
            Some(cid('2')),
            Some(&u2),
            Some("guaranteed"),
        ),
        (
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{e3}.slice/docker-{}.scope",
                cid('3')
            ),
            Some("docker"),
            Some(cid('3')),
            Some(&u3),
            Some("besteffort"),
        ),
        // conmon belongs to the pod, and is not the container.
        (
            format!("kubepods.slice/kubepods-pod{e2}.slice/crio-conmon-{}.scope", cid('2')),
            None,
            None,
            Some(&u2),
            Some("guaranteed"),
        ),
        // Kubernetes, cgroupfs driver.
        (
            format!("kubepods/burstable/pod{u1}/{}", cid('4')),
            Some("unknown"),
            Some(cid('4')),
            Some(&u1),
            Some("burstable"),
        ),
        (format!("kubepods/pod{u2}/crio-{}", cid('5')), Some("cri-o"), Some(cid('5')), Some(&u2), Some("guaranteed")),
        (
            format!("kubepods/besteffort/pod{u3}/{}", cid('6')),
            Some("unknown"),
            Some(cid('6')),
            Some(&u3),
            Some("besteffort"),
        ),
        // Without Kubernetes.
        (format!("system.slice/docker-{}.scope", cid('7')), Some("docker"), Some(cid('7')), None, None),
        (format!("docker/{}", cid('8')), Some("docker"), Some(cid('8')), None, None),
        (format!("machine.slice/libpod-{}.scope", cid('9')), Some("podman"), Some(cid('9')), None, None),
        // A user's delegated subtree names what its owner likes: not attributed (rootless
        // containers included), nor a look-alike of a pod there.
        (format!("user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{}.scope", cid('a')), None, None, None, None),
        (
            format!(
                "user.slice/user-1000.slice/user@1000.service/kubepods-besteffort-pod{e3}.slice/cri-containerd-{}.scope",
                cid('e')
            ),
            None,
            None,
            None,
            None,
        ),
        // Below a container, its processes name the cgroups: a look-alike pod there keeps the
        // outer container's identity.
        (
            format!("system.slice/docker-{}.scope/kubepods-besteffort-pod{e3}.slice/cri-containerd-{}.scope", cid('f'), cid('e')),
            Some("docker"),
            Some(cid('f')),
            None,
            None,
        ),
        (format!("libpod_parent/libpod-{}", cid('b')), Some("podman"), Some(cid('b')), None, None),
        (format!("machine.slice/libpod-conmon-{}.scope", cid('9')), None, None, None, None),
        (format!("system.slice/nerdctl-{}.scope", cid('c')), Some("containerd"), Some(cid('c')), None, None),
        (format!("default/{}", cid('d')), Some("containerd"), Some(cid('d')), None, None),
    ];
    for (rel, ..) in &shapes {
        env.sub_cgroup(rel);
    }
    let agent = env.agent(&policy("  mode: monitor\n  default: allow\n"));
    for (rel, runtime, container, pod_uid, qos) in &shapes {
        let r = connect_from(&env, rel);
        assert_eq!(r["ok"], true, "{rel}: {r}");
        let pid = r["pid"].as_u64().expect("pid");
        let ev = agent.event_of(pid, ADDR4, WEB);
        let want = format!("/{}/{rel}", env.cgroup.file_name().expect("name").to_string_lossy());
        assert!(ev["cgroup"].as_str().is_some_and(|c| c.ends_with(&want)), "{rel}: {ev}");
        assert_eq!(ev["container"].as_str(), container.as_deref(), "{rel}: {ev}");
        assert_eq!(ev["container_runtime"].as_str(), *runtime, "{rel}: {ev}");
        assert_eq!(ev["pod_uid"].as_str(), *pod_uid, "{rel}: {ev}");
        assert_eq!(ev["pod_qos"].as_str(), *qos, "{rel}: {ev}");
    }
    // Outside any container: the fields are there, and null.
    let r = env.client("tcp", ADDR4, WEB);
    let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    for f in ["container", "container_runtime", "pod_uid", "pod_qos"] {
        assert!(ev.get(f).is_some_and(Value::is_null), "{f}: {ev}");
    }
}

/// Vendor `web` on ADDR4:WEB, in enforce mode with default deny, reserved to `selector`.
fn reserved_to(selector: &str) -> String {
    policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes: [{selector}]\n"
    ))
}

#[test]
fn a_pod_uid_selector_allows_every_container_of_that_pod_only() {
    let mut env = TestEnv::new("attrib-pod");
    env.server("tcp", ADDR4, WEB);
    let (u1, e1) = pod(1);
    let (_, e2) = pod(2);
    let a = format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('a'));
    let b = format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('b'));
    let other = format!("{}/cri-containerd-{}.scope", burstable_pod(&e2), cid('c'));
    for rel in [&a, &b, &other] {
        env.sub_cgroup(rel);
    }
    let agent = env.agent_with(&reserved_to(&format!("{{pod_uid: {u1}}}")), &["--metrics", METRICS]);
    assert_eq!(connect_from(&env, &a)["ok"], true, "{}", agent.log());
    assert_eq!(connect_from(&env, &b)["ok"], true, "{}", agent.log());
    let r = connect_from(&env, &other);
    assert_eq!(r["ok"], false, "a container of another pod: {r}");
    let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
    // `explain --pid` names the container and pod, and decides as the kernel did.
    let explain = |rel: &str| {
        let mut held = env.in_sub_cgroup(rel, "sleep", &["30"]).spawn().expect("sleep");
        // The shell writes its pid to cgroup.procs, then becomes `ip`, then `sleep`.
        let (cg, comm) = (format!("/proc/{}/cgroup", held.id()), format!("/proc/{}/comm", held.id()));
        wait_for(
            Duration::from_secs(5),
            || {
                std::fs::read_to_string(&cg).is_ok_and(|c| c.contains(rel))
                    && std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
            },
            || format!("sleep did not start in {rel}"),
        );
        let out = Command::new(egress_agent_tests::agent_bin())
            .args(["explain", "--policy"])
            .arg(env.path("policy.yaml"))
            .args(["--pid", &held.id().to_string(), "--dst", &format!("{ADDR4}:{WEB}")])
            .output()
            .expect("explain");
        let _ = held.kill();
        let _ = held.wait();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = explain(&a);
    assert!(said.contains(&format!("container {} (containerd), pod_uid {u1} (qos burstable)", cid('a'))), "{said}");
    assert!(said.contains("allow: allowed by vendor/web"), "{said}");
    let said = explain(&other);
    assert!(said.contains("deny: vendor/web reserves this destination"), "{said}");
    // Counted per pod.
    let (u2, _) = pod(2);
    let want = [
        format!("egress_pod_connections_total{{pod_uid=\"{u1}\",verdict=\"allow\"}} 2"),
        format!("egress_pod_connections_total{{pod_uid=\"{u2}\",verdict=\"deny\"}} 1"),
    ];
    let metrics = || {
        let out = Command::new("curl").args(["-sf", &format!("http://{METRICS}/metrics")]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(
        Duration::from_secs(5),
        || want.iter().all(|w| metrics().lines().any(|l| l == w)),
        || format!("per-pod counts missing ({want:?}):\n{}", metrics()),
    );
}

/// The metrics listener of the agent in the pod test (outside the test namespace, on loopback).
const METRICS: &str = "127.0.0.1:19481";

#[test]
fn a_container_glob_selector_allows_the_matching_containers_only() {
    let mut env = TestEnv::new("attrib-ctr");
    env.server("tcp", ADDR4, WEB);
    let (_, e1) = pod(1);
    // Two containers the glob matches (in a pod and outside Kubernetes), one sibling it does not.
    let a = format!("{}/cri-containerd-ab{}.scope", burstable_pod(&e1), "0".repeat(62));
    let a2 = format!("system.slice/docker-ab{}.scope", "1".repeat(62));
    let sibling = format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('c'));
    for rel in [&a, &a2, &sibling] {
        env.sub_cgroup(rel);
    }
    let agent = env.agent(&reserved_to("{container: \"ab*\"}"));
    assert_eq!(connect_from(&env, &a)["ok"], true, "{}", agent.log());
    assert_eq!(connect_from(&env, &a2)["ok"], true, "{}", agent.log());
    assert_eq!(connect_from(&env, &sibling)["ok"], false, "the sibling container");
    // Outside any container: refused too.
    assert_eq!(env.client("tcp", ADDR4, WEB)["ok"], false);
}

/// Containers and pods appear after the agent started: the directories they appear in are
/// watched, so the selectors resolve at once rather than at the next timer tick.
#[test]
fn containers_and_pods_created_after_the_start_are_picked_up() {
    let mut env = TestEnv::new("attrib-new");
    env.server("tcp", ADDR4, WEB);
    let (_, e1) = pod(1);
    let (u2, e2) = pod(2);
    let first = format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('a'));
    env.sub_cgroup(&first);
    let agent = env.agent(&reserved_to(&format!("{{container: \"c0ffee*\"}}, {{pod_uid: {u2}}}")));
    assert!(agent.log().contains("no container matching `c0ffee*`"), "{}", agent.log());
    assert!(agent.log().contains("has no cgroup on this host (yet)"), "{}", agent.log());
    assert_eq!(connect_from(&env, &first)["ok"], false);
    // Installed again because a selector resolved differently: on the directory watch, or at
    // the latest on the 5 s timer.
    let installs = || {
        let log = agent.log();
        log.matches("why=\"selector directories changed\"").count()
            + log.matches("why=\"selectors re-resolved\"").count()
    };

    // A new container in an existing pod.
    let new_container = format!("{}/cri-containerd-c0ffee{}.scope", burstable_pod(&e1), "0".repeat(58));
    env.sub_cgroup(&new_container);
    wait_for(
        Duration::from_secs(4),
        || installs() >= 1,
        || format!("the new container was not resolved within 4 s:\n{}", agent.log()),
    );
    assert_eq!(connect_from(&env, &new_container)["ok"], true, "{}", agent.log());

    // A new pod, with its container.
    let new_pod = format!("{}/crio-{}.scope", burstable_pod(&e2), cid('d'));
    env.sub_cgroup(&new_pod);
    wait_for(
        Duration::from_secs(4),
        || installs() >= 2,
        || format!("the new pod was not resolved within 4 s:\n{}", agent.log()),
    );
    assert_eq!(connect_from(&env, &new_pod)["ok"], true, "{}", agent.log());
    // The first container is still refused.
    assert_eq!(connect_from(&env, &first)["ok"], false);
}
