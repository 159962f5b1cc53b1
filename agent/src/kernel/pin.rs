//! The datapath pinned in bpffs, so that it outlives the agent: enforcement, learnt addresses,
//! blocks, kills and counters go on while the agent is down (crashed, or being upgraded), and the
//! next agent adopts them instead of detaching and re-attaching.
//!
//! ```text
//! <root>/                      default /sys/fs/bpf/egress-agent (locked while an agent runs)
//!   layout-<id>/<MAP>          the maps, by the layout of this build and its sizes
//!   links/<cgroup id>/<prog>   the bpf links holding the programs on the watched cgroup
//! ```
//!
//! A new agent with the same layout reuses the maps as they are and swaps its programs into the
//! existing links with `BPF_LINK_UPDATE` (atomic per hook: every attempt is decided by the old
//! program or the new one). With another layout (a new version changed a map, or the ring or
//! flow table size changed) it creates fresh maps, installs the policy into them, then swaps
//! the programs the same way and removes the old maps: no attempt is ever undecided.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use tracing::{info, warn};

/// Where the datapath is pinned by default.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/egress-agent";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a deliberate stop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Detach everything: no agent, no enforcement.
    Open,
    /// Leave the last policy enforcing until an agent adopts it or `uninstall` removes it.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "{path} is not on a bpf filesystem, and mounting one on /sys/fs/bpf failed ({source}); mount it (`mount -t bpf bpf /sys/fs/bpf`) or run with `--pin-dir off`"
    )]
    NotBpffs { path: String, source: io::Error },
    #[error("another egress-agent runs with the pinned datapath {path}: stop it first")]
    Locked { path: String },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> PinError + '_ {
    move |source| PinError::Io { path: path.display().to_string(), source }
}

/// The pinned datapath of one agent: its directories and the lock it holds on the root.
pub struct Pins {
    pub root: PathBuf,
    layout_dir: PathBuf,
    /// The maps were there already: this agent adopts a running datapath.
    pub adopted: bool,
    /// Layouts of earlier versions, removed once the programs were swapped.
    old_layouts: Vec<PathBuf>,
    _lock: File,
}

impl Pins {
    /// The directory of this layout's maps.
    pub fn layout_dir(&self) -> &Path {
        &self.layout_dir
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid C string and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `root` is (to be) on bpffs, mounting one on /sys/fs/bpf if nothing is mounted there
/// (distributions mount it at boot; minimal systems and some containers do not).
fn ensure_bpffs(root: &Path) -> Result<(), PinError> {
    let existing = root.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if is_bpffs(existing).unwrap_or(false) {
        return Ok(());
    }
    let sys = Path::new("/sys/fs/bpf");
    let not_bpffs = |source| PinError::NotBpffs { path: existing.display().to_string(), source };
    if !root.starts_with(sys) || is_bpffs(sys).unwrap_or(false) {
        return Err(not_bpffs(io::Error::other("not a bpf filesystem")));
    }
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let mount = || -> io::Result<()> {
        let (src, dst, fs) = (c("bpf")?, c("/sys/fs/bpf")?, c("bpf")?);
        // SAFETY: valid C strings; no data argument.
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    mount().map_err(not_bpffs)?;
    info!("mounted a bpf filesystem on /sys/fs/bpf for the pinned datapath");
    Ok(())
}

/// Takes the root's lock: one agent per pinned datapath.
fn lock(root: &Path) -> Result<File, PinError> {
    let f = File::open(root).map_err(io_err(root))?;
    // SAFETY: plain syscall on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(PinError::Locked { path: root.display().to_string() });
        }
        return Err(io_err(root)(e));
    }
    Ok(f)
}

impl Pins {
    /// Opens (creating it if needed) the pinned datapath at `root` for a build whose maps have
    /// layout `layout`.
    pub fn open(root: &Path, layout: &str) -> Result<Self, PinError> {
        ensure_bpffs(root)?;
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock = lock(root)?;
        let layout_dir = root.join(format!("layout-{layout}"));
        let adopted = layout_dir.join(agent_common::maps::ACTIVE_SLOT).exists();
        fs::create_dir_all(&layout_dir).map_err(io_err(&layout_dir))?;
        let mut old_layouts = Vec::new();
        for e in fs::read_dir(root).map_err(io_err(root))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("layout-") && e.path() != layout_dir {
                old_layouts.push(e.path());
            }
        }
        if !old_layouts.is_empty() {
            info!(
                replaced = old_layouts.len(),
                "a datapath of another layout is pinned: this agent builds its own beside it and swaps it in"
            );
        }
        Ok(Pins { root: root.to_owned(), layout_dir, adopted, old_layouts, _lock: lock })
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.layout_dir.join(name)
    }

