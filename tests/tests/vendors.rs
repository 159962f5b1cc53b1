//! Kernel tests of the vendor model: process scoping decided in the kernel, robust executable
//! identity, atomic reloads, refused policies, ConfigMap-style updates, and longest-prefix
//! matching of a large real policy against a reference.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use egress_agent_tests::{policy, py, python_exe, realpath_of, wait_for, write_atomic, Agent, TestEnv, ADDR4};
use serde_json::Value;

const WEB: u16 = 8080;
const OTHER: u16 = 8081;
const EXTRA: u16 = 8082;

/// Vendor `web` on ADDR4:WEB, reserved to the executables matching `exe_glob`.
fn scoped(mode: &str, exe_glob: &str, vendor_extra: &str) -> String {
    policy(&format!(
        "  mode: {mode}\n  default: allow\n  vendors:\n    - name: web\n      owner: test\n      data: [pii]\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      protocols: [tcp]\n      processes:\n        - {{exe: \"{exe_glob}\"}}\n{vendor_extra}"
    ))
}

fn curl_path() -> PathBuf {
    realpath_of("curl")
}

/// Runs `curl` (or a copy of it) in the test cgroup; returns its exit code and the pid it had.
fn curl_from(env: &TestEnv, bin: &Path, port: u16) -> (i32, u32) {
    let child = env
        .in_cgroup(
            &bin.display().to_string(),
            &["-sS", "-o", "/dev/null", "--max-time", "3", &format!("http://{ADDR4}:{port}/")],
        )
        .spawn()
        .expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl");
    (out.status.code().unwrap_or(-1), pid)
}

fn event_of_pid(agent: &Agent, pid: u32) -> Value {
    agent.wait_event(&format!("of pid {pid}"), |e| e["pid"] == u64::from(pid))
}

#[test]
fn a_vendor_is_reserved_to_its_processes_by_executable_identity() {
    let mut env = TestEnv::new("scoped");
    let server = env.server("http", ADDR4, WEB);
    // Two identical files: the policy names one. The other, a rename and a copy must not pass.
    let allowed = env.path("curl-billing");
    fs::copy(curl_path(), &allowed).expect("copy curl");
    let agent = env.agent(&scoped("enforce", &allowed.display().to_string(), ""));
    let copy = env.path("curl-copy");
    fs::copy(&allowed, &copy).expect("copy");
    // Another file moved into place under the allowed file's very name (so its comm is the
    // allowed one's too), in another directory.
    let other_dir = env.path("other");
    fs::create_dir(&other_dir).expect("mkdir");
    let staged = other_dir.join("staged");
    fs::copy(curl_path(), &staged).expect("copy");
    let renamed = other_dir.join("curl-billing");
    fs::rename(&staged, &renamed).expect("rename");
    // A hard link is the same file: it keeps the file's rights (documented).
    let hardlink = env.path("curl-hardlink");
    fs::hard_link(&allowed, &hardlink).expect("link");

    let (code, pid) = curl_from(&env, &allowed, WEB);
    assert_eq!(code, 0, "{}", agent.log());
    let ev = event_of_pid(&agent, pid);
    assert_eq!(
        (ev["verdict"].as_str(), ev["vendor"].as_str(), ev["reason"].as_str()),
        (Some("allow"), Some("web"), Some("rule")),
        "{ev}"
    );
    assert_eq!(ev["exe"], allowed.display().to_string());
    assert_eq!(server.wait_received(1).len(), 1);

    for other in [curl_path(), copy, renamed] {
        let (code, pid) = curl_from(&env, &other, WEB);
        assert_eq!(code, 7, "{} must be refused", other.display());
        let ev = event_of_pid(&agent, pid);
        assert_eq!(ev["verdict"], "deny", "{ev}");
        assert_eq!(ev["vendor"], "web", "{ev}");
        assert_eq!(ev["rule"], "vendor/web", "{ev}");
        assert_eq!(ev["reason"], "process", "{ev}");
    }
    let (code, pid) = curl_from(&env, &hardlink, WEB);
    assert_eq!(code, 0, "a hard link is the allowed file itself");
    assert_eq!(event_of_pid(&agent, pid)["verdict"], "allow");
    // `default: allow` still lets the same processes reach what no vendor reserves.
    env.server("http", ADDR4, OTHER);
    assert_eq!(curl_from(&env, &curl_path(), OTHER).0, 0);
    assert_eq!(server.received().len(), 2, "only the allowed file reached the vendor");
}

