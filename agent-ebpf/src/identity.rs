//! Who is calling: the task's process identity as the selectors and events see it, and the exec
//! tracepoint that names short-lived processes.

use agent_common::{record, ExecEvent};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_task, bpf_ktime_get_ns},
    },
    programs::RawTracePointContext,
};

use crate::{
    maps::{CONFIG, EVENTS, WATCHED_CGROUP},
    ring::{count_drop, wakeup_flags},
};

/// The calling task, read once per attempt: the verdict and the event both use it.
pub struct Proc {
    /// The process's name: its thread-group leader's comm (what selectors match).
    pub pcomm: [u8; 16],
    pub start_ns: u64,
    pub pid_tgid: u64,
    pub uid_gid: u64,
    pub comm: [u8; 16],
    pub exe_dev: u32,
    pub exe_ino: u64,
}

#[inline(always)]
pub fn current_proc() -> Proc {
    let (exe_dev, exe_ino) = current_exe();
    Proc {
        pcomm: current_process_comm(),
        start_ns: current_start_ns(),
        pid_tgid: bpf_get_current_pid_tgid(),
        uid_gid: bpf_get_current_uid_gid(),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        exe_dev,
        exe_ino,
    }
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
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return 0;
    };
    let (exe_dev, exe_ino) = current_exe();
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
        (*p).start_ns = current_start_ns();
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

/// (device, inode) of the current task's executable: task->mm->exe_file->f_inode->{i_sb->s_dev,
/// i_ino}. aya-ebpf has no CO-RE, so the offsets come from the agent, which reads them from this
/// kernel's BTF. Unlike comm, this identity cannot be chosen by the process itself.
#[inline(always)]
fn current_exe() -> (u32, u64) {
    let Some(cfg) = CONFIG.get(0) else {
        return (0, 0);
    };
    let off = &cfg.offsets;
    if off.valid == 0 {
        return (0, 0);
    }
    // SAFETY: bpf_probe_read_kernel validates every address it reads; a fault returns Err.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let Ok(mm) = read_ptr(task, off.task_mm) else { return (0, 0) };
        let Ok(file) = read_ptr(mm, off.mm_exe_file) else { return (0, 0) };
        let Ok(inode) = read_ptr(file, off.file_inode) else { return (0, 0) };
        let Ok(sb) = read_ptr(inode, off.inode_sb) else { return (0, 0) };
        let ino = bpf_probe_read_kernel(inode.add(off.inode_ino as usize) as *const u64).unwrap_or(0);
        let dev = bpf_probe_read_kernel(sb.add(off.sb_dev as usize) as *const u32).unwrap_or(0);
        (dev, ino)
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
