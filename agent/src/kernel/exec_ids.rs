//! `EXEC_IDS`: the file each process executed (see agent-ebpf `identity`). The tracepoints keep
//! it for processes that exec or fork once they are attached; processes already running in the
//! watched cgroup get an entry here, from /proc, when the agent starts — what their executable
//! was then, so that a `prctl` after the start does not change who they are.
#![expect(clippy::result_large_err, reason = "DatapathError is large (see datapath.rs); this runs once, at start")]

use std::path::Path;

use agent_common::{maps, tamper, ExecId};
use aya::maps::{HashMap, MapError};

use super::datapath::{map_err, Datapath, DatapathError};

impl Datapath {
    /// Records the executable of every process in `watched` (a cgroup path relative to the
    /// cgroup2 mount, such as `/system.slice`) that has no entry yet. Returns how many.
    pub fn seed_exec_ids(&mut self, watched: &str) -> Result<usize, DatapathError> {
        let mut ids: HashMap<_, u32, ExecId> = self.map_mut(maps::EXEC_IDS)?;
        let under = |cg: &str| {
            watched == "/" || cg == watched || cg.strip_prefix(watched).is_some_and(|rest| rest.starts_with('/'))
        };
        let mut n = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else { return Ok(0) };
        for e in procs.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let base = Path::new("/proc").join(pid.to_string());
            let Ok(cg) = std::fs::read_to_string(base.join("cgroup")) else { continue };
            let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) else { continue };
            if !under(path.trim()) {
                continue;
            }
            // Kernel threads and processes gone meanwhile have no exe.
            let Ok(id) = crate::fileid::file_id(&base.join("exe")) else { continue };
            // Its exec was not seen, and what /proc says of it the process can rewrite: it is
            // never `untampered` (until it execs again); the bits /proc shows are kept for events.
            let value = ExecId { start_ns: 0, ino: id.ino, dev: id.dev, tamper: tamper::UNRECORDED | tamper_of(&base) };
            match ids.insert(pid, value, 1 /* BPF_NOEXIST */) {
                Ok(()) => n += 1,
                // Recorded by the tracepoints already (an exec or fork since they attached).
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(map_err(maps::EXEC_IDS)(e)),
            }
        }
        Ok(n)
    }
}

/// The [`tamper`] bits of a running process as /proc shows them: its environment strings (the
/// region the loader read at exec; unsetenv does not erase them) and whether it is traced now.
/// What cannot be read counts as steered, as in the kernel's scan.
pub fn tamper_of(base: &Path) -> u32 {
    let env = match std::fs::read(base.join("environ")) {
        Ok(env) if !env_steers(&env) => 0,
        _ => tamper::LOADER_ENV,
    };
    let traced = std::fs::read_to_string(base.join("status")).ok().is_some_and(|status| {
        status.lines().any(|l| l.strip_prefix("TracerPid:").is_some_and(|pid| pid.trim() != "0"))
    });
    env | if traced { tamper::TRACED } else { 0 }
}

/// Whether NUL-separated environment strings set a variable that steers the dynamic loader
/// (the list the exec tracepoint checks).
pub fn env_steers(env: &[u8]) -> bool {
    env.split(|&b| b == 0)
        .any(|var| [&b"LD_PRELOAD="[..], b"LD_AUDIT=", b"LD_LIBRARY_PATH="].iter().any(|name| var.starts_with(name)))
}

#[cfg(test)]
mod tests {
    use super::env_steers;

    #[test]
    fn steering_variables_are_found_anywhere_but_only_as_names() {
        assert!(env_steers(b"PATH=/bin\0LD_PRELOAD=/tmp/x.so\0"));
        assert!(env_steers(b"LD_AUDIT=a"));
        assert!(env_steers(b"A=1\0LD_LIBRARY_PATH=\0"));
        assert!(!env_steers(b"X=LD_PRELOAD=/tmp/x.so\0LD_BIND_NOW=1\0LD_PRELOADX=1\0"));
        assert!(!env_steers(b""));
    }
}