/// A mounted ext4 image in the test's directory, unmounted when dropped (also when a test fails).
struct Ext4Mount(PathBuf);

impl Ext4Mount {
    /// Without metadata checksums, so that a file's inode generation can be set (FS_IOC_SETVERSION).
    fn new(env: &TestEnv) -> Self {
        let img = env.path("ext4.img");
        let dir = env.path("ext4");
        fs::create_dir_all(&dir).expect("mkdir");
        egress_agent_tests::sh(Command::new("truncate").args(["-s", "32M"]).arg(&img));
        egress_agent_tests::sh(
            Command::new("mkfs.ext4").args(["-q", "-F", "-O", "^metadata_csum,^has_journal"]).arg(&img),
        );
        egress_agent_tests::sh(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&dir));
        Ext4Mount(dir)
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Gives the file at `path` another inode generation: to the kernel, exactly what another file
/// that reuses its inode number (once it is deleted) looks like.
fn set_generation(path: &Path, gen: u32) {
    let script = format!(
        "import fcntl, os, struct\nfd = os.open('{}', os.O_RDONLY)\nfcntl.ioctl(fd, 0x40087602, struct.pack('l', {gen}))\n",
        path.display()
    );
    egress_agent_tests::sh(Command::new("python3").args(["-c", &script]));
}

/// (device, inode) is not a file's identity for ever: once the allowed file is deleted, another
/// file may get its inode number. The inode generation tells them apart: the file with the
/// allowed file's number but another generation is refused until the agent resolves the glob
/// again, and the allowed path is allowed again once it has (the generation is part of what a
/// resolution compares).
#[test]
fn a_reused_inode_number_is_not_the_allowed_file() {
    let mut env = TestEnv::new("inogen");
    env.server("http", ADDR4, WEB);
    let mnt = Ext4Mount::new(&env);
    let app = mnt.0.join("app");
    fs::copy(curl_path(), &app).expect("copy curl");
    set_generation(&app, 1111);
    let agent = env.agent(&scoped("enforce", &app.display().to_string(), ""));
    assert_eq!(curl_from(&env, &app, WEB).0, 0, "the allowed file: {}", agent.log());
    let installs = || agent.log().matches("policy installed").count();
    let mut refused = false;
    for gen in [2222, 3333, 4444] {
        let before = installs();
        set_generation(&app, gen);
        let (code, pid) = curl_from(&env, &app, WEB);
        if code == 7 {
            let ev = event_of_pid(&agent, pid);
            assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
            refused = true;
            break;
        }
        // Allowed: only right if the agent resolved the glob again in between (it does every
        // 5 s); try once more.
        assert!(
            installs() > before,
            "generation {gen}: the file reusing the inode number reached the vendor: {}",
            agent.log()
        );
    }
    assert!(refused, "the agent resolved the glob again each time: {}", agent.log());
    wait_for(
        Duration::from_secs(15),
        || curl_from(&env, &app, WEB).0 == 0,
        || format!("the allowed path was not allowed again after a resolution: {}", agent.log()),
    );
}

/// `comm` selectors match the process's name (its main thread's), whichever thread connects; a
/// thread that merely names itself like the allowed process does not pass.
#[test]
fn comm_selectors_match_the_process_name() {
    let mut env = TestEnv::new("comm");
    let server = env.server("tcp", ADDR4, WEB);
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes: [{{comm: billing-worker}}]\n"
    )));
    let script = |process_name: &str, thread_name: &str| {
        format!(
            "import ctypes, json, os, socket, threading\n\
             libc = ctypes.CDLL(None)\n\
             def name(n): libc.prctl(15, n.encode(), 0, 0, 0)\n\
             name('{process_name}')\n\
             r = {{'pid': os.getpid()}}\n\
             def work():\n\
             \x20   name('{thread_name}')\n\
             \x20   s = socket.socket()\n\
             \x20   try:\n        s.connect(('{ADDR4}', {WEB})); r['errno'] = 0\n\
             \x20   except OSError as e:\n        r['errno'] = e.errno\n\
             t = threading.Thread(target=work); t.start(); t.join()\n\
             print(json.dumps(r))\n"
        )
    };
    let run = |process_name: &str, thread_name: &str| -> Value {
        let out = env.in_cgroup("python3", &["-c", &script(process_name, thread_name)]).output().expect("python");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("report")
    };
    // The process is billing-worker; its connecting thread calls itself something else.
    let r = run("billing-worker", "io-thread");
    assert_eq!(r["errno"], 0, "{r}\n{}", agent.log());
    let ev = agent.wait_event("of billing-worker", |e| e["pid"] == r["pid"]);
    assert_eq!((ev["verdict"].as_str(), ev["comm"].as_str()), (Some("allow"), Some("io-thread")), "{ev}");
    // A process called something else, whose thread calls itself billing-worker.
    let r = run("python-app", "billing-worker");
    assert_eq!(r["errno"], 1, "{r}");
    let ev = agent.wait_event("of python-app", |e| e["pid"] == r["pid"]);
    assert_eq!((ev["verdict"].as_str(), ev["reason"].as_str()), (Some("deny"), Some("process")), "{ev}");
    assert_eq!(server.wait_received(1).len(), 1);
}