    /// The maps of the layout this start replaces, if any (the first found: normally the only).
    pub fn old_layout(&self) -> Option<&Path> {
        self.old_layouts.first().map(PathBuf::as_path)
    }

    /// The directory of the links on the cgroup with id `cgroup_id`.
    pub fn links_dir(&self, cgroup_id: u64) -> PathBuf {
        self.root.join("links").join(cgroup_id.to_string())
    }

    /// After the programs were swapped: removes the maps of earlier layouts and the links on
    /// cgroups other than `cgroup_id` (the watched cgroup changed), which detaches them.
    pub fn tidy(&mut self, cgroup_id: u64) {
        for dir in std::mem::take(&mut self.old_layouts) {
            info!(layout = %dir.display(), "removing the maps of the replaced datapath layout");
            for p in remove_tree(&dir) {
                tracing::debug!(removed = %p.display(), "unpinned");
            }
        }
        let links = self.root.join("links");
        if let Ok(rd) = fs::read_dir(&links) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy() != cgroup_id.to_string() {
                    info!(links = %e.path().display(), "detaching the links on a cgroup no longer watched");
                    remove_tree(&e.path());
                }
            }
        }
    }

    /// A deliberate stop in fail-open mode: everything is unpinned; the programs detach when the
    /// agent closes its last descriptors.
    pub fn release(self) -> Vec<PathBuf> {
        remove_tree(&self.root)
    }
}

/// The id of a cgroup v2 directory (its inode number).
pub fn cgroup_id(cgroup: &Path) -> Result<u64, PinError> {
    Ok(fs::metadata(cgroup).map_err(io_err(cgroup))?.ino())
}

/// Removes a pinned tree, deepest first; returns what it removed.
pub fn remove_tree(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                removed.extend(remove_tree(&p));
            } else if fs::remove_file(&p).is_ok() {
                removed.push(p);
            } else {
                warn!(path = %p.display(), "could not unpin");
            }
        }
    }
    if fs::remove_dir(dir).is_ok() {
        removed.push(dir.to_owned());
    }
    removed
}

/// `egress-agent uninstall`: removes the pinned datapath at `root` (which detaches its
/// programs), refusing while an agent holds it.
pub fn uninstall(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let lock = lock(root)?;
    let removed = remove_tree(root);
    drop(lock);
    Ok(removed)
}

// The two bpf(2) commands aya 0.14 does not expose for links: opening a pinned object, and
// replacing a link's program.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// Opens the object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let attr = ObjGet { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, _pad: 0 };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_OBJ_GET and `c` outlives the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGet, std::mem::size_of::<ObjGet>() as u32)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes `link` run `prog` from now on, atomically.
pub fn link_update(link: &OwnedFd, prog: RawFd) -> io::Result<()> {
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let attr = LinkUpdate { link_fd: link.as_raw_fd() as u32, new_prog_fd: prog as u32, flags: 0, old_prog_fd: 0 };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_LINK_UPDATE.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &attr as *const LinkUpdate,
            std::mem::size_of::<LinkUpdate>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The layout of this build's pinned maps with these sizes: a new agent reuses pinned maps only
/// when this is the same. Read from the embedded eBPF object (see `layout`).
pub fn layout_id(ring_bytes: u32, max_flows: u32) -> String {
    super::layout::layout_id(ring_bytes, max_flows)
}
