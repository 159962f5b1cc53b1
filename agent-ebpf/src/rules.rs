//! The decision of one attempt against the policy in force: the destination tries, the
//! addresses learnt from DNS with the rules of their patterns, each candidate rule's ports,
//! protocols and process selector, and `default`. Shared by the connect and sendmsg hooks and
//! by the datagrams decided on their way out (`dgram`).

use core::ffi::c_void;

use agent_common::{
    event_flags, mode, proto_bits, rule_flags, selector_flags, verdict, DestValue, ExeKey, Learnt, LearntKeyV4,
    LearntKeyV6, GEN_ANY, LEARNT_SLOTS, MAX_DOMAIN_IDS, MAX_RULES_PER_PREFIX, MAX_RULE_ENTRIES, MAX_SELECTORS,
    RULE_DEFAULT,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_ns, bpf_loop},
    maps::lpm_trie::Key,
};

use crate::{
    connect::active_slot,
    dest::Dest,
    identity::Proc,
    maps::{
        DESTS_V4_0, DESTS_V4_1, DESTS_V6_0, DESTS_V6_1, DOMAIN_RULES, EXE_SET, LEARNT_V4, LEARNT_V6, RULES, SELECTORS,
    },
    AF_INET, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};

pub struct Decision {
    pub verdict: u8,
    pub rule_id: u32,
    pub generation: u32,
    pub flags: u8,
    pub domain_id: u32,
    /// Vendor id of the rule that allowed, 0 if none.
    pub vendor: u16,
}

impl Decision {
    /// An infrastructure `allow` rule (one of no vendor) let it through: the only kind of
    /// attempt `block --all` leaves alone.
    #[inline(always)]
    pub fn infra(&self) -> bool {
        self.verdict == verdict::ALLOW && self.vendor == 0 && self.rule_id != RULE_DEFAULT
    }
}

#[inline(always)]
pub fn decide(dest: &Dest, proc: &Proc, ancestors: *const u64) -> Decision {
    let Some((slot, meta)) = active_slot() else {
        // Unreachable with a loaded agent (array maps always have their entries); never refuse
        // on an internal fault.
        return Decision {
            verdict: verdict::ALERT,
            rule_id: RULE_DEFAULT,
            generation: 0,
            flags: 0,
            domain_id: 0,
            vendor: 0,
        };
    };
    let value = if dest.family == AF_INET {
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&dest.addr[..4]);
        let key = Key::new(32, a4);
        if slot == 0 { DESTS_V4_0.get(&key) } else { DESTS_V4_1.get(&key) }.copied()
    } else {
        let key = Key::new(128, dest.addr);
        if slot == 0 { DESTS_V6_0.get(&key) } else { DESTS_V6_1.get(&key) }.copied()
    };

    let generation = meta.generation;
    let mut scoped: Option<(u32, u8, u32)> = None;
    if let Some(value) = value {
        match match_rules(slot, &value, dest, proc, ancestors) {
            Match::Allowed(rule_id, vendor) => {
                return Decision { verdict: verdict::ALLOW, rule_id, generation, flags: 0, domain_id: 0, vendor };
            }
            Match::WrongProcess(rule_id, flags) => scoped = Some((rule_id, flags, 0)),
            Match::None => {}
        }
    }
    // Addresses learnt from DNS answers, with the rules of the domain patterns they were
    // learnt under (in this slot: a reload maps the same ids to its own rules).
    let learnt = if dest.family == AF_INET {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(&dest.addr[..4]);
        LEARNT_V4.get_ptr(&LearntKeyV4 { netns: dest.netns, addr, _pad: 0 })
    } else {
        LEARNT_V6.get_ptr(&LearntKeyV6 { netns: dest.netns, addr: dest.addr })
    };
    if let Some(learnt) = learnt {
        // The pattern slots are walked with bpf_loop too (each step walks its rules with
        // bpf_loop): unrolled, the verifier checked the rule walk once per slot, and loading the
        // connect programs took seconds.
        let mut c = SlotsCtx {
            learnt,
            dest,
            proc,
            ancestors,
            slot,
            _pad: 0,
            // SAFETY: plain helper.
            now: unsafe { bpf_ktime_get_ns() },
            allowed: 0,
            allowed_domain: 0,
            wrong_domain: 0,
            wrong: 0,
        };
        // SAFETY: the callback receives `c` back; every pointer in it outlives the loop.
        unsafe {
            bpf_loop(LEARNT_SLOTS as u32, slot_cb as *mut c_void, &mut c as *mut SlotsCtx as *mut c_void, 0);
        }
        if c.allowed != 0 {
            return Decision {
                verdict: verdict::ALLOW,
                rule_id: c.allowed as u32,
                generation,
                flags: event_flags::LEARNT,
                domain_id: c.allowed_domain,
                vendor: (c.allowed >> 48) as u16,
            };
        }
        if scoped.is_none() && c.wrong != 0 {
            scoped = Some((c.wrong as u32, (c.wrong >> 32) as u8, c.wrong_domain));
        }
    }
    // A vendor's destination from a process the vendor does not allow: refused (or, in monitor
    // mode, reported) whatever `default` says, since the destination is reserved to the vendor's
    // processes. The vendor's own mode, if it has one, decides over the policy's.
    if let Some((rule_id, flags, domain_id)) = scoped {
        let enforce = if flags & rule_flags::MODE_MONITOR != 0 {
            false
        } else {
            flags & rule_flags::MODE_ENFORCE != 0 || meta.mode == mode::ENFORCE
        };
        let verdict = if enforce { verdict::DENY } else { verdict::ALERT };
        let learnt_flag = if domain_id != 0 { event_flags::LEARNT } else { 0 };
        return Decision {
            verdict,
            rule_id,
            generation,
            flags: event_flags::PROCESS_NOT_ALLOWED | learnt_flag,
            domain_id,
            vendor: 0,
        };
    }
    let verdict = match (meta.default_verdict, meta.mode) {
        (verdict::ALLOW, _) => verdict::ALLOW,
        (verdict::DENY, mode::ENFORCE) => verdict::DENY,
        _ => verdict::ALERT,
    };
    Decision { verdict, rule_id: RULE_DEFAULT, generation, flags: 0, domain_id: 0, vendor: 0 }
}

