//! Reading policy files: only regular files, within a size, as UTF-8 with the place of a bad
//! byte; a directory's entries that cannot be read are named, not skipped silently.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{load, resolve::Resolver, PolicyError, Problem};

struct NoHost;

impl Resolver for NoHost {
    fn exes(&self, _pattern: &str) -> Result<Vec<super::resolve::ExeFile>, String> {
        Ok(Vec::new())
    }
    fn user(&self, _name: &str) -> Option<u32> {
        None
    }
    fn cgroup(&self, _path: &str) -> Option<(u64, u32)> {
        None
    }
}

const POLICY: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\nspec: {mode: monitor}\n";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ea-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// `load` of `paths` on a thread of its own: a FIFO or a device must not hang the test when
/// the reading is not bounded. Its warnings, or its error as text, and how long it took.
fn load_within(paths: &[PathBuf], limit: Duration) -> (Result<Vec<Problem>, String>, Duration) {
    let (tx, rx) = mpsc::channel();
    let owned = paths.to_vec();
    let started = Instant::now();
    std::thread::spawn(move || {
        let r = load(&owned, time::OffsetDateTime::now_utc(), &NoHost).map(|(_, _, w)| w).map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let r = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("loading {paths:?} took more than {limit:?}"));
    (r, started.elapsed())
}

#[test]
fn devices_fifos_and_links_to_them_are_refused_by_name_without_reading() {
    let d = dir("special");
    let zero = d.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let fifo = d.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    for (path, what) in [(&zero, "a character device (a symbolic link to /dev/zero)"), (&fifo, "a FIFO")] {
        let (r, took) = load_within(std::slice::from_ref(path), Duration::from_secs(5));
        let e = r.expect_err("refused");
        assert!(e.starts_with(&format!("{}: {what}, not a regular file", path.display())), "{e}");
        assert!(took < Duration::from_secs(1), "{what}: {took:?}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_oversized_file_is_refused_before_it_is_read() {
    let d = dir("big");
    let big = d.join("big.yaml");
    let mut text = POLICY.to_owned();
    while text.len() <= super::files::DEFAULT_MAX_BYTES as usize {
        text.push_str(&format!("# {}\n", "x".repeat(1021)));
    }
    std::fs::write(&big, &text).expect("write");
    let (r, took) = load_within(std::slice::from_ref(&big), Duration::from_secs(30));
    let e = r.expect_err("refused");
    assert!(e.contains(&big.display().to_string()) && e.contains("8388608"), "{e}");
    assert!(took < Duration::from_millis(200), "{took:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_the_place_of_the_bad_byte() {
    let d = dir("utf8");
    let f = d.join("latin1.yaml");
    std::fs::write(&f, [POLICY.as_bytes(), "# café à ".as_bytes(), b"\xe9t\xe9\n"].concat()).expect("write");
    let (r, _) = load_within(std::slice::from_ref(&f), Duration::from_secs(5));
    let e = r.expect_err("refused");
    assert!(
        e.starts_with(&format!("{}:5:10: error: ", f.display())) && e.contains("UTF-8") && e.contains("0xe9"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_broken_link_in_a_policy_directory_is_named_not_skipped_silently() {
    let d = dir("broken");
    std::fs::write(d.join("a.yaml"), POLICY).expect("a");
    std::os::unix::fs::symlink("gone/vendor.yaml", d.join("b.yaml")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", d.join("c.yaml")).expect("symlink");
    let (r, _) = load_within(std::slice::from_ref(&d), Duration::from_secs(5));
    let w: Vec<String> = r.expect("loads without them").iter().map(ToString::to_string).collect();
    let b = d.join("b.yaml").display().to_string();
    assert!(
        w.iter().any(|w| w.starts_with(&format!("{b}: warning: "))
            && w.contains("broken symbolic link")
            && w.contains("gone/vendor.yaml")),
        "{w:?}"
    );
    let c = d.join("c.yaml").display().to_string();
    assert!(w.iter().any(|w| w.starts_with(&format!("{c}: warning: ")) && w.contains("character device")), "{w:?}");
    // Nothing else to read: refused, naming what was not read.
    std::fs::remove_file(d.join("a.yaml")).expect("rm");
    let (r, _) = load_within(std::slice::from_ref(&d), Duration::from_secs(5));
    let e = r.expect_err("empty");
    assert!(e.contains("no policy files") && e.contains(&b), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn what_is_read_is_capped_even_when_the_size_said_less() {
    // procfs files say 0 bytes and have more: as a file growing between the check and the read.
    let e = super::files::read_text(Path::new("/proc/self/mountinfo"), 16).expect_err("capped");
    assert!(matches!(e, super::files::ReadError::TooLarge { .. }), "{e}");
    assert!(e.to_string().starts_with("over the limit of 16 bytes"), "{e}");
    let _ = PolicyError::Empty { path: String::new(), skipped: String::new() };
}
