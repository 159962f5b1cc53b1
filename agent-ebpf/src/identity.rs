//! Who is calling: the task's process identity as the selectors and events see it, and the exec
//! tracepoint that names short-lived processes.
//!
//! The executable is the file the process executed, recorded by the exec tracepoint in
//! `EXEC_IDS` and inherited at fork, not what its `mm->exe_file` says now: a process in its own
//! user namespace may point that at any file with `prctl(PR_SET_MM_MAP)` (and `/proc/PID/exe`
//! follows). A process whose `exe_file` no longer is the file it executed matches no `exe`
//! selector. A process running since before the agent has the entry the agent made from /proc
//! when it started (what its exe_file said then).

use agent_common::{record, tamper, ExecEvent, ExecId};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns},
    },
    programs::RawTracePointContext,
};

use crate::{
    maps::{CONFIG, EVENTS, EXEC_IDS, WATCHED_CGROUP},
    ring::{count_drop, wakeup_flags},
};

/// The calling task, read once per attempt: the verdict and the event both use it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Proc {
    /// The process's name: its thread-group leader's comm (what selectors match).
    pub pcomm: [u8; 16],
    pub start_ns: u64,
    pub pid_tgid: u64,
    pub uid_gid: u64,
    pub comm: [u8; 16],
    pub exe_dev: u32,
    /// With [`REPLACED`] set when `mm->exe_file` is not the file the process executed (see the
    /// module documentation): no `EXE_SET` entry has that bit, so no `exe` selector matches,
    /// and the selector walks need no state of their own for it (the verifier's budget).
    pub exe_ino: u64,
    /// `i_generation` of the inode of `mm->exe_file` (see [`current_exe`]).
    pub exe_gen: u32,
    /// [`tamper`] bits of the process: its exec record's, or [`tamper::UNRECORDED`].
    pub tamper: u32,
    /// The process's cgroup.
    pub cgroup_id: u64,
    /// Non-zero when this is the owner of the MPTCP connection whose subflow a kernel worker is
    /// opening (see `mptcp`): the connection's key, whose record has the owner's cgroups.
    pub subflow: u64,
}

/// Marks [`Proc::exe_ino`] of a process whose executable was pointed elsewhere. Inode numbers
/// never reach it.
pub const REPLACED: u64 = 1 << 63;

impl Proc {
    /// The inode of the file executed, without the mark.
    #[inline(always)]
    pub fn ino(&self) -> u64 {
        self.exe_ino & !REPLACED
    }

    #[inline(always)]
    pub fn replaced(&self) -> bool {
        self.exe_ino & REPLACED != 0
    }
}

#[inline(always)]
pub fn current_proc() -> Proc {
    let (exe_dev, exe_ino, exe_gen) = current_exe();
    let pid_tgid = bpf_get_current_pid_tgid();
    let (exe_dev, exe_ino, tampered) = executed((pid_tgid >> 32) as u32, exe_dev, exe_ino);
    Proc {
        pcomm: current_process_comm(),
        start_ns: current_start_ns(),
        pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        exe_dev,
        exe_ino,
        exe_gen,
        tamper: tampered,
        // SAFETY: plain helper.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        subflow: 0,
    }
}

/// What a cgroup_skb program can tell of the task sending a packet, without the task helpers
/// (which that program type does not have): its process's executable — its exec record's, with
/// [`REPLACED`] as in [`current_proc`] — and [`tamper`] bits. Packets of datagram sockets leave
/// in the sending syscall, so this is the sender.
#[inline(always)]
pub fn sender() -> (u32, u64, u32) {
    let (exe_dev, exe_ino, _) = current_exe();
    let tgid = match CONFIG.get(0) {
        Some(cfg) if cfg.offsets.valid != 0 => {
            // SAFETY: bpf_probe_read_kernel validates the address; a fault returns Err.
            unsafe {
                let task = bpf_get_current_task() as *const u8;
                bpf_probe_read_kernel(task.add(cfg.offsets.task_tgid as usize) as *const u32).unwrap_or(0)
            }
        }
        _ => 0,
    };
    executed(tgid, exe_dev, exe_ino)
}

/// The executable process `tgid` executed and its [`tamper`] bits, from its exec record, given
/// what its `mm->exe_file` is now (`exe_dev`, `exe_ino`): the record's file, with [`REPLACED`]
/// when the two differ; without a record, `exe_file`'s, [`tamper::UNRECORDED`].
#[inline(always)]
fn executed(tgid: u32, exe_dev: u32, exe_ino: u64) -> (u32, u64, u32) {
    let Some(id) = EXEC_IDS.get_ptr(&tgid) else { return (exe_dev, exe_ino, tamper::UNRECORDED) };
    // SAFETY: a live map value.
    let (id_dev, id_ino, marks) = unsafe { ((*id).dev, (*id).ino, (*id).tamper) };
    // Without a branch (each would double what the verifier walks in the hooks): the top bit of
    // `differs | -differs` is set exactly when the executable differs.
    let differs = u64::from(id_dev ^ exe_dev) | (id_ino ^ exe_ino);
    (id_dev, id_ino | ((differs | differs.wrapping_neg()) & REPLACED), marks)
}