#[test]
fn uid_and_cgroup_selectors_are_decided_in_the_kernel() {
    let mut env = TestEnv::new("selectors");
    let _server = env.server("http", ADDR4, WEB);
    let sub = env.cgroup.join("billing");
    fs::create_dir(&sub).expect("sub-cgroup");
    let cg_rel = sub.strip_prefix(egress_agent_tests::cgroup2_mount()).expect("under mount").display().to_string();
    let policy_text = policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes:\n        - {{cgroup: \"/{cg_rel}\"}}\n        - {{uid: 65534}}\n"
    ));
    let agent = env.agent(&policy_text);
    let url = format!("http://{ADDR4}:{WEB}/");
    // In the sub-cgroup (a descendant of the selector's cgroup counts too): allowed.
    let mut c = Command::new("sh");
    c.args(["-c", "echo $$ > \"$1/cgroup.procs\" && exec ip netns exec \"$2\" curl -sS -o /dev/null \"$3\"", "sh"])
        .arg(&sub)
        .arg(&env.netns)
        .arg(&url);
    let out = c.output().expect("curl");
    assert!(out.status.success(), "curl in the billing cgroup: {out:?}\n{}", agent.log());
    // As root in the parent cgroup: refused.
    let (code, _) = curl_from(&env, &curl_path(), WEB);
    assert_eq!(code, 7);
    // As uid 65534 in the parent cgroup: allowed by the second selector.
    let out = env
        .in_cgroup(
            "setpriv",
            &["--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-sS", "-o", "/dev/null", &url],
        )
        .output()
        .expect("setpriv");
    assert!(out.status.success(), "curl as 65534: {out:?}");
    let ev = agent.wait_event("of uid 65534", |e| e["uid"] == 65534);
    assert_eq!(ev["verdict"], "allow", "{ev}");
    // The sub-cgroup must be empty before the environment removes the parent.
    let _ = fs::remove_dir(&sub);
}

