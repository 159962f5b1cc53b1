//! The operator's kill switch (`egress-agent block`), as the hooks read it: a vendor's
//! destinations refused to every process, or all egress but the infrastructure `allow` rules,
//! whatever the policy and its mode say. The kernel compares the end times itself, so a kill ends
//! on time even if the agent is busy or late to tidy up.

use core::ffi::c_void;

use agent_common::{
    DestValue, Learnt, LearntKeyV4, LearntKeyV6, LEARNT_SLOTS, MAX_DOMAIN_IDS, MAX_RULES_PER_PREFIX, MAX_RULE_ENTRIES,
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_loop},
    maps::lpm_trie::Key,
};

use crate::{
    connect::active_slot,
    dest::Dest,
    maps::{
        DESTS_V4_0, DESTS_V4_1, DESTS_V6_0, DESTS_V6_1, DOMAIN_RULES, KILLS, KILL_STATE, LEARNT_V4, LEARNT_V6, RULES,
    },
    AF_INET,
};

/// The switch at one moment.
#[derive(Clone, Copy)]
pub struct Now {
    pub now: u64,
    /// Some kill may be in force: `KILLS` must be consulted.
    pub any: bool,
    /// Everything but the infrastructure `allow` rules is refused.
    pub all: bool,
}

/// Reads the switch. One array lookup when unused; the clock only when something is in force.
#[inline(always)]
pub fn now() -> Now {
    let Some(s) = KILL_STATE.get(0) else { return Now { now: 0, any: false, all: false } };
    if s.any_until == 0 {
        return Now { now: 0, any: false, all: false };
    }
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    Now { now, any: s.any_until > now, all: s.all_until > now }
}

/// Whether vendor `vendor` is killed at `now`.
#[inline(always)]
pub fn vendor(vendor: u16, now: u64) -> bool {
    if vendor == 0 {
        return false;
    }
    // SAFETY: a read of a live map value.
    match unsafe { KILLS.get(&u32::from(vendor)) } {
        Some(&until) => until > now,
        None => false,
    }
}

/// Looks for an entry of a killed vendor covering the destination, by prefix then by the
/// patterns the address was learnt under: (1 << 32 | rule id, domain id), or (0, 0). Any port
/// and protocol: during an incident the vendor's addresses are cut off entirely.
#[inline(never)]
pub fn killed_rule(dest: &Dest, now: u64) -> (u64, u32) {
    let Some((slot, _)) = active_slot() else { return (0, 0) };
    let value = prefix_value(slot, dest);
    if value.count != 0 {
        let r = killed_in(slot, &value, now);
        if r != 0 {
            return (r, 0);
        }
    }
    let learnt = if dest.family == AF_INET {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(&dest.addr[..4]);
        LEARNT_V4.get_ptr(&LearntKeyV4 { netns: dest.netns, addr, _pad: 0 })
    } else {
        LEARNT_V6.get_ptr(&LearntKeyV6 { netns: dest.netns, addr: dest.addr })
    };
    let Some(learnt) = learnt else { return (0, 0) };
    let mut c = KillSlotsCtx { learnt, slot, domain: 0, now, rule: 0 };
    // SAFETY: the callback receives `c` back; the pointer in it outlives the loop.
    unsafe {
        bpf_loop(LEARNT_SLOTS as u32, kill_slot_cb as *mut c_void, &mut c as *mut KillSlotsCtx as *mut c_void, 0);
    }
    (c.rule, c.domain)
}

/// The kill walk over a prefix's (or a pattern's) rule entries.
#[repr(C)]
struct KillCtx {
    slot: u32,
    first: u32,
    count: u32,
    _pad: u32,
    now: u64,
    /// 1 << 32 | rule id of the killed vendor's entry found, or 0.
    rule: u64,
}

#[inline(always)]
fn killed_in(slot: u32, value: &DestValue, now: u64) -> u64 {
    let mut c = KillCtx { slot, first: value.first, count: value.count, _pad: 0, now, rule: 0 };
    let n = if value.count > MAX_RULES_PER_PREFIX { MAX_RULES_PER_PREFIX } else { value.count };
    // SAFETY: the callback receives `c` back.
    unsafe {
        bpf_loop(n, kill_cb as *mut c_void, &mut c as *mut KillCtx as *mut c_void, 0);
    }
    c.rule
}

