//! Harness for the kernel tests and the benchmarks: a private network namespace whose loopback
//! owns the test addresses, a child cgroup for the clients, the real agent attached to that
//! cgroup only, and real servers and clients. Every piece cleans up on drop, also when a test
//! panics, so a failed test leaves no namespace, cgroup or attached program behind.
//!
//! Safety: the agent is only ever attached to the child cgroup created here, and all traffic goes
//! to addresses inside the private namespace (198.18.0.0/15 and 2001:db8::/32, reserved for
//! benchmarking and documentation).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

mod agent;

pub use agent::{Agent, Launch};

/// IPv4 addresses on the test namespace's loopback.
pub const ADDR4: &str = "198.18.0.10";
pub const ADDR4_OTHER: &str = "198.18.0.11";
/// IPv6 addresses on the test namespace's loopback.
pub const ADDR6: &str = "2001:db8::10";
pub const ADDR6_OTHER: &str = "2001:db8::11";

/// The test resolver's addresses (see [`TestEnv::dns`]).
pub const DNS4: &str = "198.18.0.53";
pub const DNS6: &str = "2001:db8::53";
/// Where the test resolver's fresh answers come from: every address of these is local to the
/// namespace, so a connection to any answer reaches the test server listening on all addresses.
pub const ANSWERS4: &str = "198.18.128.0/17";
pub const ANSWERS6: [&str; 2] = ["2001:db8:1::/64", "2001:db8:2::/64"];

pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion; panics with its stderr if it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            pre.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 mount: the kernel tests need cgroup v2")
}

pub fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the kernel tests must run as root (cargo xtask test); they do not skip");
}

/// The agent binary under test: `EGRESS_AGENT_BIN` (set by `cargo xtask test`).
pub fn agent_bin() -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os("EGRESS_AGENT_BIN")
            .expect("EGRESS_AGENT_BIN is not set: run the kernel tests with `cargo xtask test`"),
    );
    assert!(p.is_file(), "EGRESS_AGENT_BIN={} does not exist", p.display());
    p
}

/// The namespace, the cgroup and a scratch directory of one test.
pub struct TestEnv {
    pub netns: String,
    pub cgroup: PathBuf,
    pub dir: PathBuf,
    children: Vec<Child>,
}

/// Removes what earlier test runs that were killed left behind: namespaces and cgroups named
/// `ea-<test>-<pid>-<n>` whose pid is gone. Runs that are alive are left alone.
fn sweep_stale() {
    let stale = |name: &str| {
        let Some(rest) = name.strip_prefix("ea-") else { return false };
        let mut parts = rest.rsplitn(3, '-');
        let (_seq, pid) = (parts.next(), parts.next());
        pid.and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for ns in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
            if stale(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            if stale(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(rd) = fs::read_dir(cgroup2_mount()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(rd) = fs::read_dir(PIN_ROOT) {
        for e in rd.flatten() {
            if stale(&e.file_name().to_string_lossy()) {
                remove_pins(&e.path());
            }
        }
    }
}

/// Mounts a bpf filesystem on /sys/fs/bpf when none is (the agent would mount it itself, but a
/// test may run it without CAP_SYS_ADMIN).
fn ensure_bpffs() {
    let out = Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]).output().expect("stat");
    if String::from_utf8_lossy(&out.stdout).trim() != "bpf_fs" {
        sh(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]));
    }
}

/// Where the agents of the test whose scratch directory is `dir` pin their datapath.
pub fn pin_dir_of(dir: &Path) -> PathBuf {
    Path::new(PIN_ROOT).join(dir.file_name().unwrap_or_default())
}

/// The tests' pinned datapaths live under this bpffs directory.
pub const PIN_ROOT: &str = "/sys/fs/bpf/ea-tests";