#[test]
fn a_vendor_in_monitor_mode_reports_instead_of_refusing() {
    let mut env = TestEnv::new("vendor-mode");
    let server = env.server("http", ADDR4, WEB);
    let agent = env.agent(&scoped("enforce", "/nonexistent/curl", "      mode: monitor\n"));
    assert!(agent.log().contains("matches no executable"), "the unresolvable selector is reported:\n{}", agent.log());
    let (code, pid) = curl_from(&env, &curl_path(), WEB);
    assert_eq!(code, 0);
    let ev = event_of_pid(&agent, pid);
    assert_eq!(
        (ev["verdict"].as_str(), ev["reason"].as_str(), ev["vendor"].as_str()),
        (Some("alert"), Some("process"), Some("web")),
        "{ev}"
    );
    assert_eq!(server.wait_received(1).len(), 1);
}

/// Policy A allows WEB; policy B allows WEB and EXTRA; OTHER is allowed by neither. WEB is a
/// vendor reserved to the python interpreter (so every reload rewrites the executable set of a
/// slot while the loop depends on it), EXTRA an infrastructure rule.
fn reload_policy(extra: bool) -> String {
    let extra_rule = if extra {
        format!("  allow:\n    - {{name: extra, cidr: {ADDR4}, ports: [{EXTRA}], protocols: [tcp]}}\n")
    } else {
        String::new()
    };
    policy(&format!(
        "  mode: enforce\n  default: deny\n{extra_rule}  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      protocols: [tcp]\n      processes: [{{exe: \"{}\"}}]\n    - {{name: padding, destinations: [{{cidr: 198.18.1.0/24}}, {{cidr: \"2001:db8:1::/48\"}}], ports: [\"1-1000\"]}}\n",
        python_exe()
    ))
}

#[test]
fn reloads_under_a_connection_loop_never_give_a_wrong_verdict() {
    let mut env = TestEnv::new("reload");
    env.server("tcp", ADDR4, WEB);
    env.server("tcp", ADDR4, OTHER);
    let extra = env.server("tcp", ADDR4, EXTRA);
    let agent = env.agent(&reload_policy(false));
    let policy_path = env.path("policy.yaml");
    let looper = env
        .in_cgroup("python3", &[&py("loop.py"), ADDR4, &WEB.to_string(), &OTHER.to_string(), "9"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("loop");
    // Alternate the policy under the loop: by atomic file replacement and by SIGHUP.
    let reloads = 24;
    for i in 0..reloads {
        write_atomic(&policy_path, &reload_policy(i % 2 == 0));
        if i % 3 == 0 {
            agent.signal(libc::SIGHUP);
        }
        // Longer than the agent's debounce window, so most writes are reloads of their own
        // (writes that fall in one window are one reload of the latest content).
        std::thread::sleep(Duration::from_millis(350));
    }
    let out = looper.wait_with_output().expect("loop");
    let res: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("loop output {out:?}: {e}"));
    assert!(res["attempts"].as_u64().is_some_and(|n| n > 200), "{res}");
    assert_eq!(res["ok_refused"], 0, "an allowed connection was refused during a reload: {res}");
    assert_eq!(res["denied_passed"], 0, "a denied connection passed during a reload: {res}");
    assert_eq!(res["errors"], Value::Array(vec![]), "{res}");
    let installs = agent.log().matches("policy installed").count();
    assert!(installs >= reloads / 3, "only {installs} reloads were installed:\n{}", agent.log());
    // Whatever the last write was, a policy that allows EXTRA comes into force.
    write_atomic(&policy_path, &reload_policy(true));
    wait_for(
        Duration::from_secs(10),
        || env.client("tcp", ADDR4, EXTRA)["ok"] == true,
        || format!("EXTRA never allowed:\n{}", agent.log()),
    );
    assert!(!extra.wait_received(1).is_empty());
}

#[test]
fn a_broken_policy_is_refused_and_the_running_one_stays_in_force() {
    let mut env = TestEnv::new("broken");
    let ok_server = env.server("tcp", ADDR4, WEB);
    let denied = env.server("tcp", ADDR4, OTHER);
    let agent = env.agent(&reload_policy(false));
    let policy_path = env.path("policy.yaml");
    write_atomic(&policy_path, &reload_policy(false).replace(ADDR4, "198.18.0.300"));
    wait_for(
        Duration::from_secs(10),
        || agent.log().contains("policy refused"),
        || format!("no refusal logged:\n{}", agent.log()),
    );
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "{}:9:29: error: spec.vendors[0].destinations[0].cidr: invalid CIDR",
            policy_path.display()
        )),
        "the refusal names file, line and field:\n{log}"
    );
    assert_eq!(env.client("tcp", ADDR4, WEB)["ok"], true, "the old policy still allows");
    assert_eq!(env.client("tcp", ADDR4, OTHER)["errno"], 1, "the old policy still refuses");
    assert_eq!(ok_server.wait_received(1).len(), 1);
    assert!(denied.received().is_empty());
    // SIGHUP with the broken file: refused again, still in force.
    agent.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), || agent.log().matches("policy refused").count() >= 2, || agent.log());
    assert_eq!(env.client("tcp", ADDR4, OTHER)["errno"], 1);
}