unsafe extern "C" fn kill_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the caller's `KillCtx`.
    let c = unsafe { &mut *(ctx as *mut KillCtx) };
    let i = index as u32;
    if i >= c.count || i >= MAX_RULES_PER_PREFIX {
        return 1;
    }
    let Some(rule) = RULES.get(c.slot * MAX_RULE_ENTRIES + c.first + i) else {
        return 1;
    };
    if vendor(rule.vendor, c.now) {
        c.rule = (1 << 32) | u64::from(rule.rule_id);
        return 1;
    }
    0
}

#[repr(C)]
struct KillSlotsCtx {
    learnt: *const Learnt,
    slot: u32,
    domain: u32,
    now: u64,
    rule: u64,
}

unsafe extern "C" fn kill_slot_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the caller's `KillSlotsCtx`, whose pointer is live.
    let c = unsafe { &mut *(ctx as *mut KillSlotsCtx) };
    // SAFETY: a live map value (see `slot_cb`).
    let s = unsafe { (*c.learnt).slots[(index as usize) & (LEARNT_SLOTS - 1)] };
    if s.domain_id == 0 || s.domain_id >= MAX_DOMAIN_IDS || s.expires_ns <= c.now {
        return 0;
    }
    let Some(value) = DOMAIN_RULES.get(c.slot * MAX_DOMAIN_IDS + s.domain_id).copied() else { return 0 };
    let r = killed_in(c.slot, &value, c.now);
    if r != 0 {
        c.rule = r;
        c.domain = s.domain_id;
        return 1;
    }
    0
}

/// The rule entries of the destination's longest prefix in `slot` (count 0: none). A plain value,
/// not an Option: the verifier refuses the uninitialised payload of a None the compiler may move.
#[inline(always)]
fn prefix_value(slot: u32, dest: &Dest) -> DestValue {
    let value = if dest.family == AF_INET {
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&dest.addr[..4]);
        let key = Key::new(32, a4);
        if slot == 0 { DESTS_V4_0.get(&key) } else { DESTS_V4_1.get(&key) }.copied()
    } else {
        let key = Key::new(128, dest.addr);
        if slot == 0 { DESTS_V6_0.get(&key) } else { DESTS_V6_1.get(&key) }.copied()
    };
    value.unwrap_or_default()
}

/// The vendor id of rule `rule_id` among the entries covering the destination (its prefix's, or
/// domain `domain_id`'s when the rule matched by a learnt name); 0 if none.
#[inline(never)]
pub fn rule_vendor(dest: &Dest, rule_id: u32, domain_id: u32) -> u16 {
    let Some((slot, _)) = active_slot() else { return 0 };
    let value = if domain_id != 0 {
        if domain_id >= MAX_DOMAIN_IDS {
            return 0;
        }
        DOMAIN_RULES.get(slot * MAX_DOMAIN_IDS + domain_id).copied().unwrap_or_default()
    } else {
        prefix_value(slot, dest)
    };
    let mut c = VendorCtx { slot, first: value.first, count: value.count, rule_id, vendor: 0 };
    let n = if value.count > MAX_RULES_PER_PREFIX { MAX_RULES_PER_PREFIX } else { value.count };
    // SAFETY: the callback receives `c` back.
    unsafe {
        bpf_loop(n, vendor_cb as *mut c_void, &mut c as *mut VendorCtx as *mut c_void, 0);
    }
    c.vendor as u16
}

#[repr(C)]
struct VendorCtx {
    slot: u32,
    first: u32,
    count: u32,
    rule_id: u32,
    vendor: u32,
}

unsafe extern "C" fn vendor_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the caller's `VendorCtx`.
    let c = unsafe { &mut *(ctx as *mut VendorCtx) };
    let i = index as u32;
    if i >= c.count || i >= MAX_RULES_PER_PREFIX {
        return 1;
    }
    let Some(rule) = RULES.get(c.slot * MAX_RULE_ENTRIES + c.first + i) else {
        return 1;
    };
    if rule.rule_id == c.rule_id {
        c.vendor = u32::from(rule.vendor);
        return 1;
    }
    0
}