enum Match {
    /// Rule id and vendor id.
    Allowed(u32, u16),
    /// First entry whose destination, port and protocol matched but whose process did not.
    WrongProcess(u32, u8),
    None,
}

/// What the learnt-slot loop reads and answers.
#[repr(C)]
struct SlotsCtx {
    learnt: *const Learnt,
    dest: *const Dest,
    proc: *const Proc,
    ancestors: *const u64,
    slot: u32,
    _pad: u32,
    now: u64,
    /// Packed [`Match`] of the first pattern whose rules allowed, and that pattern.
    allowed: u64,
    allowed_domain: u32,
    wrong_domain: u32,
    /// Packed [`Match`] of the first pattern whose rules matched all but the process.
    wrong: u64,
}

/// One learnt pattern slot of the destination per step.
unsafe extern "C" fn slot_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the caller's `SlotsCtx`, whose pointers are live.
    let c = unsafe { &mut *(ctx as *mut SlotsCtx) };
    // SAFETY: a live map value; a concurrent update may change a slot under us, which at worst
    // reads one slot's old or new value.
    let s = unsafe { (*c.learnt).slots[(index as usize) & (LEARNT_SLOTS - 1)] };
    if s.domain_id == 0 || s.domain_id >= MAX_DOMAIN_IDS || s.expires_ns <= c.now {
        return 0;
    }
    let Some(value) = DOMAIN_RULES.get(c.slot * MAX_DOMAIN_IDS + s.domain_id).copied() else { return 0 };
    if value.count == 0 {
        return 0;
    }
    // SAFETY: as above.
    match match_rules(c.slot, &value, unsafe { &*c.dest }, unsafe { &*c.proc }, c.ancestors) {
        Match::Allowed(rule_id, vendor) => {
            c.allowed = (1 << 40) | (u64::from(vendor) << 48) | u64::from(rule_id);
            c.allowed_domain = s.domain_id;
            1
        }
        Match::WrongProcess(rule_id, flags) => {
            if c.wrong == 0 {
                c.wrong = (2 << 40) | (u64::from(flags) << 32) | u64::from(rule_id);
                c.wrong_domain = s.domain_id;
            }
            0
        }
        Match::None => 0,
    }
}

/// What the rule loop reads and answers.
#[repr(C)]
struct RulesCtx {
    dest: *const Dest,
    proc: *const Proc,
    ancestors: *const u64,
    slot: u32,
    first: u32,
    count: u32,
    _pad: u32,
    /// Packed [`Match`]: vendor << 48 | kind << 40 | flags << 32 | rule id.
    allowed: u64,
    wrong: u64,
}

