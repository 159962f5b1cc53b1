//! `EXEC_IDS`: the file each process executed (see agent-ebpf `identity`). The tracepoints keep
//! it for processes that exec or fork once they are attached; processes already running in the
//! watched cgroup get an entry here, from /proc, when the agent starts — what their executable
//! was then, so that a `prctl` after the start does not change who they are.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError is large (see datapath.rs); this runs once, at start"
)]

use std::path::Path;

use agent_common::{maps, ExecId};
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
            let value = ExecId { start_ns: 0, ino: id.ino, dev: id.dev, _pad: 0 };
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