#[test]
fn a_configmap_style_symlink_swap_is_picked_up() {
    let mut env = TestEnv::new("configmap");
    let extra = env.server("tcp", ADDR4, EXTRA);
    // The layout kubelet gives a ConfigMap volume: files are links through `..data`, which is
    // swapped atomically to a new timestamped directory on update.
    let vol = env.path("volume");
    fs::create_dir_all(vol.join("..2026_11_23_v1")).expect("mkdir");
    fs::write(vol.join("..2026_11_23_v1/policy.yaml"), reload_policy(false)).expect("write");
    symlink("..2026_11_23_v1", vol.join("..data")).expect("link");
    symlink("..data/policy.yaml", vol.join("policy.yaml")).expect("link");
    let agent = Agent::start(&egress_agent_tests::agent_bin(), &vol, &env.cgroup, &env.dir, &[]);
    assert_eq!(env.client("tcp", ADDR4, EXTRA)["errno"], 1);
    fs::create_dir_all(vol.join("..2026_11_23_v2")).expect("mkdir");
    fs::write(vol.join("..2026_11_23_v2/policy.yaml"), reload_policy(true)).expect("write");
    symlink("..2026_11_23_v2", vol.join("..data_tmp")).expect("link");
    fs::rename(vol.join("..data_tmp"), vol.join("..data")).expect("swap");
    wait_for(
        Duration::from_secs(10),
        || agent.log().contains("policy files changed"),
        || format!("no reload:\n{}", agent.log()),
    );
    assert_eq!(env.client("tcp", ADDR4, EXTRA)["ok"], true, "{}", agent.log());
    assert_eq!(extra.wait_received(1).len(), 1);
}