/// One rule entry per step. The rules are walked with `bpf_loop`, not a plain loop: the connect
/// hooks check the destination's prefix and then each learnt pattern of the address, and the
/// verifier would walk a plain 64-step loop once per call site, past its budget.
unsafe extern "C" fn rule_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the caller's `RulesCtx`, whose pointers are live.
    let c = unsafe { &mut *(ctx as *mut RulesCtx) };
    let i = index as u32;
    if i >= c.count || i >= MAX_RULES_PER_PREFIX {
        return 1;
    }
    let Some(rule) = RULES.get(c.slot * MAX_RULE_ENTRIES + c.first + i) else {
        return 1;
    };
    // SAFETY: as above.
    let (dest, proc) = unsafe { (&*c.dest, &*c.proc) };
    let bit = match dest.proto as u32 {
        IPPROTO_TCP => proto_bits::TCP,
        IPPROTO_UDP => proto_bits::UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => proto_bits::ICMP,
        _ => return 1,
    };
    // Ports do not apply to ICMP (an echo request has none).
    let port_ok = bit == proto_bits::ICMP || (dest.port >= rule.port_lo && dest.port <= rule.port_hi);
    if rule.protocols & bit == 0 || !port_ok {
        return 0;
    }
    if rule.selector == 0 || selector_matches(c.slot, rule.selector, proc, c.ancestors) {
        c.allowed = (u64::from(rule.vendor) << 48) | (1 << 40) | u64::from(rule.rule_id);
        return 1;
    }
    if c.wrong == 0 {
        c.wrong = (2 << 40) | (u64::from(rule.flags) << 32) | u64::from(rule.rule_id);
    }
    0
}

#[inline(always)]
fn match_rules(slot: u32, value: &DestValue, dest: &Dest, proc: &Proc, ancestors: *const u64) -> Match {
    let mut c =
        RulesCtx { dest, proc, ancestors, slot, first: value.first, count: value.count, _pad: 0, allowed: 0, wrong: 0 };
    let n = if value.count > MAX_RULES_PER_PREFIX { MAX_RULES_PER_PREFIX } else { value.count };
    // SAFETY: the callback receives `c` back; every pointer in it outlives the loop.
    unsafe {
        bpf_loop(n, rule_cb as *mut c_void, &mut c as *mut RulesCtx as *mut c_void, 0);
    }
    if c.allowed != 0 {
        Match::Allowed(c.allowed as u32, (c.allowed >> 48) as u16)
    } else if c.wrong != 0 {
        Match::WrongProcess(c.wrong as u32, (c.wrong >> 32) as u8)
    } else {
        Match::None
    }
}

#[inline(always)]
fn selector_matches(slot: u32, index: u32, proc: &Proc, ancestors: *const u64) -> bool {
    if index >= MAX_SELECTORS {
        return false;
    }
    let abs = slot * MAX_SELECTORS + index;
    let Some(sel) = SELECTORS.get(abs) else {
        return false;
    };
    let f = sel.flags;
    if f & selector_flags::NEVER != 0 {
        return false;
    }
    if f & selector_flags::UID != 0 && sel.uid != proc.uid_gid as u32 {
        return false;
    }
    if f & selector_flags::COMM != 0 && sel.comm != proc.pcomm {
        return false;
    }
    // Any tamper bit (steered loader, traced, or no exec record) fails `untampered: true`.
    if f & selector_flags::UNTAMPERED != 0 && proc.tamper != 0 {
        return false;
    }
    if f & selector_flags::CGROUP != 0 {
        let ancestor = if !ancestors.is_null() {
            let level = sel.cgroup_level as usize;
            if level < crate::mptcp::ANCESTORS {
                // SAFETY: `ancestors` points at `ANCESTORS` words of a live map value (see
                // `attempt`); the index is bounded by the check and the mask.
                unsafe { *ancestors.add(level & (crate::mptcp::ANCESTORS - 1)) }
            } else {
                0
            }
        } else if proc.subflow != 0 {
            crate::mptcp::ancestor(proc.subflow, sel.cgroup_level)
        } else {
            // SAFETY: plain helper; an out-of-range level yields 0, which is never a cgroup id.
            unsafe { bpf_get_current_ancestor_cgroup_id(sel.cgroup_level as i32) }
        };
        if ancestor != sel.cgroup_id {
            return false;
        }
    }
    if f & selector_flags::EXE != 0 {
        let key = ExeKey { selector: abs, dev: proc.exe_dev, ino: proc.exe_ino };
        // A process whose executable was pointed elsewhere (prctl) has the REPLACED bit in its
        // inode, which no EXE_SET key has: it matches no exe selector.
        let Some(gen) = EXE_SET.get_ptr(&key) else { return false };
        // SAFETY: a live map value.
        let gen = unsafe { *gen };
        // The same inode number on the same device is another file if its generation differs
        // (the allowed one was deleted and its number reused).
        if proc.exe_ino == 0 || (gen != GEN_ANY && gen != u64::from(proc.exe_gen)) {
            return false;
        }
    }
    true
}
