//! DNS events: filling them, copying the message for userspace, and untrusted answers.

use core::ffi::c_void;

use agent_common::{
    dns as wire, dns_counter, dns_flags, dns_phase, record, verdict, DnsEvent, DNS_EVENT_ADDRS, DNS_EVENT_MSG,
};
use aya_ebpf::helpers::generated::{
    bpf_get_socket_uid, bpf_ktime_get_ns, bpf_probe_read_kernel as bpf_probe_read_kernel_raw, bpf_skb_cgroup_id,
    bpf_skb_load_bytes,
};

use super::{
    packet::{Skb, L4},
    PASS,
};
use crate::{
    identity::Proc,
    maps::{Scratch, DNS_COUNTERS, EVENTS},
    ring::{add, count_drop, wakeup_flags},
};

/// An answer that is not trusted: reported, nothing learnt.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn reject(skb: Skb, s: &mut Scratch, l: &L4, cookie: u64, msg: u32, end: u32, flag: u16, qtype: u16) -> i32 {
    add(&DNS_COUNTERS, dns_counter::ANSWER_REJECTED);
    let known = s.pending.name_len != 0;
    if let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) {
        let e = entry.as_mut_ptr();
        // SAFETY: a reserved record of the right size; `fill` writes every field.
        unsafe {
            fill(&mut *e, dns_phase::REJECTED, flag, verdict::ALERT, l, l.saddr, l.sport, cookie, s);
            if known {
                identity_from_pending(&mut *e, s);
            } else {
                // Softirq context: the current task is not the socket's owner; say what the
                // socket says.
                (*e).uid = bpf_get_socket_uid(skb.0);
                (*e).cgroup_id = bpf_skb_cgroup_id(skb.0);
            }
            (*e).qtype = qtype;
            copy_msg(skb, &mut *e, msg, end);
        }
        entry.submit(wakeup_flags());
    } else {
        count_drop();
    }
    PASS
}

/// Writes every field of a DNS event; identity fields are zero until the caller sets them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn fill(
    e: &mut DnsEvent,
    phase: u8,
    flags: u16,
    verdict: u8,
    l: &L4,
    server: [u8; 16],
    port: u16,
    cookie: u64,
    s: &Scratch,
) {
    e.kind = record::DNS;
    e.pid = 0;
    e.tid = 0;
    e.uid = 0;
    e.gid = 0;
    e.exe_dev = 0;
    e.generation = 0;
    e.domain_id = 0;
    // SAFETY: plain helper.
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.cookie = cookie;
    e.cgroup_id = 0;
    e.exe_ino = 0;
    e.start_ns = 0;
    e.server = server;
    e.comm = [0; 16];
    e.qtype = 0;
    e.server_port = port;
    e.family = l.family;
    e.proto = l.proto;
    e.verdict = verdict;
    e.phase = phase;
    e.rcode = 0;
    e._pad = 0;
    e.flags = flags;
    e.n_addrs = 0;
    e.ttl_min = 0;
    e.msg_len = 0;
    e.name_len = s.st.cur.name_len;
    e.addr_family = [0; DNS_EVENT_ADDRS];
    copy(&mut e.addrs, &s.zero_addrs);
    copy(&mut e.name[..], &s.st.name[..wire::NAME_BUF]);
    e._pad2 = 0;
}

/// The calling process as the event's identity (egress runs in the sender's context).
#[inline(always)]
pub(super) fn identity_from_proc(e: &mut DnsEvent, proc: &Proc, cgroup_id: u64) {
    e.pid = (proc.pid_tgid >> 32) as u32;
    e.tid = proc.pid_tgid as u32;
    e.uid = proc.uid_gid as u32;
    e.gid = (proc.uid_gid >> 32) as u32;
    e.exe_dev = proc.exe_dev;
    e.exe_ino = proc.exe_ino;
    e.start_ns = proc.start_ns;
    e.cgroup_id = cgroup_id;
    e.comm = proc.comm;
}

/// The process that sent the query as the event's identity (ingress runs in softirq context,
/// where the current task is not the socket's owner).
#[inline(always)]
pub(super) fn identity_from_pending(e: &mut DnsEvent, s: &Scratch) {
    let p = &s.pending;
    e.pid = p.pid;
    e.tid = p.tid;
    e.uid = p.uid;
    e.gid = p.gid;
    e.exe_dev = p.exe_dev;
    e.exe_ino = p.exe_ino;
    e.start_ns = p.start_ns;
    e.cgroup_id = p.cgroup_id;
    e.comm = p.comm;
    e.generation = p.generation;
    e.domain_id = p.domain_id;
    e.name_len = p.name_len;
}

/// Copies `src` over `dst` with one helper call. The compiler turns a large struct or array copy
/// into a call to a byte-by-byte `memcpy`, whose loop the verifier walks byte by byte on every
/// path; `bpf_probe_read_kernel` copies between kernel (map, ring buffer) memory at no
/// verification cost.
#[inline(always)]
pub(super) fn copy<T: ?Sized>(dst: &mut T, src: &T) {
    let n = core::mem::size_of_val(src) as u32;
    // SAFETY: both are valid for `n` bytes (same type and size); the helper checks `src`.
    unsafe {
        bpf_probe_read_kernel_raw(dst as *mut T as *mut c_void, n, src as *const T as *const c_void);
    }
}

/// Copies the start of the message into the event for userspace to decode.
#[inline(always)]
pub(super) fn copy_msg(skb: Skb, e: &mut DnsEvent, msg: u32, end: u32) {
    let len = end.saturating_sub(msg);
    e.msg_len = len;
    let n = if len > DNS_EVENT_MSG as u32 { DNS_EVENT_MSG as u32 } else { len };
    if len > DNS_EVENT_MSG as u32 {
        e.flags |= dns_flags::MSG_CUT;
    }
    if n == 0 {
        return;
    }
    // Spelled so the verifier sees 1..=512 (it loses `n != 0` through the compiler's rewrites).
    let n = (core::hint::black_box(n).wrapping_sub(1) & (DNS_EVENT_MSG as u32 - 1)) + 1;
    // SAFETY: `n` is between 1 and the size of `msg`; the helper checks the packet range and
    // zero-fills the destination on failure.
    let rc = unsafe { bpf_skb_load_bytes(skb.0 as *const c_void, msg, e.msg.as_mut_ptr() as *mut c_void, n) };
    if rc != 0 {
        e.msg_len = 0;
    }
}