/// The [`agent_common::event_flags2`] bits an event of `proc` carries for its identity.
#[inline(always)]
pub fn flags2_of(proc: &Proc) -> u8 {
    use agent_common::event_flags2::{EXEC_UNSEEN, EXE_REPLACED, LOADER_ENV, MPTCP_SUBFLOW, TRACED};
    // Branchless: tamper's LOADER_ENV and TRACED bits (1, 2) shift onto the event's (8, 16).
    let tampered = ((proc.tamper & (tamper::LOADER_ENV | tamper::TRACED)) << 3) as u8;
    const _: () = assert!(tamper::LOADER_ENV << 3 == LOADER_ENV as u32 && tamper::TRACED << 3 == TRACED as u32);
    (u8::from(proc.replaced()) * EXE_REPLACED)
        | tampered
        | (u8::from(proc.subflow != 0) * MPTCP_SUBFLOW)
        | (u8::from(proc.tamper & tamper::UNRECORDED != 0) * EXEC_UNSEEN)
}

/// A connect record of `proc` that no rule decided (`RULE_DEFAULT`, no flow, no destination):
/// what the packet and socket checks report; callers fill in the rest.
#[inline(always)]
pub fn report_of(proc: &Proc, generation: u32, verdict: u8, flags2: u8) -> agent_common::Event {
    let mut flags = agent_common::event_flags::NO_FLOW;
    if proc.ino() == 0 {
        flags |= agent_common::event_flags::EXE_UNKNOWN;
    }
    agent_common::Event {
        kind: record::CONNECT,
        pid: (proc.pid_tgid >> 32) as u32,
        tid: proc.pid_tgid as u32,
        uid: proc.uid_gid as u32,
        gid: (proc.uid_gid >> 32) as u32,
        exe_dev: proc.exe_dev,
        rule_id: agent_common::RULE_DEFAULT,
        generation,
        // SAFETY: plain helper.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cookie: 0,
        cgroup_id: 0,
        exe_ino: proc.ino(),
        start_ns: proc.start_ns,
        daddr: [0; 16],
        comm: proc.comm,
        dport: 0,
        family: 0,
        proto: 0,
        verdict,
        hook: 0,
        flags,
        flags2: flags2 | flags2_of(proc),
        domain_id: 0,
        sock_type: 0,
    }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: a new process
/// (not a thread) of a watched one inherits the file its parent executed.
pub fn on_fork(ctx: &RawTracePointContext) -> i32 {
    if !WATCHED_CGROUP.current_task_under_cgroup(0).unwrap_or(false) {
        return 0;
    }
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    let off = &cfg.offsets;
    if off.valid == 0 {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    // SAFETY: bpf_probe_read_kernel validates every address; a fault returns Err.
    let (pid, tgid, start) = unsafe {
        (
            bpf_probe_read_kernel(child.add(off.task_pid as usize) as *const i32).unwrap_or(0),
            bpf_probe_read_kernel(child.add(off.task_tgid as usize) as *const i32).unwrap_or(-1),
            bpf_probe_read_kernel(child.add(off.task_start_time as usize) as *const u64).unwrap_or(0),
        )
    };
    if pid != tgid || pid <= 0 {
        return 0;
    }
    // The parent is the current task: what it executed, or (no entry) what its exe_file says.
    let parent = current_proc();
    // The child runs the parent's image, with whatever was done to it.
    let id = ExecId { start_ns: start, ino: parent.ino(), dev: parent.exe_dev, tamper: parent.tamper };
    let _ = EXEC_IDS.insert(&(tgid as u32), &id, 0);
    0
}

/// `sched_process_exit(struct task_struct *p)`: once a process's last thread ends, its entry goes.
pub fn on_exit(ctx: &RawTracePointContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    let off = &cfg.offsets;
    if off.valid == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    // SAFETY: bpf_probe_read_kernel validates every address; a fault returns Err.
    unsafe {
        let Ok(signal) = read_ptr(task, off.task_signal) else { return 0 };
        // `live` is decremented before the tracepoint fires: 0 once the whole group is dead.
        let live = bpf_probe_read_kernel(signal.add(off.signal_live as usize) as *const i32).unwrap_or(1);
        if live != 0 {
            return 0;
        }
        let tgid = bpf_probe_read_kernel(task.add(off.task_tgid as usize) as *const i32).unwrap_or(0);
        if tgid > 0 {
            let _ = EXEC_IDS.remove(&(tgid as u32));
        }
    }
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`: runs
/// in the context of the task that exec'd, after its new mm (and exe_file) is installed.
pub fn on_exec(ctx: &RawTracePointContext) -> i32 {
    // The tracepoint is host-wide; report only what the hooks can see.
    if !WATCHED_CGROUP.current_task_under_cgroup(0).unwrap_or(false) {
        return 0;
    }
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    if cfg.offsets.valid == 0 {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(2);
    // The new image is installed and nothing of the process has run yet: exe_file is the file
    // executed, whatever the process makes of it later.
    let (exe_dev, exe_ino, _) = current_exe();
    let start_ns = current_start_ns();
    // A new image: what was done to the old one is gone, what the environment does is not.
    let id = ExecId { start_ns, ino: exe_ino, dev: exe_dev, tamper: crate::tamper::at_exec(&cfg.offsets) };
    let _ = EXEC_IDS.insert(&((bpf_get_current_pid_tgid() >> 32) as u32), &id, 0);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return 0;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points at a reserved record of the right size; every field is written before
    // submit. The filename read is bounded by the array and NUL-terminated by the helper.
    unsafe {
        (*p).kind = record::EXEC;
        (*p).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*p).exe_dev = exe_dev;
        (*p)._pad = 0;
        (*p).exe_ino = exe_ino;
        (*p).ts_ns = bpf_ktime_get_ns();
        (*p).start_ns = start_ns;
        match read_ptr(bprm, cfg.offsets.binprm_filename) {
            Ok(name) => {
                if bpf_probe_read_kernel_str_bytes(name, &mut (*p).filename).is_err() {
                    (*p).filename[0] = 0;
                }
            }
            Err(_) => (*p).filename[0] = 0,
        }
    }
    entry.submit(wakeup_flags());
    0
}

/// `task->group_leader->comm`: the process's name, whichever thread is calling (empty if the
/// offsets are unknown, which matches no selector).
#[inline(always)]
fn current_process_comm() -> [u8; 16] {
    let Some(cfg) = CONFIG.get(0) else { return [0; 16] };
    if cfg.offsets.valid == 0 {
        return [0; 16];
    }
    // SAFETY: bpf_probe_read_kernel validates every address; a fault returns Err.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        match read_ptr(task, cfg.offsets.task_group_leader) {
            Ok(leader) => {
                bpf_probe_read_kernel(leader.add(cfg.offsets.task_comm as usize) as *const [u8; 16]).unwrap_or([0; 16])
            }
            Err(_) => [0; 16],
        }
    }
}

/// Start time of the current process (its thread-group leader's `start_time`, ns since boot;
/// 0 if unknown): with the pid, an identity that survives pid reuse and is the same for every
/// thread.
#[inline(always)]
fn current_start_ns() -> u64 {
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    if cfg.offsets.valid == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel validates every address; a fault returns Err.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        match read_ptr(task, cfg.offsets.task_group_leader) {
            Ok(leader) => {
                bpf_probe_read_kernel(leader.add(cfg.offsets.task_start_time as usize) as *const u64).unwrap_or(0)
            }
            Err(_) => 0,
        }
    }
}

/// (device, inode, generation) of the current task's executable: task->mm->exe_file->f_inode->
/// {i_sb->s_dev, i_ino, i_generation}. aya-ebpf has no CO-RE, so the offsets come from the
/// agent, which reads them from this kernel's BTF. Unlike comm, this identity cannot be chosen by
/// the process itself; the generation tells the file from a later one that reuses its inode
/// number once it is deleted.
#[inline(always)]
pub fn current_exe() -> (u32, u64, u32) {
    let Some(cfg) = CONFIG.get(0) else {
        return (0, 0, 0);
    };
    let off = &cfg.offsets;
    if off.valid == 0 {
        return (0, 0, 0);
    }
    // SAFETY: bpf_probe_read_kernel validates every address it reads; a fault returns Err.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let Ok(mm) = read_ptr(task, off.task_mm) else { return (0, 0, 0) };
        let Ok(file) = read_ptr(mm, off.mm_exe_file) else { return (0, 0, 0) };
        let Ok(inode) = read_ptr(file, off.file_inode) else { return (0, 0, 0) };
        let Ok(sb) = read_ptr(inode, off.inode_sb) else { return (0, 0, 0) };
        let ino = bpf_probe_read_kernel(inode.add(off.inode_ino as usize) as *const u64).unwrap_or(0);
        let gen = bpf_probe_read_kernel(inode.add(off.inode_generation as usize) as *const u32).unwrap_or(0);
        let dev = bpf_probe_read_kernel(sb.add(off.sb_dev as usize) as *const u32).unwrap_or(0);
        (dev, ino, gen)
    }
}

/// Reads the pointer at `base + offset`; a null base or a null result is an error (kernel threads
/// have no mm, a task in exit has no exe_file).
#[inline(always)]
unsafe fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, i32> {
    if base.is_null() {
        return Err(-1);
    }
    let p = unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const *const u8)? };
    if p.is_null() {
        Err(-1)
    } else {
        Ok(p)
    }
}
