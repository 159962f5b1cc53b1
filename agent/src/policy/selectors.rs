//! Process selectors resolved on this host into what the kernel checks: a uid, a comm, a cgroup
//! id with its depth, and the executables (device, inode) an `exe` glob matches now.

use agent_common::{selector_flags, Selector};

use crate::container::Component;

use super::{
    model::ProcessSelector,
    resolve::{ExeFile, Resolver},
    Merged,
};

/// How often the agent resolves selectors again (see run.rs), for messages.
pub const RESOLVE_EVERY_SECS: u64 = 5;

/// What each process selector of a policy resolves to: the selector as the kernel sees it and
/// the executables (dev, inode) its `exe` matched, in policy order.
pub type Fingerprint = Vec<(Selector, Vec<(u32, u64, Option<u32>)>)>;

pub(super) fn fingerprint_entry(
    s: &Selector,
    files: &[super::resolve::ExeFile],
) -> (Selector, Vec<(u32, u64, Option<u32>)>) {
    // The generation too: a reused inode number is another file, and must be compiled again.
    (*s, files.iter().map(|f| (f.dev, f.ino, f.gen)).collect())
}

/// A task name as the kernel stores it: at most 15 bytes, NUL-padded.
pub fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let b = comm.as_bytes();
    let n = b.len().min(15);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// What every process selector of `m` resolves to on this host now: compared between runs, it
/// tells whether the policy must be compiled again (a new binary, a recreated cgroup, a user)
/// without compiling it.
pub fn selector_fingerprint(m: &Merged, resolver: &dyn Resolver) -> Fingerprint {
    m.vendors
        .iter()
        .flat_map(|(v, _)| v.processes.iter())
        .flat_map(|sel| {
            let (ss, files, _) = compile_selector(sel, resolver);
            ss.iter().map(|s| fingerprint_entry(s, &files)).collect::<Vec<_>>()
        })
        .collect()
}

/// What resolving a selector has to say besides its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// It matches nothing now, or a script it matched never can: the policy loads.
    Warning(String),
    /// Its `exe` glob costs more to expand than a glob may: the policy is refused.
    Refused(String),
}

/// Resolves one selector into one kernel selector, or several when `pod_uid`/`container` match
/// several cgroups (alternatives: any of them matches). Parts that resolve to nothing make it
/// match nothing (and say why): an unknown user, no executable matching the glob, a cgroup, pod
/// or container that does not exist yet.
pub(super) fn compile_selector(sel: &ProcessSelector, r: &dyn Resolver) -> (Vec<Selector>, Vec<ExeFile>, Option<Note>) {
    let mut s = Selector::default();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut script_note: Option<String> = None;
    if let Some(exe) = &sel.exe {
        s.flags |= selector_flags::EXE;
        files = match r.exes(&exe.0) {
            Ok(f) => f,
            Err(why) => {
                s.flags |= selector_flags::NEVER;
                return (vec![s], Vec::new(), Some(Note::Refused(why)));
            }
        };
        if files.is_empty() {
            problems.push(format!("exe `{}` matches no executable file on this host", exe.0));
        }
        // Scripts never match (the kernel runs, and sees, their interpreter); say so, but keep
        // the binaries the same glob matched.
        let (scripts, binaries): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.script);
        files = binaries;
        if !scripts.is_empty() {
            let names: Vec<&str> = scripts.iter().map(|f| f.path.as_str()).collect();
            script_note = Some(format!(
                "{} {} a `#!` script: the kernel sees its interpreter, never the script, so it cannot match; name the interpreter and narrow it with `user` or `cgroup`",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ));
            if files.is_empty() {
                problems.push("no executable it matches can be seen by the kernel".into());
            }
        }
    }
    if sel.untampered {
        s.flags |= selector_flags::UNTAMPERED;
    }
    if let Some(c) = &sel.comm {
        s.flags |= selector_flags::COMM;
        s.comm = comm_bytes(&c.0);
    }
    if let Some(uid) = sel.uid {
        s.flags |= selector_flags::UID;
        s.uid = uid;
    }
    if let Some(user) = &sel.user {
        s.flags |= selector_flags::UID;
        match r.user(user) {
            Some(uid) => s.uid = uid,
            None => problems.push(format!("user `{user}` does not exist on this host")),
        }
    }
    if let Some(cg) = &sel.cgroup {
        s.flags |= selector_flags::CGROUP;
        match r.cgroup(&cg.0) {
            Some((id, level)) => {
                s.cgroup_id = id;
                s.cgroup_level = level;
            }
            None => problems.push(format!("cgroup `{}` does not exist (yet)", cg.0)),
        }
    }
    let mut cgroups = Vec::new();
    if sel.names_pod() || sel.container.is_some() {
        s.flags |= selector_flags::CGROUP;
        match container_cgroups(sel, r) {
            Err(why) => problems.push(why),
            Ok(found) if found.is_empty() => problems.push(match (sel.names_pod(), &sel.container) {
                (true, Some(c)) => {
                    format!("no container matching `{c}` in pods with {} on this host (yet)", sel.pod_text())
                }
                (true, None) => format!("no pod with {} on this host (yet)", sel.pod_text()),
                (false, c) => format!("no container matching `{}` on this host (yet)", c.as_ref().map_or("", |c| &c.0)),
            }),
            Ok(found) => cgroups = found,
        }
    }
    if problems.is_empty() {
        let out = if cgroups.is_empty() {
            vec![s]
        } else {
            cgroups.iter().map(|&(cgroup_id, cgroup_level)| Selector { cgroup_id, cgroup_level, ..s }).collect()
        };
        return (out, files, script_note.map(Note::Warning));
    }
    s.flags |= selector_flags::NEVER;
    let mut msg = format!(
        "{}: this selector matches no process until it resolves (the agent retries every {} s and on reload)",
        problems.join("; "),
        RESOLVE_EVERY_SECS
    );
    if let Some(n) = script_note {
        msg = format!("{n}; {msg}");
    }
    (vec![s], files, Some(Note::Warning(msg)))
}

/// The cgroups (id, depth) a pod or `container` selector names: a pod's own cgroup (its
/// containers are below it, so one kernel check covers them all), or each matching container's.
/// Err when the selector names pods by metadata and no pod list can be consulted.
fn container_cgroups(sel: &ProcessSelector, r: &dyn Resolver) -> Result<Vec<(u64, u32)>, String> {
    let pod_ok = |uid: Option<&str>| -> Result<bool, String> {
        let Some(uid) = uid else { return Ok(!sel.names_pod()) };
        if sel.pod_uid.as_ref().is_some_and(|p| p.0 != uid) {
            return Ok(false);
        }
        if !sel.needs_pod_metadata() {
            return Ok(true);
        }
        Ok(r.pod(uid)?.is_some_and(|meta| sel.pod_matches(&meta)))
    };
    let mut out = Vec::new();
    for f in r.containers() {
        let matched = match (&f.what, &sel.container) {
            (Component::Container { id, .. }, Some(glob)) => glob.matches(id) && pod_ok(f.pod_uid.as_deref())?,
            (Component::Pod { uid, .. }, None) => sel.names_pod() && pod_ok(Some(uid))?,
            _ => false,
        };
        if matched {
            out.push((f.id, f.depth));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
