//! Every input bounded: the real binary against hostile inputs. `egress-agent check` (no eBPF)
//! refuses deep nesting, a link to /dev/zero, a FIFO, an oversized file, a glob over the whole
//! filesystem and a file that is not UTF-8, each within a second or two and naming the place,
//! and names a broken link in a policy directory. With the kernel harness, the agent refuses a
//! symlinked event file unless told to follow it, and an event file on a full filesystem (a
//! tmpfs this test mounts under its own directory) never holds part of a line: the lost records
//! are counted, and whole lines resume once there is room.
//! Run with `cargo xtask test` (root, one test at a time).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use egress_agent_tests::{agent_bin, policy, require_root, wait_for, Agent, TestEnv, ADDR4};
use serde_json::Value;

const HEAD: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n";

/// What a refusal may take, start to exit (the requirement is a second; the slack is for a
/// loaded CI machine).
const QUICK: Duration = Duration::from_secs(2);

/// A scratch directory of this test run.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ea-inputs-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("scratch dir");
    d
}

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `egress-agent ARGS`, killed if it takes more than 30 s (the unbounded inputs took
/// minutes).
fn run(dir: &Path, args: &[&str]) -> Ran {
    let (out, err) = (dir.join("out.txt"), dir.join("err.txt"));
    let started = Instant::now();
    let mut child = Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("out"))
        .stderr(fs::File::create(&err).expect("err"))
        .spawn()
        .expect("start egress-agent");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("egress-agent {args:?} still running after 30 s");
        }
        sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    Ran { status, stdout: read(&out), stderr: read(&err), took }
}

