//! MPTCP subflows the kernel opens are the connection owner's.
//!
//! An MPTCP connection's first subflow is connected by the process; the path manager opens the
//! others from a kernel worker (to addresses the server announces, or from other local
//! addresses), and the connect hooks then run with the worker as the current task: no
//! executable, uid 0, the root cgroup. So the process that connected an MPTCP socket is recorded
//! here, by the connection's `mptcp_sock` address, with the ancestors of its cgroup; a connect
//! from a kernel worker on a subflow of a recorded connection is decided and reported as that
//! process's, to the subflow's own destination.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_skc_to_mptcp_sock},
    },
    programs::{SockAddrContext, SockContext},
};
use core::ffi::c_void;

use crate::{
    identity::Proc,
    maps::{MPTCP_OWNERS, MPTCP_SCRATCH},
};

const IPPROTO_MPTCP: u32 = 262;
/// Cgroup depths recorded per owner: `cgroup` selectors deeper than this never match a subflow
/// the kernel opens.
pub const ANCESTORS: usize = 16;

/// The process that connected an MPTCP socket, as the hooks saw it then.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    /// `pid_tgid` of the task that last wrote this scratch entry: tells a task that was
    /// preempted between writing and reading back (see [`resolve`]) that another wrote it since.
    pub writer: u64,
    pub proc: Proc,
    /// `bpf_get_current_ancestor_cgroup_id(level)` of the owner, by level.
    pub ancestors: [u64; ANCESTORS],
}

/// Makes `proc` the owner's identity when this connect is a subflow a kernel worker opens for
/// a recorded MPTCP connection; records the caller as the owner when a process connects an
/// MPTCP socket.
///
/// Whatever the path, `proc` is read back from this CPU's scratch entry at the end: the
/// verifier then holds the same (unknown) values for it on every path — whether the process
/// has an exec record, whether this is a subflow — and walks the decision after it once, not
/// once per path (which took connect6 past its budget).
///
/// The programs run with migration off but not always preemption (full or lazy preemption):
/// another task's hook on this CPU may write the entry between this task's write and its read.
/// Then None, and nothing may be decided on what was read (it may be another process's
/// identity). None also if the entry is missing, which a per-CPU array's never is.
#[inline(always)]
pub fn resolve(ctx: &SockAddrContext, proc: &mut Proc) -> Option<()> {
    let scratch = MPTCP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry; see above for who else may write it.
    let owner = unsafe { &mut *scratch };
    let me = bpf_get_current_pid_tgid();
    // SAFETY: a valid, aligned map value; volatile keeps this store first.
    unsafe { core::ptr::write_volatile(&mut owner.writer, me) };
    owner.proc = *proc;
    // SAFETY: the kernel hands every sock_addr program a valid context; `sk` is its socket.
    let (sk, protocol) = unsafe { ((*ctx.sock_addr).__bindgen_anon_1.sk, (*ctx.sock_addr).protocol) };
    // SAFETY: the helper checks what `sk` is; null unless it is an MPTCP subflow.
    let msk = if sk.is_null() { core::ptr::null_mut() } else { unsafe { bpf_skc_to_mptcp_sock(sk as *mut c_void) } };
    // The connection's address: the subflow's `mptcp_sock`, or the MPTCP socket itself.
    let key = if !msk.is_null() {
        msk as u64
    } else if protocol == IPPROTO_MPTCP && !sk.is_null() {
        sk as u64
    } else {
        0
    };
    if key != 0 {
        if proc.ino() == 0 {
            // A kernel thread (no executable): a path manager's worker.
            if let Some(recorded) = MPTCP_OWNERS.get_ptr(&key) {
                // SAFETY: a live map value.
                owner.proc = unsafe { (*recorded).proc };
                owner.proc.subflow = key;
            }
        } else {
            let mut level = 0;
            while level < ANCESTORS {
                // SAFETY: plain helper; a level below the task's depth yields 0.
                owner.ancestors[level] = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
                level += 1;
            }
            let _ = MPTCP_OWNERS.insert(&key, &*owner, 0);
        }
    }
    // Word by word and volatile: the compiler would otherwise hand back what it stored above on
    // the paths that touch no map (and the verifier would see the values it knew), or build a
    // copy on the stack, which has no room for one.
    // SAFETY: a valid, aligned map value.
    if unsafe { core::ptr::read_volatile(&owner.writer) } != me {
        return None;
    }
    const WORDS: usize = core::mem::size_of::<Proc>() / 8;
    const _: () = assert!(core::mem::size_of::<Proc>() % 8 == 0);
    let src = &owner.proc as *const Proc as *const u64;
    let dst = proc as *mut Proc as *mut u64;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: both point at a whole, 8-aligned `Proc`; `i` stays within it.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
    // Written by another task during the copy: what was read is not this task's.
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(&owner.writer) } != me {
        return None;
    }
    Some(())
}

/// The owner's cgroup ancestor at `level`, for a subflow `proc` stands for (0 if unknown, which
/// is never a cgroup id).
#[inline(always)]
pub fn ancestor(subflow: u64, level: u32) -> u64 {
    match MPTCP_OWNERS.get_ptr(&subflow) {
        // SAFETY: a live map value; the index is bounded by the mask and the check.
        Some(owner) if (level as usize) < ANCESTORS => unsafe { (*owner).ancestors[level as usize & (ANCESTORS - 1)] },
        _ => 0,
    }
}

/// cgroup/sock_release of an MPTCP socket: its record goes (another socket may reuse the
/// address).
#[inline(always)]
pub fn release(ctx: &SockContext) {
    // SAFETY: the kernel hands every sock program a valid socket.
    if unsafe { (*ctx.sock).protocol } == IPPROTO_MPTCP {
        let _ = MPTCP_OWNERS.remove(&(ctx.sock as u64));
    }
}