#[test]
fn explain_answers_like_the_kernel() {
    let env = TestEnv::new("explain");
    let allowed = env.path("curl-billing");
    fs::copy(curl_path(), &allowed).expect("copy");
    let path = env.path("p.yaml");
    fs::write(&path, scoped("enforce", &allowed.display().to_string(), "")).expect("write");
    let explain = |exe: &Path, dst: &str| {
        let out = Command::new(egress_agent_tests::agent_bin())
            .args(["explain", "--policy"])
            .arg(&path)
            .arg("--exe")
            .arg(exe)
            .args(["--dst", dst])
            .output()
            .expect("explain");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dst = format!("{ADDR4}:{WEB}");
    assert!(
        explain(&allowed, &dst).starts_with("allow: allowed by vendor/web (defined at "),
        "{}",
        explain(&allowed, &dst)
    );
    assert!(
        explain(&curl_path(), &dst).starts_with("deny: vendor/web reserves this destination"),
        "{}",
        explain(&curl_path(), &dst)
    );
    assert!(explain(&curl_path(), &format!("{ADDR4}:{OTHER}"))
        .starts_with("allow: no rule allows it; mode Enforce, default Allow"));
}

/// xorshift64: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The kernel's longest-prefix matching of a large real policy (published cloud ranges, 6,000+
/// overlapping IPv4 and IPv6 prefixes with per-provider ports) agrees with a direct scan of the
/// rules, for addresses inside, at the edges of and outside the ranges.
#[test]
fn large_real_policy_matches_a_reference_in_the_kernel() {
    // A copy of the public data set lives in the repository (tests/data), so a checkout is
    // self-contained.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cloud-ranges.txt");
    let text = fs::read_to_string(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mut rules: Vec<(ipnet::IpNet, u16, u16)> = Vec::new();
    let mut spec = String::from("  mode: enforce\n  default: deny\n  allow:\n");
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(provider), Some(cidr)) = (it.next(), it.next()) else { continue };
        let net: ipnet::IpNet = cidr.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{line}: {e}")).trunc();
        let (lo, hi) = match provider {
            "aws" => (443, 443),
            "gcp" => (8443, 8443),
            _ => (1000, 2000),
        };
        spec.push_str(&format!("    - {{cidr: \"{net}\", ports: [\"{lo}-{hi}\"], protocols: [udp]}}\n"));
        rules.push((net, lo, hi));
    }
    assert!(rules.len() > 6000, "{}", rules.len());
    let env = TestEnv::new("lpm");
    let agent = env.agent(&policy(&spec));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut probes = Vec::new();
    for _ in 0..3000 {
        let (net, ..) = rules[(rng.next() % rules.len() as u64) as usize];
        let addr: std::net::IpAddr = match (net, rng.next() % 4) {
            // Just outside the range, above its broadcast address.
            (ipnet::IpNet::V4(n), 0) => std::net::Ipv4Addr::from(u32::from(n.broadcast()).wrapping_add(1)).into(),
            (ipnet::IpNet::V4(n), _) => {
                let size = 1u64 << (32 - n.prefix_len());
                std::net::Ipv4Addr::from(u32::from(n.network()).wrapping_add((rng.next() % size) as u32)).into()
            }
            (ipnet::IpNet::V6(n), 0) => std::net::Ipv6Addr::from(u128::from(n.broadcast()).wrapping_add(1)).into(),
            (ipnet::IpNet::V6(n), _) => {
                let bits = 128 - u32::from(n.prefix_len());
                let off =
                    if bits >= 64 { u128::from(rng.next()) } else { u128::from(rng.next()) & ((1u128 << bits) - 1) };
                std::net::Ipv6Addr::from(u128::from(n.network()).wrapping_add(off)).into()
            }
        };
        let port = [443u16, 8443, 1500, 80][(rng.next() % 4) as usize];
        probes.push((addr, port));
    }
    for _ in 0..500 {
        probes.push((std::net::Ipv4Addr::from(rng.next() as u32).into(), 443));
    }
    // Addresses this namespace owns would be reached over loopback: keep to the others.
    probes.retain(|(a, _)| !a.is_loopback() && !a.is_unspecified() && !a.is_multicast());
    let list = env.path("probes.txt");
    fs::write(&list, probes.iter().map(|(a, p)| format!("{a} {p}\n")).collect::<String>()).expect("write probes");
    let out = env.in_cgroup("python3", &[&py("lpm.py"), &list.display().to_string()]).output().expect("lpm.py");
    assert!(out.status.success(), "{out:?}");
    let errnos: Vec<i32> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(|x| x.parse().expect("errno")).collect();
    assert_eq!(errnos.len(), probes.len());
    let mut allowed = 0;
    for ((addr, port), errno) in probes.iter().zip(&errnos) {
        let expect = rules.iter().any(|(n, lo, hi)| n.contains(addr) && lo <= port && port <= hi);
        let kernel_allowed = *errno != libc::EPERM;
        assert_eq!(
            kernel_allowed,
            expect,
            "{addr}:{port}: kernel errno {errno}, reference {}",
            if expect { "allow" } else { "deny" }
        );
        if expect {
            assert_eq!(*errno, libc::ENETUNREACH, "{addr}:{port}: allowed, so the route lookup must fail");
            allowed += 1;
        }
    }
    // Both outcomes were exercised, many times.
    assert!(allowed > 300 && probes.len() - allowed > 300, "{allowed} of {}", probes.len());
    drop(agent);
}

