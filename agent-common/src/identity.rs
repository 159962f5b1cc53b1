//! Who a process is, as the kernel programs see it: the exec record, the file each process
//! executed (`EXEC_IDS`), and the kernel struct offsets the agent reads from BTF for them.

/// Bytes of the exec'd path carried by an [`ExecEvent`] (longer paths are cut, NUL-terminated).
pub const EXEC_FILENAME_LEN: usize = 256;

/// A process in the watched cgroup executed a program. Lets the agent name the executable of a
/// process that has exited before its connection events are read (a `curl` in a script).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    /// [`crate::record::EXEC`].
    pub kind: u32,
    pub pid: u32,
    /// Kernel `dev_t` and inode of the new executable, as in [`crate::Event`].
    pub exe_dev: u32,
    pub _pad: u32,
    pub exe_ino: u64,
    pub ts_ns: u64,
    /// As [`crate::Event::start_ns`].
    pub start_ns: u64,
    /// The path given to execve (`linux_binprm.filename`), NUL-terminated; may be relative.
    pub filename: [u8; EXEC_FILENAME_LEN],
}

/// Field offsets in kernel structs, computed by the agent from the running kernel's BTF.
/// `valid == 0` means the agent could not compute them and the programs skip the exe lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub binprm_filename: u32,
    pub task_start_time: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub valid: u32,
    pub _pad: u32,
    /// Bit offset of `sk_buff.ip_summed` (a 2-bit field), or `u32::MAX` if unknown: tells the DNS
    /// parser whether the kernel has verified a datagram's checksum already.
    pub skb_ip_summed_bit: u32,
    /// `task_struct.pid`, `.tgid`, `.signal` and `signal_struct.live` (the fork and exit
    /// tracepoints: which task is a new process, and when a process's last thread ends).
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    /// `mm_struct.env_start` and `.env_end`, and `task_struct.ptrace` (the exec tracepoint: was
    /// the dynamic loader steered by the environment, is the process traced).
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub task_ptrace: u32,
    /// `inode.i_generation`: with (device, inode), tells a file from a later one that reuses
    /// its inode number.
    pub inode_generation: u32,
    pub _pad3: u32,
}

/// `CONFIG[0]`: settings that do not change with the policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: KernelOffsets,
    /// Wake the reader once this many bytes of events are pending (see [`crate::EVENTS_WAKEUP_BYTES`]
    /// for the default ring); 0 wakes it for every event.
    pub wakeup_bytes: u32,
    pub _pad: u32,
}

/// Value of `EXEC_IDS`: the file a process executed (recorded at exec, inherited at fork), so
/// that what `prctl` later sets as its executable does not change who it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecId {
    /// The thread-group leader's `start_time`, 0 when the agent recorded a process that was
    /// running before it (from /proc). Not compared in the hooks (a branch there costs the
    /// verifier too much): the exit tracepoint removes a process's entry when it ends, so a
    /// reused pid finds none; this says, to whoever reads the map, which process it was.
    pub start_ns: u64,
    pub ino: u64,
    pub dev: u32,
    /// [`tamper`] bits: how code other than the file's may run in the process. Recomputed at
    /// exec (a new image), inherited at fork, and only ever added to in between.
    pub tamper: u32,
}

/// Bits of [`ExecId::tamper`]: what an `untampered: true` selector refuses.
pub mod tamper {
    /// The environment at exec steered the dynamic loader (`LD_PRELOAD`, `LD_AUDIT` or
    /// `LD_LIBRARY_PATH`), or was too large to read whole: code the executable did not name may
    /// run in it.
    pub const LOADER_ENV: u32 = 1;
    /// The process was traced (ptrace) since its exec: a tracer can write its memory and
    /// registers. Set when any of its threads stops for a tracer, or is traced at exec; kept
    /// until the next exec.
    pub const TRACED: u32 = 2;
    /// The agent did not see the process's exec, so its history is unknown: what the hooks use
    /// for a process without an entry (it joined the watched cgroup since), the mark of the
    /// entries the agent makes from /proc at start (what /proc shows can be rewritten by the
    /// process: `PR_SET_MM_MAP` moves its environment), and inherited at fork.
    pub const UNRECORDED: u32 = 4;
}

/// Steps of the exec tracepoint's environment scan, [`ENV_CHUNK`] bytes at most each (one
/// string, or a piece of a long one). An environment it cannot finish counts as steered.
pub const ENV_SCAN_STEPS: u32 = 1 << 17;
/// Bytes read per step of the environment scan.
pub const ENV_CHUNK: usize = 64;

/// Processes with a recorded executable at once (entries are removed when a process ends;
/// never preallocated).
pub const MAX_EXEC_IDS: u32 = 1 << 20;
