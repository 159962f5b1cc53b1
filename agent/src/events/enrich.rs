//! Who made an attempt: executable path, command line, cgroup and container, from /proc and the
//! cgroup hierarchy. Caches are bounded (LRU). The process may be gone by the time its event is
//! read; it still yields an event, with what the kernel recorded and what the caches remember.

use std::{num::NonZeroUsize, path::PathBuf, sync::Arc};

use agent_common::{Event, ExecEvent};
use lru::LruCache;

use crate::{
    cgroup, container, events,
    fileid::{self, FileId},
};

#[derive(Debug, Clone, Default)]
pub struct ProcInfo {
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Enriched {
    pub proc: Arc<ProcInfo>,
    pub cgroup: Option<String>,
    /// The container and pod the cgroup path names (see `container`).
    pub identity: Option<Arc<container::Identity>>,
    /// The pod's namespace, name and labels, when this node's pod list has its UID.
    pub pod: Option<Arc<crate::kube::PodMeta>>,
}

/// Upper bounds of the caches; a busy host with more live processes only costs extra /proc reads.
const PROC_CACHE: usize = 4096;
const EXE_CACHE: usize = 4096;
/// Parsed cgroup paths by cgroup id: one parse per cgroup, not per event.
const IDENTITY_CACHE: usize = 4096;
/// Command lines are cut here: enough to identify a process, bounded per event.
const MAX_CMDLINE_BYTES: usize = 1024;

pub struct Enricher {
    /// Keyed by (pid, start time, executable inode): a reused pid or an exec gives a new key.
    procs: LruCache<(u32, u64, u64), Arc<ProcInfo>>,
    /// Executable paths by (kernel dev_t, inode), to name the exe of processes already gone.
    exes: LruCache<(u32, u64), String>,
    cgroups: cgroup::CgroupNames,
    /// Keyed by cgroup id; a recreated cgroup has a new id, so entries never go stale.
    identities: LruCache<u64, Option<Arc<container::Identity>>>,
    cmdline: bool,
    /// This node's pod list (config `kubernetes.pods`), looked up per event: a pod's first
    /// events may come before the list has it.
    pods: Option<crate::kube::Pods>,
}

impl Enricher {
    pub fn new(cgroup_mount: PathBuf, cmdline: bool) -> Self {
        let nz = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            procs: LruCache::new(nz(PROC_CACHE)),
            exes: LruCache::new(nz(EXE_CACHE)),
            cgroups: cgroup::CgroupNames::new(cgroup_mount),
            identities: LruCache::new(nz(IDENTITY_CACHE)),
            cmdline,
            pods: None,
        }
    }

    /// Names pods in events from this node's pod list.
    pub fn with_pods(mut self, pods: Option<crate::kube::Pods>) -> Self {
        self.pods = pods;
        self
    }

    /// The fill of its caches.
    pub fn fill(&self) -> [crate::memory::CacheFill; 4] {
        use crate::memory::CacheFill;
        [
            CacheFill::new("processes", self.procs.len(), self.procs.cap().get()),
            CacheFill::new("executables", self.exes.len(), self.exes.cap().get()),
            CacheFill::new("cgroup_identities", self.identities.len(), self.identities.cap().get()),
            self.cgroups.fill(),
        ]
    }

    /// The cgroup2 mount the cgroup paths are relative to.
    pub fn mount(&self) -> &std::path::Path {
        self.cgroups.mount()
    }

    pub fn enrich(&mut self, ev: &Event) -> Enriched {
        let proc = self.proc_info(ev);
        let cgroup = self.cgroups.lookup(ev.cgroup_id);
        let identity = match (self.identities.get(&ev.cgroup_id), &cgroup) {
            (Some(i), _) => i.clone(),
            (None, Some(path)) => {
                let i = Some(container::parse(path)).filter(|i| !i.is_empty()).map(Arc::new);
                self.identities.put(ev.cgroup_id, i.clone());
                i
            }
            // Unknown cgroup (gone before it was seen): nothing to remember.
            (None, None) => None,
        };
        let pod = match (&self.pods, identity.as_deref().and_then(|i| i.pod_uid.as_deref())) {
            (Some(pods), Some(uid)) => pods.get(uid),
            _ => None,
        };
        Enriched { proc, cgroup, identity, pod }
    }

    /// Learns the executable of a process from its exec record, while /proc may still show it.
    /// The path given to execve is trusted only once it resolves to the very file the kernel
    /// reported (same device and inode), so a renamed or replaced file is not misnamed.
    pub fn on_exec(&mut self, ex: &ExecEvent) {
        if ex.exe_ino == 0 {
            return;
        }
        let dev = ex.exe_dev;
        let same_file = |p: &std::path::Path| fileid::file_id(p).is_ok_and(|id| id == FileId { dev, ino: ex.exe_ino });
        let given = PathBuf::from(events::c_str(&ex.filename));
        let base = format!("/proc/{}", ex.pid);
        // /proc/PID/exe is checked through the magic link itself, which works across mount
        // namespaces (a container's paths do not exist in ours); its target names the file.
        let exe = std::fs::read_link(format!("{base}/exe"))
            .ok()
            .filter(|_| same_file(std::path::Path::new(&format!("{base}/exe"))))
            .or_else(|| std::fs::canonicalize(&given).ok().filter(|p| given.is_absolute() && same_file(p)));
        let Some(exe) = exe.map(|p| p.to_string_lossy().into_owned()) else { return };
        self.exes.put((dev, ex.exe_ino), exe.clone());
        let cmdline = if self.cmdline { read_cmdline(&format!("{base}/cmdline")) } else { None };
        self.procs.put((ex.pid, ex.start_ns, ex.exe_ino), Arc::new(ProcInfo { exe: Some(exe), cmdline }));
    }

    fn proc_info(&mut self, ev: &Event) -> Arc<ProcInfo> {
        let key = (ev.pid, ev.start_ns, ev.exe_ino);
        if let Some(p) = self.procs.get(&key) {
            return p.clone();
        }
        let dev = ev.exe_dev;
        let base = format!("/proc/{}", ev.pid);
        // Trust /proc only if it still shows the executable the kernel saw: the pid may have been
        // reused, or the process may have exec'd something else since.
        let exe = fileid::file_id(std::path::Path::new(&format!("{base}/exe")))
            .ok()
            .filter(|id| ev.exe_ino == 0 || *id == FileId { dev, ino: ev.exe_ino })
            .and_then(|_| std::fs::read_link(format!("{base}/exe")).ok())
            .map(|p| p.to_string_lossy().into_owned());
        let info = match exe {
            Some(exe) => {
                if ev.exe_ino != 0 {
                    self.exes.put((dev, ev.exe_ino), exe.clone());
                }
                let cmdline = if self.cmdline { read_cmdline(&format!("{base}/cmdline")) } else { None };
                ProcInfo { exe: Some(exe), cmdline }
            }
            // Gone (or replaced): name the executable from an earlier sighting of the same file.
            None => ProcInfo { exe: self.exes.get(&(dev, ev.exe_ino)).cloned(), cmdline: None },
        };
        let info = Arc::new(info);
        if info.exe.is_some() {
            self.procs.put(key, info.clone());
        }
        info
    }
}

fn read_cmdline(path: &str) -> Option<Vec<String>> {
    let raw = std::fs::read(path).ok()?;
    let raw = &raw[..raw.len().min(MAX_CMDLINE_BYTES)];
    let args: Vec<String> =
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    (!args.is_empty()).then_some(args)
}
