//! The shared parsing steps (`agent_common::dns`) run from `bpf_loop`, and what they yield: a
//! question, and the domain id its name maps to.

use core::ffi::c_void;

use agent_common::{
    dns::{self as wire, status, Rr},
    domain_kind, DomainValue,
};
use aya_ebpf::{bindings::__sk_buff, helpers::generated::bpf_loop, maps::lpm_trie::Key};

use super::{learn::learn, packet::Skb, report::copy};
use crate::maps::{Scratch, DOMAINS_0, DOMAINS_1};

/// What a `bpf_loop` step gets: the packet and the scratch. The scratch pointer is passed
/// (derived from the caller's reference) rather than looked up again, so the compiler knows the
/// loop may change it: a value it believed unchanged across `bpf_loop` would be read stale.
#[repr(C)]
pub(super) struct LoopCtx {
    skb: *mut __sk_buff,
    scratch: *mut Scratch,
}

pub(super) unsafe extern "C" fn name_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to the caller's LoopCtx.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    let s = unsafe { &mut *lc.scratch };
    i64::from(wire::name_step(&Skb(lc.skb), &mut s.st))
}

pub(super) unsafe extern "C" fn rkey_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    i64::from(wire::rkey_step(unsafe { &mut (*lc.scratch).st }))
}

pub(super) unsafe extern "C" fn csum_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    i64::from(wire::csum_step(&Skb(lc.skb), unsafe { &mut (*lc.scratch).st }))
}

pub(super) unsafe extern "C" fn rr_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `name_cb`.
    let lc = unsafe { &*(ctx as *const LoopCtx) };
    // SAFETY: the caller's live per-CPU map value.
    let s = unsafe { &mut *lc.scratch };
    match wire::rr_step(&Skb(lc.skb), &mut s.st) {
        Rr::Continue => 0,
        Rr::Stop => 1,
        Rr::Addr { family, ttl } => {
            learn(s, family, ttl);
            0
        }
    }
}

/// Runs `cb` up to `steps` times over the scratch `s`.
#[inline(always)]
pub(super) fn run_loop(skb: Skb, s: &mut Scratch, steps: u32, cb: unsafe extern "C" fn(u64, *mut c_void) -> i64) {
    let mut lc = LoopCtx { skb: skb.0, scratch: s as *mut Scratch };
    // SAFETY: the callback takes the context pointer bpf_loop passes back, which is `lc`.
    unsafe {
        bpf_loop(steps, cb as *mut c_void, &mut lc as *mut LoopCtx as *mut c_void, 0);
    }
}

/// Parses the question name at `off` into the scratch; its trie key too if `key`.
#[inline(always)]
pub(super) fn read_question(skb: Skb, s: &mut Scratch, off: u32, end: u32, key: bool) -> Option<(u16, u16)> {
    s.st.start_name(off, end);
    // Zero-padded names compare as whole buffers, without a condition per byte.
    copy(&mut s.st.name[..], &s.zero_name[..]);
    run_loop(skb, s, wire::NAME_STEPS, name_cb);
    if s.st.cur.status != status::DONE {
        return None;
    }
    let after = s.st.cur.off;
    let q = wire::qtype_qclass(&skb, after, &mut s.st.tmp)?;
    if key {
        s.st.cur.rpos = 0;
        run_loop(skb, s, wire::NAME_STEPS, rkey_cb);
        if s.st.cur.status == status::BAD {
            return None;
        }
    }
    s.st.cur.off = after + 4;
    Some(q)
}

/// The domain id the parsed name maps to in `slot`, 0 if no rule covers it.
#[inline(always)]
pub(super) fn domain_id(slot: u32, s: &Scratch) -> u32 {
    // SAFETY: `key_bits` and `rkey` are adjacent in a repr(C) struct and form the LPM key layout
    // `{ u32 prefixlen; u8 data[256]; }` (see ParseState).
    let key = unsafe { &*(&s.st.key_bits as *const u32 as *const Key<[u8; 256]>) };
    let value: Option<&DomainValue> = if slot == 0 { DOMAINS_0.get(key) } else { DOMAINS_1.get(key) };
    let Some(v) = value else { return 0 };
    match v.kind {
        domain_kind::EXACT => v.id,
        // The wildcard `*.S` matched; if the name is S itself, only enclosing wildcards apply.
        domain_kind::WILDCARD if v.key_len + 1 == s.st.cur.name_len => v.at_id,
        domain_kind::WILDCARD => v.id,
        _ => 0,
    }
}
