//! Outstanding queries, kept in the socket that sent them, and the trust decision for an answer.

use core::ffi::c_void;

use agent_common::{dns as wire, dns_flags, Pending, ResolverKey, SockPending, PENDING_PER_SOCKET};
use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::generated::{bpf_sk_fullsock, bpf_sk_storage_get},
};

use super::{
    packet::{checksum_ok, Skb, L4},
    report::copy,
};
use crate::maps::{Scratch, RESOLVERS, SK_PENDING};

/// The outstanding queries of the packet's socket, created on first use if `create`.
#[inline(always)]
pub(super) fn sock_pending(skb: Skb, create: bool) -> Option<*mut SockPending> {
    // SAFETY: the context field `sk` is readable by cgroup_skb programs; fullsock checks it, and
    // the storage helper takes a full socket and the map.
    unsafe {
        let sk = (*skb.0).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return None;
        }
        let flags = if create { u64::from(BPF_SK_STORAGE_GET_F_CREATE) } else { 0 };
        let map = &SK_PENDING as *const _ as *mut c_void;
        let p = bpf_sk_storage_get(map, full as *mut c_void, core::ptr::null_mut(), flags) as *mut SockPending;
        if p.is_null() {
            None
        } else {
            Some(p)
        }
    }
}

/// 0 if the answer is to be trusted (and then `s.pending` is its query), else the `dns_flags`
/// bit that says why not.
#[inline(always)]
pub(super) fn judge(skb: Skb, s: &mut Scratch, l: &L4, txid: u16, qtype: u16, slot: u32, resolvers_only: bool) -> u16 {
    s.pending.name_len = 0;
    let Some(sp) = sock_pending(skb, false) else { return dns_flags::NO_QUERY };
    // SAFETY: the socket's live storage.
    let sp = unsafe { &*sp };
    let mut at = PENDING_PER_SOCKET;
    for i in 0..PENDING_PER_SOCKET {
        let q = &sp.q[i];
        if at == PENDING_PER_SOCKET && q.used != 0 && q.txid == txid && q.qtype == qtype {
            at = i;
        }
    }
    if at == PENDING_PER_SOCKET {
        return dns_flags::NO_QUERY;
    }
    s.pending_slot = at as u32;
    // Copied: the slot is freed once the answer is trusted.
    copy(&mut s.pending, &sp.q[at & (PENDING_PER_SOCKET - 1)]);
    let p = &s.pending;
    // The whole question, not a hash of it: both names are lowercase and zero-padded. Compared
    // a word at a time, branch-free, so the verifier walks it as one straight line.
    let mut diff = u64::from(p.name_len != s.st.cur.name_len);
    let (a, b) = (p.name.as_ptr() as *const u64, s.st.name.as_ptr() as *const u64);
    let mut i = 0;
    while i < wire::NAME_BUF / 8 {
        // SAFETY: both arrays are 8-aligned (at offset 104 of 8-aligned structs) and 256 long.
        diff |= unsafe { a.add(i).read() ^ b.add(i).read() };
        i += 1;
    }
    if diff != 0 {
        return dns_flags::WRONG_QUESTION;
    }
    let trusted_source = if resolvers_only {
        let k = ResolverKey { slot, family: u32::from(l.family), addr: l.saddr };
        RESOLVERS.get_ptr(&k).is_some()
    } else {
        p.family == l.family && p.server == l.saddr && p.server_port == l.sport
    };
    if !trusted_source {
        return dns_flags::WRONG_SOURCE;
    }
    if !checksum_ok(skb, s, l) {
        return dns_flags::BAD_CHECKSUM;
    }
    0
}

/// Records `p` (filled by the caller) as outstanding in the packet's socket: a retry of the same
/// query takes its slot; else a free one; else the socket's oldest.
#[inline(always)]
pub(super) fn record(skb: Skb, p: &Pending) {
    let Some(sp) = sock_pending(skb, true) else { return };
    // SAFETY: the socket's live storage.
    let sp = unsafe { &mut *sp };
    let mut at = PENDING_PER_SOCKET;
    for i in 0..PENDING_PER_SOCKET {
        let q = &sp.q[i];
        if at == PENDING_PER_SOCKET && q.used != 0 && q.txid == p.txid && q.qtype == p.qtype {
            at = i;
        }
    }
    for i in 0..PENDING_PER_SOCKET {
        if at == PENDING_PER_SOCKET && sp.q[i].used == 0 {
            at = i;
        }
    }
    if at == PENDING_PER_SOCKET {
        at = sp.next as usize;
        sp.next = sp.next.wrapping_add(1);
    }
    copy(&mut sp.q[at & (PENDING_PER_SOCKET - 1)], p);
}

/// Frees the slot of the query an answer was trusted for (`judge` found it).
#[inline(always)]
pub(super) fn consume(skb: Skb, slot: u32) {
    if let Some(sp) = sock_pending(skb, false) {
        // SAFETY: the socket's live storage.
        unsafe { (*sp).q[(slot as usize) & (PENDING_PER_SOCKET - 1)].used = 0 };
    }
}