/// `check PATH` is refused (exit 2) within [`QUICK`], its stderr starting with `want`.
fn refused(dir: &Path, args: &[&str], want: &str) -> Ran {
    let r = run(dir, args);
    assert_eq!(r.status.code(), Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with(want), "{args:?}: want {want:?}, got:\n{}", r.stderr);
    assert!(r.took < QUICK, "{args:?} took {:?}", r.took);
    r
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn check_refuses_deep_nesting_at_once_with_its_place() {
    let d = scratch("deep");
    let flow = d.join("flow.yaml");
    fs::write(&flow, "[".repeat(200_000)).expect("write");
    refused(
        &d,
        &["check", arg(&flow)],
        &format!("{}:1:65: error: (document): nested deeper than 64 levels", arg(&flow)),
    );
    let maps = d.join("maps.yaml");
    fs::write(&maps, "{a: ".repeat(100_000)).expect("write");
    refused(
        &d,
        &["check", arg(&maps)],
        &format!("{}:1:257: error: (document): nested deeper than 64 levels", arg(&maps)),
    );
    // Block nesting: it overflowed the stack (an abort, not an error).
    let block = d.join("block.yaml");
    fs::write(&block, (0..3000).map(|i| format!("{}a:\n", " ".repeat(i))).collect::<String>()).expect("write");
    refused(&d, &["check", arg(&block)], &format!("{}:65:", arg(&block)));
    // The agent's configuration is parsed by the same library.
    let config = d.join("agent.yaml");
    fs::write(&config, format!("sinks: {}", "[".repeat(200_000))).expect("write");
    refused(
        &d,
        &["check", "--config", arg(&config)],
        &format!("{}:1:71: error: (document): nested deeper", arg(&config)),
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn check_reads_regular_files_only_and_within_their_cap() {
    let d = scratch("files");
    let zero = d.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    refused(
        &d,
        &["check", arg(&zero)],
        &format!("{}: a character device (a symbolic link to /dev/zero), not a regular file", arg(&zero)),
    );
    let fifo = d.join("fifo.yaml");
    sh_ok(Command::new("mkfifo").arg(&fifo));
    refused(&d, &["check", arg(&fifo)], &format!("{}: a FIFO, not a regular file", arg(&fifo)));
    // 100 MB (sparse: what matters is what the agent would read).
    let big = d.join("big.yaml");
    let f = fs::File::create(&big).expect("create");
    f.set_len(100 << 20).expect("size");
    refused(&d, &["check", arg(&big)], &format!("{}: 104857600 bytes, over the limit of 8388608", arg(&big)));
    // The cap is the flag's, else the configuration's.
    let p = d.join("p.yaml");
    fs::write(&p, format!("{HEAD}spec: {{mode: monitor}}\n# {}\n", "x".repeat(2000))).expect("write");
    refused(&d, &["check", "--policy-file-max-bytes", "1024", arg(&p)], &format!("{}: 2", arg(&p)));
    let config = d.join("agent.yaml");
    fs::write(&config, format!("policy: [{}]\npolicyFileMaxBytes: 1024\n", arg(&p))).expect("write");
    let r = run(&d, &["check", "--config", arg(&config)]);
    assert!(r.status.code() == Some(2) && r.stderr.contains("over the limit of 1024"), "{}{}", r.stdout, r.stderr);
    let r = run(&d, &["check", "--config", arg(&config), "--policy-file-max-bytes", "4096"]);
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn check_refuses_a_glob_over_the_whole_filesystem_within_a_second() {
    let d = scratch("glob");
    let p = d.join("p.yaml");
    fs::write(
        &p,
        format!("{HEAD}spec:\n  vendors:\n    - name: x\n      destinations: [{{cidr: 1.1.1.1}}]\n      processes: [{{exe: /*/*/*/*/*/*}}]\n"),
    )
    .expect("write");
    let r = refused(&d, &["check", arg(&p)], &format!("{}:8:", arg(&p)));
    assert!(
        r.stderr.contains("error: spec.vendors[0].processes[0]: exe `/*/*/*/*/*/*` ")
            && (r.stderr.contains("would look at more than 100000 directory entries")
                || r.stderr.contains("took more than 500 ms"))
            && r.stderr.contains("name the directory"),
        "{}",
        r.stderr
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn check_places_a_byte_that_is_not_utf8() {
    let d = scratch("utf8");
    let p = d.join("latin1.yaml");
    fs::write(&p, [HEAD.as_bytes(), b"spec: {mode: monitor}\n# caf\xe9\n"].concat()).expect("write");
    refused(&d, &["check", arg(&p)], &format!("{}:5:6: error: (document): not UTF-8: byte 0xe9", arg(&p)));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn check_names_a_broken_link_in_a_policy_directory() {
    let d = scratch("broken");
    let dir = d.join("policy.d");
    fs::create_dir_all(&dir).expect("dir");
    fs::write(dir.join("base.yaml"), format!("{HEAD}spec: {{mode: monitor}}\n")).expect("write");
    std::os::unix::fs::symlink("../gone/stripe.yaml", dir.join("stripe.yaml")).expect("symlink");
    let r = run(&d, &["check", arg(&dir)]);
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    let want =
        format!("{}: warning: (file): a broken symbolic link (to ../gone/stripe.yaml", arg(&dir.join("stripe.yaml")));
    assert!(r.stderr.lines().any(|l| l.starts_with(&want)), "{}", r.stderr);
    let _ = fs::remove_dir_all(&d);
}

fn sh_ok(cmd: &mut Command) {
    let s = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(s.success(), "{cmd:?}: {s}");
}

const DENIED: u16 = 9001;

fn spec() -> String {
    policy("  mode: enforce\n  default: deny\n")
}

/// Starts the agent with `config` as its configuration and `extra` arguments; returns at once.
fn spawn(env: &TestEnv, config: &str, extra: &[&str]) -> Agent {
    let path = env.path("agent.yaml");
    fs::write(&path, config).expect("write config");
    let mut args = vec!["--config", arg(&path), "--events-per-key", "0", "--metrics", "off"];
    args.extend_from_slice(extra);
    env.agent_spawn(&spec(), &args, &egress_agent_tests::Launch::default())
}

#[test]
fn a_symlinked_event_file_is_refused_unless_followed() {
    let env = TestEnv::new("evlink");
    let real = env.path("real.jsonl");
    let link = env.path("link.jsonl");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let mut agent = spawn(&env, &format!("sinks:\n  - {{name: linked, type: file, path: {}}}\n", arg(&link)), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.exited() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", agent.log());
        sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status}");
    assert!(agent.log().contains("a symbolic link, not followed"), "{}", agent.log());
    assert!(!real.exists(), "nothing was created through the link");
    drop(agent);
    // Followed when asked. A policy directory beside the harness's policy file holds a broken
    // link: the agent starts without it and names it in its log.
    let dir = env.path("policy.d");
    fs::create_dir_all(&dir).expect("policy.d");
    fs::write(dir.join("base.yaml"), policy("  mode: enforce\n")).expect("write");
    std::os::unix::fs::symlink("gone.yaml", dir.join("vendor.yaml")).expect("symlink");
    let mut agent = spawn(
        &env,
        &format!("sinks:\n  - {{name: linked, type: file, path: {}, followSymlinks: true}}\n", arg(&link)),
        &["--policy", arg(&dir)],
    );
    agent.wait_ready();
    let named = format!("{}: warning: (file): a broken symbolic link (to gone.yaml", arg(&dir.join("vendor.yaml")));
    assert!(agent.log().lines().any(|l| l.contains("policy warning") && l.contains(&named)), "{}", agent.log());
    let pid = spray(&env, 3);
    wait_for(
        Duration::from_secs(10),
        || connects(&whole_lines(&real), pid) == 3,
        || format!("{} of 3 records through the link", connects(&whole_lines(&real), pid)),
    );
}

/// A tmpfs mounted on `dir` for this test, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        fs::create_dir_all(dir).expect("mount point");
        sh_ok(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(dir));
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `n` refused datagrams from one process; its pid.
fn spray(env: &TestEnv, n: usize) -> u64 {
    let r = env.py_client("bulk.py", &["spray", ADDR4, &DENIED.to_string(), &n.to_string(), "10"]);
    assert_eq!(r["refused"], n, "{r}");
    r["pid"].as_u64().expect("pid")
}

/// The lines of a file, each of which must be whole JSON, and the file must end with a newline.
fn whole_lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends inside a line: …{:?}", path.display(), tail(&text));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {l}")))
        .collect()
}

fn tail(text: &str) -> &str {
    let mut i = text.len().saturating_sub(120);
    while !text.is_char_boundary(i) {
        i += 1;
    }
    &text[i..]
}

fn connects(recs: &[Value], pid: u64) -> usize {
    recs.iter().filter(|r| r["kind"] == "connect" && r["pid"] == pid).count()
}

fn sink<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sinks"].as_array().and_then(|s| s.iter().find(|s| s["name"] == name)).unwrap_or(&Value::Null)
}

#[test]
fn an_event_file_on_a_full_disk_never_holds_part_of_a_line() {
    require_root();
    let env = TestEnv::new("diskfull");
    // Declared after the environment: unmounted before its directory goes.
    let mnt = Tmpfs::mount(&env.path("full"), "64k");
    // Fill the filesystem, then give back 8 KiB: room for a dozen records or so.
    let filler = mnt.0.join("filler");
    let mut f = fs::File::create(&filler).expect("filler");
    let block = vec![b'x'; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    let len = fs::metadata(&filler).expect("filler").len();
    f.set_len(len.saturating_sub(8192)).expect("make room");
    drop(f);
    let events = mnt.0.join("events.jsonl");
    let mut agent = spawn(&env, &format!("sinks:\n  - {{name: full, type: file, path: {}}}\n", arg(&events)), &[]);
    agent.wait_ready();
    // Far more than fits: the filesystem fills mid-batch.
    let pid = spray(&env, 200);
    wait_for(
        Duration::from_secs(10),
        || connects(&whole_lines(&agent.events), pid) == 200,
        || "the events sink did not get the 200 records".to_owned(),
    );
    // Every record is either whole in the file or counted lost (the sink writes after the
    // events sink: wait for it to have done so).
    let accounted = || {
        let kept = connects(&whole_lines(&events), pid) as u64;
        (kept, sink(&agent.status(), "full")["dropped"].as_u64().unwrap_or(0))
    };
    wait_for(
        Duration::from_secs(5),
        || accounted().0 + accounted().1 == 200,
        || format!("(written, lost) {:?} of 200: {}", accounted(), sink(&agent.status(), "full")),
    );
    let (kept, _) = accounted();
    assert!(kept > 0 && kept < 200, "{kept} of 200 written");
    eprintln!("disk full: {kept} of 200 records written whole, {} counted lost", 200 - kept);
    let s = agent.status();
    let full = sink(&s, "full");
    assert_eq!(full["dropped"].as_u64(), Some(200 - kept), "{full}");
    assert_eq!(full["healthy"], false, "{full}");
    assert!(full["last_error"].as_str().is_some_and(|e| e.contains("No space left")), "{full}");
    assert!(agent.log().contains("writing events failed"), "{}", agent.log());
    // Room again: whole lines resume, and nothing more is lost.
    fs::remove_file(&filler).expect("free the space");
    let again = spray(&env, 20);
    wait_for(
        Duration::from_secs(10),
        || connects(&whole_lines(&events), again) == 20,
        || format!("{} of 20 records after the space came back", connects(&whole_lines(&events), again)),
    );
    let s = agent.status();
    assert_eq!(sink(&s, "full")["dropped"].as_u64(), Some(200 - kept), "{s}");
    assert_eq!(sink(&s, "full")["healthy"], true, "{s}");
    assert!(agent.log().contains("writing events again"), "{}", agent.log());
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
    assert_eq!(connects(&whole_lines(&events), pid) as u64, kept);
}
