//! The agent under test: started with the test's own admin socket and pinned-datapath
//! directory, its log and events read back, stopped (SIGTERM) when dropped.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::Ordering,
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{agent_bin, pin_dir_of, SEQ};

/// How a test starts the agent, beyond its arguments.
#[derive(Default)]
pub struct Launch<'a> {
    /// Extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub env: &'a [(&'a str, &'a str)],
    /// A program (and its arguments) the agent is run under, e.g. `setpriv` with a capability set.
    pub wrapper: &'a [&'a str],
}

/// A running `egress-agent run`. Dropping it sends SIGTERM and waits, which detaches the programs.
pub struct Agent {
    child: Option<Child>,
    pub events: PathBuf,
    pub stderr: PathBuf,
    /// The agent's admin socket (in the test's directory unless the test chose one).
    pub admin: PathBuf,
}

impl Agent {
    pub fn start(bin: &Path, policy: &Path, cgroup: &Path, dir: &Path, extra: &[&str]) -> Self {
        let mut agent = Self::spawn(bin, policy, cgroup, dir, extra, &Launch::default());
        agent.wait_ready();
        agent
    }

    /// Starts the agent and returns at once.
    pub fn spawn(bin: &Path, policy: &Path, cgroup: &Path, dir: &Path, extra: &[&str], launch: &Launch) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let events = dir.join(format!("events-{n}.jsonl"));
        let stderr = dir.join(format!("agent-{n}.log"));
        let admin = match extra.iter().position(|a| *a == "--admin") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => dir.join(format!("admin-{n}.sock")),
        };
        // Each test's datapath is pinned in a directory of its own (restarts within a test
        // adopt it; other tests and the host's agent never see it).
        let pin_dir = pin_dir_of(dir);
        let mut cmd = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.envs(launch.env.iter().copied());
        // If the test process dies (killed by a CI timeout), the agent must not outlive it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        // An empty `policy`: the test names its policy source among `extra`.
        let policy_args =
            if policy.as_os_str().is_empty() { vec![] } else { vec!["--policy".as_ref(), policy.as_os_str()] };
        let child = cmd
            .arg("run")
            .args(policy_args)
            .arg("--cgroup")
            .arg(cgroup)
            .arg("--events")
            .arg(&events)
            .args(if extra.contains(&"--admin") { vec![] } else { vec!["--admin".into(), admin.clone()] })
            .args(if extra.contains(&"--pin-dir") { vec![] } else { vec!["--pin-dir".into(), pin_dir] })
            .args(extra)
            .env("EGRESS_AGENT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("agent log"))
            .spawn()
            .expect("start egress-agent");
        Self { child: Some(child), events, stderr, admin }
    }

    /// Waits for the agent's "egress-agent ready"; panics if it exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("egress-agent ready") {
            if let Some(status) = self.exited() {
                panic!("egress-agent exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "egress-agent not ready after 30 s:\n{}", self.log());
            sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the agent has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The agent's pid (of the wrapper, if it was started under one that does not exec).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Complete event lines written so far (a line still being written is left for later).
    pub fn events(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.events).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits for the first event that satisfies `pred`.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no event {what} within 10 s; events:\n{:#?}\nagent log:\n{}",
                self.events(),
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// The event of process `pid` to `dst`:`dport`.
    pub fn event_of(&self, pid: u64, dst: &str, dport: u16) -> Value {
        self.wait_event(&format!("of pid {pid} to {dst}:{dport}"), |e| {
            e["pid"] == pid && e["dst"] == dst && e["dport"] == dport
        })
    }

    /// Runs `egress-agent VERB ARGS --admin <this agent's socket>` (status, reload, block ...).
    pub fn admin(&self, verb: &str, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .arg(verb)
            .args(args)
            .arg("--admin")
            .arg(&self.admin)
            .output()
            .unwrap_or_else(|e| panic!("egress-agent {verb}: {e}"))
    }

    /// `egress-agent status --json`.
    pub fn status(&self) -> Value {
        let out = self.admin("status", &["--json"]);
        assert!(out.status.success(), "status failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("agent running");
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("egress-agent did not stop within 10 s of SIGTERM:\n{}", self.log());
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