/// A service restart removes its cgroup and creates a new one (a new id): the agent watches the
/// selector's parent directory and resolves again at once, not at its next timer tick.
#[test]
fn a_recreated_cgroup_is_resolved_again_when_it_appears() {
    let mut env = TestEnv::new("recreate");
    env.server("tcp", ADDR4, WEB);
    let svc = env.cgroup.join("svc");
    let rel = svc.strip_prefix(egress_agent_tests::cgroup2_mount()).expect("under mount").display().to_string();
    let agent = env.agent(&policy(&format!(
        "  mode: enforce\n  default: deny\n  vendors:\n    - name: web\n      destinations: [{{cidr: {ADDR4}}}]\n      ports: [{WEB}]\n      processes: [{{cgroup: \"/{rel}\"}}]\n"
    )));
    assert!(agent.log().contains("does not exist (yet)"), "{}", agent.log());
    let connect_from_svc = || {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && exec ip netns exec \"$2\" python3 \"$3\" tcp \"$4\" \"$5\" 0",
            "sh",
        ])
        .arg(&svc)
        .arg(&env.netns)
        .arg(py("client.py"))
        .arg(ADDR4)
        .arg(WEB.to_string());
        let out = c.output().expect("client");
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    for round in 1..=2 {
        fs::create_dir(&svc).expect("mkdir svc");
        wait_for(
            Duration::from_secs(4),
            || agent.log().matches("why=\"selector directories changed\"").count() >= round,
            || format!("no re-resolution on the cgroup's creation (round {round}):\n{}", agent.log()),
        );
        assert_eq!(connect_from_svc()["ok"], true, "round {round}");
        // Restart: the cgroup goes away (empty now: the client has exited).
        fs::remove_dir(&svc).expect("rmdir svc");
    }
}

/// A package upgrade replaces an allowed executable while a process still runs the old file: the
/// process keeps its rights until it exits, and the new file is allowed as soon as it is there.
#[test]
fn a_process_running_a_replaced_executable_keeps_its_rights() {
    let mut env = TestEnv::new("upgrade");
    let server = env.server("tcp", ADDR4, WEB);
    let app = env.path("app");
    fs::copy(python_exe(), &app).expect("copy python");
    let agent = env.agent(&scoped("enforce", &app.display().to_string(), ""));
    let script = format!(
        "import json, os, socket, sys\nprint(os.getpid(), flush=True)\nsys.stdin.readline()\ns = socket.socket()\ntry:\n    s.connect(('{ADDR4}', {WEB})); print(0, flush=True)\nexcept OSError as e:\n    print(e.errno, flush=True)\n"
    );
    let old = egress_agent_tests::Held::start(&env, &app.display().to_string(), &script);
    // The upgrade: a new file renamed over the old one.
    let staged = env.path("app.new");
    fs::copy(python_exe(), &staged).expect("copy");
    fs::rename(&staged, &app).expect("replace");
    wait_for(
        Duration::from_secs(4),
        || agent.log().contains("why=\"selector directories changed\""),
        || format!("no re-resolution after the upgrade:\n{}", agent.log()),
    );
    assert_eq!(old.go(), "0", "the process running the replaced file lost its rights:\n{}", agent.log());
    // A process started from the new file is allowed too.
    let out = env
        .in_cgroup(&app.display().to_string(), &[&py("client.py"), "tcp", ADDR4, &WEB.to_string(), "0"])
        .output()
        .expect("new app");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(server.wait_received(2).len(), 2);
}