/// Removes a pinned datapath (links first detach nothing while agents hold them; a test's
/// agents are stopped before its environment is dropped).
fn remove_pins(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_pins(&e.path());
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Kills what is left in a cgroup tree and removes it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            remove_cgroup_tree(&e.path());
        }
    }
    let procs = dir.join("cgroup.procs");
    for _ in 0..50 {
        let pids = fs::read_to_string(&procs).unwrap_or_default();
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir(dir);
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        require_root();
        ensure_bpffs();
        sweep_stale();
        let id = format!("ea-{name}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(&id);
        fs::create_dir_all(&dir).expect("scratch dir");
        let cgroup = cgroup2_mount().join(&id);
        // Build the env first so that Drop cleans up whatever part of the set-up succeeded.
        let env = Self { netns: id.clone(), cgroup, dir, children: Vec::new() };
        sh(Command::new("ip").args(["netns", "add", &env.netns]));
        fs::create_dir(&env.cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", env.cgroup.display()));
        env.ip(&["link", "set", "lo", "up"]);
        for a in [ADDR4, ADDR4_OTHER] {
            env.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for a in [ADDR6, ADDR6_OTHER] {
            env.ip(&["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]);
        }
        env
    }

    pub fn ip(&self, args: &[&str]) {
        sh(Command::new("ip").args(["-n", &self.netns]).args(args));
    }

    /// Keeps a process started by the test: it is killed when the environment is dropped.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Sets a sysctl inside the namespace (per-namespace ones only, e.g. net.ipv4.tcp_fastopen).
    pub fn sysctl(&self, key: &str, value: &str) {
        sh(Command::new("ip").args(["netns", "exec", &self.netns, "sysctl", "-qw", &format!("{key}={value}")]));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A server inside the namespace but outside the watched cgroup, logging what reaches it.
    pub fn server(&mut self, proto: &str, addr: &str, port: u16) -> ServerLog {
        self.server_from(&["server.py"], proto, addr, port)
    }

    /// The bulk-transfer server of tests/py/bulk.py (known byte counts each way).
    pub fn bulk_server(&mut self, proto: &str, addr: &str, port: u16) -> ServerLog {
        self.server_from(&["bulk.py", "serve"], proto, addr, port)
    }

    fn server_from(&mut self, script: &[&str], proto: &str, addr: &str, port: u16) -> ServerLog {
        let log = self.path(&format!("server-{}-{proto}-{}-{port}.log", script[0], addr.replace(':', "_")));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "python3", &py(script[0])])
            .args(&script[1..])
            .args([proto, addr, &port.to_string()])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        self.children.push(child);
        let server = ServerLog { log };
        wait_for(
            Duration::from_secs(10),
            || server.lines().iter().any(|l| l == "ready"),
            || format!("server {proto} {addr}:{port} did not start"),
        );
        server
    }

    /// Starts the test resolver (`ea-dns-server`, binary `bin`) on [`DNS4`] and [`DNS6`] port 53,
    /// answering with fresh addresses under [`ANSWERS4`]/[`ANSWERS6`] and TTL `ttl`, makes
    /// those ranges local to the namespace, and points the namespace's resolv.conf (what glibc
    /// reads under `ip netns exec`) at it.
    pub fn dns(&mut self, bin: &Path, ttl: u32) -> DnsServer {
        self.ip(&["addr", "add", &format!("{DNS4}/32"), "dev", "lo"]);
        self.ip(&["-6", "addr", "add", &format!("{DNS6}/128"), "dev", "lo", "nodad"]);
        // On loopback, an address with a prefix makes the whole prefix local.
        self.ip(&["addr", "add", "198.18.128.1/17", "dev", "lo"]);
        for net in ANSWERS6 {
            self.ip(&["-6", "route", "add", "local", net, "dev", "lo"]);
        }
        let etc = PathBuf::from("/etc/netns").join(&self.netns);
        fs::create_dir_all(&etc).expect("mkdir /etc/netns/<ns>");
        fs::write(etc.join("resolv.conf"), format!("nameserver {DNS4}\noptions timeout:1 attempts:2\n"))
            .expect("write resolv.conf");
        let (ready, log) = (self.path("dns.ready"), self.path("dns.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(bin)
            .args(["--listen", &format!("{DNS4}:53"), "--listen", &format!("[{DNS6}]:53"), "--ttl"])
            .arg(ttl.to_string())
            .arg("--ready")
            .arg(&ready)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ea-dns-server");
        self.children.push(child);
        wait_for(
            Duration::from_secs(10),
            || fs::read_to_string(&ready).is_ok_and(|r| r.contains("ready")),
            || "ea-dns-server did not start".to_owned(),
        );
        DnsServer { log }
    }

    /// Starts the agent on this test's cgroup with the given policy text.
    pub fn agent(&self, policy: &str) -> Agent {
        let policy_path = self.path("policy.yaml");
        fs::write(&policy_path, policy).expect("write policy");
        Agent::start(&agent_bin(), &policy_path, &self.cgroup, &self.dir, &[])
    }

    /// A command run inside the namespace and inside the watched cgroup (it joins the cgroup
    /// before it enters the namespace: `ip netns exec` remounts /sys, hiding the cgroup mount).
    pub fn in_cgroup(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", "echo $$ > \"$1/cgroup.procs\" && shift && exec ip netns exec \"$@\"", "sh"])
            .arg(&self.cgroup)
            .arg(&self.netns)
            .arg(program)
            .args(args);
        c
    }

    /// Like [`Self::in_cgroup`], in the cgroup `rel` below this test's (which must exist; create
    /// it with [`Self::sub_cgroup`]). Processes only ever go to leaves: with controllers
    /// enabled, cgroup v2 refuses processes in a cgroup that has children.
    pub fn in_sub_cgroup(&self, rel: &str, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", "echo $$ > \"$1/cgroup.procs\" && shift && exec ip netns exec \"$@\"", "sh"])
            .arg(self.cgroup.join(rel))
            .arg(&self.netns)
            .arg(program)
            .args(args);
        c
    }

    /// Creates the cgroup `rel` (and the ones above it) below this test's; the environment
    /// removes them, deepest first, when dropped.
    pub fn sub_cgroup(&self, rel: &str) -> PathBuf {
        assert!(!rel.starts_with('/') && !rel.split('/').any(|c| c == ".."), "{rel}: relative, below the test cgroup");
        let dir = self.cgroup.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        dir
    }

    /// Starts the agent as `launch` says (environment, a wrapper program) and returns at once,
    /// without waiting for it to be ready (see [`Agent::wait_ready`]).
    pub fn agent_spawn(&self, policy: &str, extra: &[&str], launch: &Launch) -> Agent {
        let policy_path = self.path("policy.yaml");
        fs::write(&policy_path, policy).expect("write policy");
        Agent::spawn(&agent_bin(), &policy_path, &self.cgroup, &self.dir, extra, launch)
    }

    /// Starts the agent with extra command-line arguments.
    pub fn agent_with(&self, policy: &str, extra: &[&str]) -> Agent {
        let policy_path = self.path("policy.yaml");
        fs::write(&policy_path, policy).expect("write policy");
        Agent::start(&agent_bin(), &policy_path, &self.cgroup, &self.dir, extra)
    }

    /// Starts the agent with only the given arguments (no `--policy` file of the harness's).
    pub fn agent_args(&self, extra: &[&str]) -> Agent {
        Agent::start(&agent_bin(), Path::new(""), &self.cgroup, &self.dir, extra)
    }

    /// Runs a tests/py script in the cgroup and returns the JSON line it prints.
    pub fn py_client(&self, script: &str, args: &[&str]) -> Value {
        let path = py(script);
        let mut all = vec![path.as_str()];
        all.extend_from_slice(args);
        let out = self.in_cgroup("python3", &all).output().expect("run client");
        assert!(out.status.success(), "{script} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{script} output {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs tests/py/client.py in the cgroup and returns its JSON report.
    pub fn client(&self, mode: &str, addr: &str, port: u16) -> Value {
        let out =
            self.in_cgroup("python3", &[&py("client.py"), mode, addr, &port.to_string()]).output().expect("run client");
        assert!(out.status.success(), "client {mode} {addr}:{port} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("client output {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs the client in the namespace but outside the watched cgroup.
    pub fn client_outside(&self, mode: &str, addr: &str, port: u16) -> Value {
        let out = sh(Command::new("ip").args([
            "netns",
            "exec",
            &self.netns,
            "python3",
            &py("client.py"),
            mode,
            addr,
            &port.to_string(),
            "0",
        ]));
        serde_json::from_slice(&out.stdout).expect("client output")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A datapath a test left pinned (fail-closed, or an agent killed) is detached first.
        remove_pins(&pin_dir_of(&self.dir));
        // A cgroup can only be removed once empty (children first): kill what a test left.
        remove_cgroup_tree(&self.cgroup);
        let _ = fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.netns));
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn py(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name).display().to_string()
}

/// The test resolver: what it was asked and answered.
pub struct DnsServer {
    log: PathBuf,
}

impl DnsServer {
    /// One JSON object per query handled: proto, name, qtype, rcode, answers, tc.
    pub fn queries(&self) -> Vec<Value> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// What a test server received.
pub struct ServerLog {
    log: PathBuf,
}

impl ServerLog {
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Everything after the ready line.
    pub fn received(&self) -> Vec<String> {
        self.lines().into_iter().filter(|l| l != "ready").collect()
    }

    pub fn wait_received(&self, n: usize) -> Vec<String> {
        wait_for(
            Duration::from_secs(10),
            || self.received().len() >= n,
            || format!("server got {:?}, expected {n} entries", self.received()),
        );
        self.received()
    }
}

/// A capture of the packets to `addr` on the namespace's loopback while `run` runs; returns
/// what `run` returned and how many packets went to `addr`.
pub fn captured<T>(env: &TestEnv, addr: &str, run: impl FnOnce() -> T) -> (T, u64) {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = env.path(&format!("sniff-{n}.log"));
    let mut sniffer = Command::new("ip")
        .args(["netns", "exec", &env.netns, "python3", &py("sniff.py"), addr, "3"])
        .arg(&log)
        .spawn()
        .expect("sniff.py");
    wait_for(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready")),
        || "the capture did not start".into(),
    );
    let out = run();
    sniffer.wait().expect("sniff.py");
    let text = std::fs::read_to_string(&log).expect("sniff log");
    let last: Value = serde_json::from_str(text.lines().last().expect("count")).expect("count JSON");
    (out, last["count"].as_u64().expect("count"))
}

pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{}", what());
        sleep(Duration::from_millis(20));
    }
}

/// A policy document with the given spec body (indented two spaces under `spec:`).
pub fn policy(spec: &str) -> String {
    let mut s = String::from("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: test}\nspec:\n");
    s.push_str(spec);
    s
}

/// Writes to a file, replacing it atomically (rename), as config management tools do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).expect("create temp");
    f.write_all(text.as_bytes()).expect("write temp");
    f.sync_all().expect("sync temp");
    fs::rename(&tmp, path).expect("rename");
}

/// The interpreter behind `python3` (which may be a wrapper script, e.g. a pyenv shim).
pub fn python_exe() -> String {
    let out = Command::new("python3")
        .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The file a command on PATH resolves to, symlinks followed.
pub fn realpath_of(bin: &str) -> PathBuf {
    let out =
        Command::new("sh").args(["-c", &format!("readlink -f \"$(command -v {bin})\"")]).output().expect("readlink");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A process started in the test cgroup that waits for a go-ahead: a Python script that prints
/// its pid, reads one line from stdin, then does its work and prints one result line.
pub struct Held {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    pub pid: u64,
}

impl Held {
    /// Starts `program -c script` in `env`'s cgroup and waits for the pid line.
    pub fn start(env: &TestEnv, program: &str, script: &str) -> Self {
        let mut child = env
            .in_cgroup(program, &["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("pid line");
        let pid = line.trim().parse().unwrap_or_else(|e| panic!("pid line {line:?}: {e}"));
        Self { child, out, pid }
    }

    /// Lets the script go on; returns its result line once it has exited.
    pub fn go(mut self) -> String {
        self.child.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("go");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).expect("result line");
        let _ = self.child.wait();
        line.trim().to_owned()
    }
}
