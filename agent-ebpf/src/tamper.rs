//! Whether code other than the executable's may run in a process (`untampered` selectors): the
//! dynamic loader steered by the environment at exec, and tracing.
//!
//! The environment is read at exec, where the kernel has just copied it onto the new stack and
//! nothing of the process has run: what the loader will read is what is scanned. Tracing is seen
//! when a thread stops for its tracer (`sched_switch` with the `TASK_TRACED` state): a tracer can
//! only write registers or memory through ptrace while the thread is stopped so.

use agent_common::{tamper, ExecId, KernelOffsets, ENV_CHUNK, ENV_SCAN_STEPS};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_loop, bpf_probe_read_user_str},
    },
    programs::RawTracePointContext,
};
use core::ffi::c_void;

use crate::{
    identity::current_exe,
    maps::{CONFIG, EXEC_IDS, WATCHED_CGROUP},
};

/// `__TASK_TRACED` in `task_struct.__state`: a thread stopped for its tracer. A kernel ABI
/// value (the sched_switch trace format prints it as `t`), unchanged since 2.6.
const TASK_TRACED: u64 = 0x8;

/// [`tamper`] bits of the current task at exec: its environment and whether it is traced.
#[inline(always)]
pub fn at_exec(off: &KernelOffsets) -> u32 {
    // SAFETY: bpf_probe_read_kernel validates every address; a fault reads as 0.
    let (ptrace, env_start, env_end) = unsafe {
        let task = bpf_get_current_task() as *const u8;
        let ptrace = bpf_probe_read_kernel(task.add(off.task_ptrace as usize) as *const u32).unwrap_or(0);
        let mm = bpf_probe_read_kernel(task.add(off.task_mm as usize) as *const *const u8).unwrap_or(core::ptr::null());
        if mm.is_null() {
            (ptrace, 0, 0)
        } else {
            (
                ptrace,
                bpf_probe_read_kernel(mm.add(off.mm_env_start as usize) as *const u64).unwrap_or(0),
                bpf_probe_read_kernel(mm.add(off.mm_env_end as usize) as *const u64).unwrap_or(0),
            )
        }
    };
    let traced = if ptrace != 0 { tamper::TRACED } else { 0 };
    traced | env_steers(env_start, env_end)
}

/// State of the environment scan, passed to each step.
#[repr(C)]
struct Scan {
    pos: u64,
    end: u64,
    /// 1 when `pos` is the start of a string (the byte before it was a NUL).
    at_start: u32,
    /// [`tamper::LOADER_ENV`] once a steering variable is found or a read fails.
    found: u32,
    /// 1 once the scan reached `end`.
    done: u32,
    _pad: u32,
    buf: [u8; ENV_CHUNK],
}

/// [`tamper::LOADER_ENV`] if the environment strings in `[start, end)` name a variable that
/// steers the loader, or cannot be read whole within [`ENV_SCAN_STEPS`] steps.
#[inline(always)]
fn env_steers(start: u64, end: u64) -> u32 {
    if start == 0 || end <= start {
        // No environment (a kernel thread's exec): nothing steers the loader.
        return 0;
    }
    let mut s = Scan { pos: start, end, at_start: 1, found: 0, done: 0, _pad: 0, buf: [0; ENV_CHUNK] };
    // SAFETY: the callback receives `s` back and the loop ends before `s` goes out of scope.
    unsafe {
        bpf_loop(ENV_SCAN_STEPS, env_step as *mut c_void, &mut s as *mut Scan as *mut c_void, 0);
    }
    if s.done == 0 {
        // Fail closed: an environment too large to read whole may hide a variable past the end.
        return tamper::LOADER_ENV;
    }
    s.found
}

/// One step: reads one string (or [`ENV_CHUNK`] - 1 bytes of a longer one) and checks a string
/// start against the steering variables.
unsafe extern "C" fn env_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` env_steers passed to bpf_loop.
    let s = unsafe { &mut *(ctx as *mut Scan) };
    if s.pos >= s.end {
        s.done = 1;
        return 1;
    }
    // SAFETY: the helper bounds the copy by the buffer's size and faults cleanly.
    let n =
        unsafe { bpf_probe_read_user_str(s.buf.as_mut_ptr() as *mut c_void, ENV_CHUNK as u32, s.pos as *const c_void) };
    if n <= 0 {
        // Unreadable: the loader can read it, so count it as steered (fail closed).
        s.found = tamper::LOADER_ENV;
        s.done = 1;
        return 1;
    }
    if s.at_start != 0 && steers(&s.buf) {
        s.found = tamper::LOADER_ENV;
        s.done = 1;
        return 1;
    }
    if n as usize >= ENV_CHUNK {
        // No NUL in the first ENV_CHUNK - 1 bytes: the next byte continues this string.
        s.pos += (ENV_CHUNK - 1) as u64;
        s.at_start = 0;
    } else {
        // `n` counts the NUL: the next string starts right after it.
        s.pos += n as u64;
        s.at_start = 1;
    }
    0
}

/// Whether the NUL-terminated string at the start of `b` sets `LD_PRELOAD`, `LD_AUDIT` or
/// `LD_LIBRARY_PATH` (the variables with which glibc's and musl's loaders load other code).
#[inline(always)]
fn steers(b: &[u8; ENV_CHUNK]) -> bool {
    if b[0] != b'L' || b[1] != b'D' || b[2] != b'_' {
        return false;
    }
    starts(b, b"PRELOAD=") || starts(b, b"AUDIT=") || starts(b, b"LIBRARY_PATH=")
}

/// Whether `b[3..]` starts with `name`.
#[inline(always)]
fn starts<const N: usize>(b: &[u8; ENV_CHUNK], name: &[u8; N]) -> bool {
    let mut i = 0;
    while i < N {
        if b[3 + i] != name[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int
/// prev_state)`: runs in `prev`'s context. A watched thread stopping for its tracer marks its
/// process [`tamper::TRACED`] until its next exec.
pub fn on_switch(ctx: &RawTracePointContext) -> i32 {
    let state: u64 = ctx.arg(3);
    if state & TASK_TRACED == 0 {
        return 0;
    }
    if !WATCHED_CGROUP.current_task_under_cgroup(0).unwrap_or(false) {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(id) = EXEC_IDS.get_ptr_mut(&tgid) {
        // SAFETY: a live map value; a lost race with another thread's mark sets the same bit.
        unsafe { (*id).tamper |= tamper::TRACED };
        return 0;
    }
    // A process the agent has no record of (it joined the watched cgroup after its exec): its
    // executable as the kernel sees it now, marked.
    if CONFIG.get(0).is_none_or(|c| c.offsets.valid == 0) {
        return 0;
    }
    let (dev, ino, _) = current_exe();
    let id = ExecId { start_ns: 0, ino, dev, tamper: tamper::TRACED };
    let _ = EXEC_IDS.insert(&tgid, &id, 0);
    0
}
