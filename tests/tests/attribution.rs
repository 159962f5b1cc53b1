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
    assert!(agent.log().contains(&format!("no pod with uid {u2} on this host (yet)")), "{}", agent.log());
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

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |n: &str| dir.join(n);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let run = |args: &[&str]| egress_agent_tests::sh(Command::new("openssl").args(args).current_dir(dir));
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-cluster-ca"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "api.key", "-out", "api.csr", "-subj", "/CN=kube-apiserver"]].concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "api.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "api.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (p("ca.crt"), p("api.crt"), p("api.key"))
}

/// A PodList with each (uid, name, app label) in namespace `payments`, and a pod of namespace
/// `other` labelled app=checkout too (the look-alike).
fn pod_list(pods: &[(&str, &str, &str)], other: &str) -> String {
    let items: Vec<Value> = pods
        .iter()
        .map(|(uid, name, app)| (*uid, "payments", *name, *app))
        .chain(std::iter::once((other, "other", "checkout-1", "checkout")))
        .map(|(uid, ns, name, app)| {
            serde_json::json!({"metadata": {"uid": uid, "namespace": ns, "name": name, "labels": {"app": app}},
                               "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}})
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items}).to_string()
}

/// Pods named by namespace and labels, from a pod list served over TLS the way the API server
/// serves it: events carry the names, the selector follows a relabelling, an unreachable API
/// keeps the last good list, and a wrong CA is refused.
#[test]
fn pod_namespace_and_label_selectors_follow_the_pod_list() {
    let mut env = TestEnv::new("attrib-kube");
    env.server("tcp", ADDR4, WEB);
    let (u1, e1) = pod(1);
    let (u2, e2) = pod(2);
    let (u3, e3) = pod(3);
    let a = format!("{}/cri-containerd-{}.scope", burstable_pod(&e1), cid('a'));
    let b = format!("{}/cri-containerd-{}.scope", burstable_pod(&e2), cid('b'));
    let look_alike = format!("{}/cri-containerd-{}.scope", burstable_pod(&e3), cid('c'));
    for rel in [&a, &b, &look_alike] {
        env.sub_cgroup(rel);
    }
    let (ca, cert, key) = tls_files(&env.dir);
    // The token the agent sends, and the one the server accepts.
    let (pods, token, expected, log) =
        (env.path("pods.json"), env.path("token"), env.path("expected"), env.path("api.log"));
    std::fs::write(&pods, pod_list(&[(&u1, "checkout-1", "checkout"), (&u2, "web-1", "web")], &u3)).expect("pods");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    std::fs::write(&expected, "s3cret-token\n").expect("token");
    let port = 19484;
    let server = Command::new("python3")
        .args([&py("kube_api.py"), &port.to_string()])
        .args([&cert, &key, &pods, &expected, &log])
        .spawn()
        .expect("kube_api.py");
    env.adopt(server);
    wait_for(
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready")),
        || "API stand-in did not start".into(),
    );
    let config = |ca: &std::path::Path| {
        format!(
            "kubernetes:\n  pods: api\n  server: https://127.0.0.1:{port}\n  node: node-1\n  tokenFile: {}\n  caFile: {}\n  interval: 2s\n",
            token.display(),
            ca.display()
        )
    };
    std::fs::write(env.path("agent.yaml"), config(&ca)).expect("config");
    let cfg = env.path("agent.yaml").display().to_string();
    let mut agent = env.agent_with(
        &reserved_to("{pod_namespace: payments, pod_labels: {app: checkout}}"),
        &["--config", &cfg, "--metrics", "127.0.0.1:19485"],
    );

    // Only the pod labelled app=checkout reaches the vendor; its events name it.
    let r = connect_from(&env, &a);
    assert_eq!(r["ok"], true, "{}", agent.log());
    let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    assert_eq!((ev["pod_namespace"].as_str(), ev["pod_name"].as_str()), (Some("payments"), Some("checkout-1")), "{ev}");
    assert_eq!(ev["pod_labels"], serde_json::json!({"app": "checkout"}), "{ev}");
    let r = connect_from(&env, &b);
    assert_eq!(r["ok"], false, "the pod labelled app=web: {r}");
    let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    assert_eq!((ev["pod_name"].as_str(), ev["verdict"].as_str()), (Some("web-1"), Some("deny")), "{ev}");
    // Same name and labels in another namespace: refused, and named as what it is.
    let r = connect_from(&env, &look_alike);
    assert_eq!(r["ok"], false, "a look-alike pod in another namespace: {r}");
    let ev = agent.event_of(r["pid"].as_u64().expect("pid"), ADDR4, WEB);
    assert_eq!(ev["pod_namespace"].as_str(), Some("other"), "{ev}");
    // Asked for this node's pods only, with the token.
    let asked = std::fs::read_to_string(&log).expect("log");
    assert!(
        asked.contains("fieldSelector=spec.nodeName%3Dnode-1") && asked.contains("\"authorised\": true"),
        "{asked}"
    );
    assert!(!asked.contains("\"authorised\": false"), "{asked}");
    let metrics = || {
        let out = Command::new("curl").args(["-sf", "http://127.0.0.1:19485/metrics"]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(
        Duration::from_secs(5),
        || {
            metrics()
                .lines()
                .any(|l| l.starts_with("egress_pod_info{") && l.contains("pod=\"checkout-1\"") && l.contains(&u1))
        },
        || format!("no egress_pod_info for checkout-1:\n{}", metrics()),
    );

    // Relabelled: the vendor follows the label, not the pod.
    std::fs::write(&pods, pod_list(&[(&u1, "checkout-1", "web"), (&u2, "web-1", "checkout")], &u3)).expect("pods");
    wait_for(
        Duration::from_secs(20),
        || connect_from(&env, &b)["ok"] == true,
        || format!("the relabelled pod is still refused:\n{}", agent.log()),
    );
    assert_eq!(connect_from(&env, &a)["ok"], false, "the pod that lost its label");

    // The API goes away: the last good list stays in use, and status says so.
    // The server now wants another token: every fetch is refused (401) from here on.
    std::fs::write(&expected, "rotated-token\n").expect("token");
    wait_for(
        Duration::from_secs(20),
        || agent.status()["pod_list"]["last_error"].as_str().is_some_and(|e| e.contains("401")),
        || format!("no fetch error in status: {}", agent.status()),
    );
    assert_eq!(connect_from(&env, &b)["ok"], true, "the last good list is kept");
    assert_eq!(connect_from(&env, &a)["ok"], false);
    agent.stop();

    // A server whose certificate the configured CA did not sign is not trusted: the agent
    // starts, pod selectors match nothing, and the reason is in the log and in status.
    let other = env.dir.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let (other_ca, ..) = tls_files(&other);
    std::fs::write(&expected, "s3cret-token\n").expect("token");
    std::fs::write(env.path("agent.yaml"), config(&other_ca)).expect("config");
    let agent = env.agent_with(
        &reserved_to("{pod_namespace: payments, pod_labels: {app: checkout}}"),
        &["--config", &cfg, "--metrics", "127.0.0.1:19485"],
    );
    assert_eq!(connect_from(&env, &b)["ok"], false, "no pod list, no pod selector match");
    let st = agent.status();
    assert_eq!(st["pod_list"]["fetched"], false, "{st}");
    assert!(agent.log().contains("pod list not fetched"), "{}", agent.log());
}
