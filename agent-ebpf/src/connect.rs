//! The connect/sendmsg hooks: every outbound TCP/UDP attempt is attributed to its process,
//! decided against the destination tries and the addresses learnt from DNS, and reported.
//!
//! Coverage, and why these four hooks suffice:
//! - connect4/connect6 run for TCP connect(), UDP connect() (so a connected UDP socket is checked
//!   once, when it is connected) and TCP Fast Open (`sendto(MSG_FASTOPEN)` goes through the same
//!   `pre_connect` path).
//! - sendmsg4/sendmsg6 run for every datagram sent with an explicit address on an unconnected UDP
//!   socket. An IPv4-mapped destination on an IPv6 UDP socket is handed to the IPv4 path by the
//!   kernel and arrives at sendmsg4; on connect6 we unmap it ourselves. A NAT64 destination
//!   (IPv6 on the wire) reaches connect6/sendmsg6, which decide it as the IPv4 address it embeds.
//! - The hooks are inherited by every descendant cgroup and every process, so children after
//!   fork/exec are covered without tracking them.

use core::ffi::c_void;

use agent_common::{
    event_flags, flow_counter, mode, proto_bits, record, rule_flags, selector_flags, verdict, DestValue, Event, ExeKey,
    Learnt, LearntKeyV4, LearntKeyV6, Nat64Key, SlotMeta, GEN_ANY, LEARNT_SLOTS, MAX_DOMAIN_IDS, MAX_RULES_PER_PREFIX,
    MAX_RULE_ENTRIES, MAX_SELECTORS, NAT64_WELL_KNOWN, RULE_DEFAULT,
};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_loop,
    },
    maps::lpm_trie::Key,
    programs::SockAddrContext,
    EbpfContext as _,
};

use crate::{
    flows,
    identity::{current_proc, Proc},
    kill,
    maps::{
        ACTIVE_SLOT, DESTS_V4_0, DESTS_V4_1, DESTS_V6_0, DESTS_V6_1, DOMAIN_RULES, EVENTS, EXE_SET, LEARNT_V4,
        LEARNT_V6, NAT64_PREFIXES, RULES, SELECTORS, SLOT_META,
    },
    maps::{FLOW_COUNTERS, SK_FLOWS},
    ring::{add, count_drop, wakeup_flags},
    AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// Return values of a cgroup sock_addr program.
const PASS: i32 = 1;
const REFUSE: i32 = 0; // the syscall fails with EPERM

/// The destination of one attempt, as it will be matched.
pub struct Dest {
    /// The address decided: IPv4 in the first four bytes when `family` is `AF_INET`.
    pub addr: [u8; 16],
    /// The address on the wire, as flows count it and events report it: `addr`, except for a
    /// NAT64 destination (decided as IPv4, sent as IPv6).
    pub wire: [u8; 16],
    /// Network namespace of the socket (addresses learnt from DNS are per namespace).
    pub netns: u64,
    pub family: u8,
    pub wire_family: u8,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) -> &bpf_sock_addr {
    // SAFETY: the kernel hands every sock_addr program a valid context for its whole run.
    unsafe { &*ctx.sock_addr }
}

#[inline(always)]
pub fn on_v4(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    let mut addr = [0u8; 16];
    // user_ip4 is in network order in memory: its native bytes are the address bytes.
    let ip4 = sa.user_ip4.to_ne_bytes();
    addr[..4].copy_from_slice(&ip4);
    let netns = netns_of(ctx);
    let port = port_of(u16::from_be(sa.user_port as u16), proto);
    let dest = Dest { addr, wire: addr, netns, family: AF_INET, wire_family: AF_INET, port, proto, flags: 0 };
    handle(ctx, hook, &dest)
}

#[inline(always)]
pub fn on_v6(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    // The verifier only allows 4-byte loads of user_ip6, one word at a time. Each word's native
    // value has the address bytes in memory order.
    let w = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let port = port_of(u16::from_be(sa.user_port as u16), proto);
    let dest = dest_v6(w, port, proto, netns_of(ctx));
    handle(ctx, hook, &dest)
}

/// The destination an IPv6 address `w` (four words, each with the address bytes in memory
/// order) stands for.
#[inline(always)]
pub fn dest_v6(w: [u32; 4], port: u16, proto: u8, netns: u64) -> Dest {
    let [w0, w1, w2, w3] = w;
    // Two IPv6 forms are decided as the IPv4 address in their last word, or they would bypass
    // the IPv4 rules: ::ffff:a.b.c.d, which is IPv4 on the wire too, and an address under a
    // NAT64 prefix (64:ff9b::/96 or one the policy lists), IPv6 on the wire. Masks, not
    // branches: a branch here is a second walk of everything below for the verifier, which the
    // connect programs have no room for.
    let mapped = zero_mask(w0 | w1 | (w2 ^ u32::from_ne_bytes([0, 0, 0xff, 0xff])));
    let [k0, k1, k2] = words(NAT64_WELL_KNOWN);
    let nat64 = !mapped & (zero_mask((w0 ^ k0) | (w1 ^ k1) | (w2 ^ k2)) | listed_nat64(w0, w1, w2));
    let v4 = mapped | nat64;
    let addr = select_v4(v4, [w0, w1, w2, w3]);
    let wire = select_v4(mapped, [w0, w1, w2, w3]);
    Dest {
        addr,
        wire,
        netns,
        family: AF_INET6 ^ ((AF_INET6 ^ AF_INET) & v4 as u8),
        wire_family: AF_INET6 ^ ((AF_INET6 ^ AF_INET) & mapped as u8),
        port,
        proto,
        flags: (event_flags::V4_MAPPED & mapped as u8) | (event_flags::NAT64 & nat64 as u8),
    }
}

/// The port as decided and reported: 0 for ICMP, whose packets carry none (a ping socket's
/// `connect()` takes any). A mask, not a branch (see `on_v6`).
#[inline(always)]
fn port_of(port: u16, proto: u8) -> u16 {
    let p = u32::from(proto);
    // Zero exactly for ICMP or ICMPv6 (both factors are below 256, so the product is exact).
    port & !(zero_mask((p ^ IPPROTO_ICMP) * (p ^ IPPROTO_ICMPV6)) as u16)
}

/// All ones when `x` is zero, else zero, without a branch: the top bit of `x | -x` is set
/// exactly when `x` is not zero.
#[inline(always)]
fn zero_mask(x: u32) -> u32 {
    let x = u64::from(x);
    (((x | x.wrapping_neg()) >> 63) as u32).wrapping_sub(1)
}

/// The address `w`, or (where `v4` is all ones) the IPv4 address in its last word, in the
/// first four bytes.
#[inline(always)]
fn select_v4(v4: u32, w: [u32; 4]) -> [u8; 16] {
    let keep = !v4;
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&((w[3] & v4) | (w[0] & keep)).to_ne_bytes());
    a[4..8].copy_from_slice(&(w[1] & keep).to_ne_bytes());
    a[8..12].copy_from_slice(&(w[2] & keep).to_ne_bytes());
    a[12..16].copy_from_slice(&(w[3] & keep).to_ne_bytes());
    a
}

/// The three words of a 96-bit prefix, as `on_v6` reads an address's.
#[inline(always)]
fn words(p: [u8; 12]) -> [u32; 3] {
    [
        u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
        u32::from_ne_bytes([p[4], p[5], p[6], p[7]]),
        u32::from_ne_bytes([p[8], p[9], p[10], p[11]]),
    ]
}

/// All ones when the policy in force lists the /96 prefix `w0 w1 w2` in `nat64Prefixes`:
/// one hash lookup in that slot's entries (a reload fills the new slot's before it switches).
#[inline(always)]
fn listed_nat64(w0: u32, w1: u32, w2: u32) -> u32 {
    let slot = match ACTIVE_SLOT.get(0) {
        Some(&s) if s < 2 => s,
        _ => 0,
    };
    let mut prefix = [0u8; 12];
    prefix[0..4].copy_from_slice(&w0.to_ne_bytes());
    prefix[4..8].copy_from_slice(&w1.to_ne_bytes());
    prefix[8..12].copy_from_slice(&w2.to_ne_bytes());
    NAT64_PREFIXES.get_ptr(&Nat64Key { slot, prefix }).map_or(0, |v| {
        // SAFETY: a live map value.
        unsafe { *v }
    })
}

#[inline(always)]
fn netns_of(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the helper takes the program's own context.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}

/// The IPPROTO number to match and report. UDP-Lite sockets take the UDP paths and are UDP to
/// the policy. ICMP ping sockets connect through connect4/6 and are matched by `icmp` rules.
#[inline(always)]
fn protocol(sa: &bpf_sock_addr) -> u8 {
    match sa.protocol {
        IPPROTO_UDPLITE => IPPROTO_UDP as u8,
        p => p as u8,
    }
}

struct Decision {
    verdict: u8,
    rule_id: u32,
    generation: u32,
    flags: u8,
    domain_id: u32,
    /// Vendor id of the rule that allowed, 0 if none.
    vendor: u16,
}

impl Decision {
    /// An infrastructure `allow` rule (one of no vendor) let it through: the only kind of
    /// attempt `block --all` leaves alone.
    #[inline(always)]
    fn infra(&self) -> bool {
        self.verdict == verdict::ALLOW && self.vendor == 0 && self.rule_id != RULE_DEFAULT
    }
}

impl flows::Sock for SockAddrContext {
    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_socket_cookie(self.as_ptr()) }
    }

    #[inline(always)]
    fn mark(&self) -> bool {
        // SAFETY: the socket of a sock_addr program is a full socket.
        !unsafe { SK_FLOWS.get_or_insert_ptr_mut(self, None) }.is_null()
    }
}

#[inline(always)]
fn handle(ctx: &SockAddrContext, hook: u8, dest: &Dest) -> i32 {
    let mut proc = current_proc();
    if crate::mptcp::resolve(ctx, &mut proc).is_none() {
        // Preempted by another hook on this CPU while the identity was built (see `resolve`):
        // it may be another process's, so nothing is decided on it — refused in enforce mode
        // (the caller sees EPERM, as for any refusal), let through in monitor mode. Rare, and a
        // path that stops here costs the verifier nothing.
        return match active_slot() {
            Some((_, m)) if m.mode == mode::ENFORCE => REFUSE,
            _ => PASS,
        };
    }
    attempt(ctx, hook, dest, &proc, core::ptr::null())
}

/// Decides one attempt of `proc` on socket `sock` towards `dest`, keeps its flow and reports
/// it: PASS or REFUSE. `ancestors`: the cgroup ancestors of `proc` by level when it is not the
/// current task (a datagram decided on its way out), else null.
#[inline(always)]
pub fn attempt<S: flows::Sock>(sock: &S, hook: u8, dest: &Dest, proc: &Proc, ancestors: *const u64) -> i32 {
    let kill = kill::now();
    // The kill switch first, in a walk of its own (only while a kill is in force): a killed
    // vendor's address is refused whichever rule would have allowed it.
    let (killed_rule_id, killed_domain) = if kill.any { kill::killed_rule(dest, kill.now) } else { (0, 0) };
    let mut decision = if killed_rule_id != 0 {
        let learnt = if killed_domain != 0 { event_flags::LEARNT } else { 0 };
        Decision {
            verdict: verdict::DENY,
            rule_id: killed_rule_id as u32,
            generation: active_slot().map_or(0, |(_, m)| m.generation),
            flags: event_flags::KILLED | learnt,
            domain_id: killed_domain,
            vendor: 0,
        }
    } else {
        decide(dest, proc, ancestors)
    };
    if kill.all && decision.flags & event_flags::KILLED == 0 && !decision.infra() {
        decision.verdict = verdict::DENY;
        decision.flags |= event_flags::KILLED;
    }
    if decision.verdict == verdict::ALLOW && decision.vendor != 0 && flows::blocked(decision.vendor, proc) {
        decision.verdict = verdict::DENY;
        decision.flags |= event_flags::BLOCKED;
    }
    // One datagram of many (a sendmsg, or a datagram seen on its way out), not a connect.
    let sendmsg = matches!(
        hook,
        agent_common::hook::SENDMSG4
            | agent_common::hook::SENDMSG6
            | agent_common::hook::EGRESS4
            | agent_common::hook::EGRESS6
    );
    // Flows are counted from packets, which carry the address on the wire.
    let key = flows::key(sock.cookie(), &dest.wire, dest.port, dest.wire_family, dest.proto);
    let live = flows::live(&key);
    if sendmsg && live != flows::NO_FLOW {
        // A datagram of a flow already reported: its verdict is taken again (the policy may have
        // changed), but one let through with the verdict the flow was reported with (allowed,
        // or alerted in monitor mode) is only counted in the flow, so a UDP client in monitor
        // mode is one record too, not one per datagram. A block leaves live flows alone.
        if decision.flags & event_flags::BLOCKED != 0 {
            decision.verdict = verdict::ALLOW;
            decision.flags &= !event_flags::BLOCKED;
        }
        if decision.verdict == verdict::ALLOW || u32::from(decision.verdict) == live {
            return PASS;
        }
        if decision.verdict != verdict::DENY {
            // Reported once with the new verdict, then counted again.
            flows::set_verdict(&key, decision.verdict);
        }
    }
    if decision.verdict == verdict::DENY {
        if decision.flags & event_flags::KILLED != 0 {
            add(&FLOW_COUNTERS, flow_counter::KILLED);
        } else if decision.flags & event_flags::BLOCKED != 0 {
            add(&FLOW_COUNTERS, flow_counter::BLOCKED);
        }
    } else if live == flows::NO_FLOW
        && !flows::create(sock, &key, decision.verdict, flow_vendor(dest, &decision), decision.infra())
    {
        decision.flags |= event_flags::NO_FLOW;
    }
    emit(sock, hook, dest, proc, &decision);
    if decision.verdict == verdict::DENY {
        REFUSE
    } else {
        PASS
    }
}

/// The vendor a new flow belongs to, for the kill switch: the vendor whose rule allowed it, or,
/// for an attempt let through with an alert on a vendor's reserved destination, that vendor (a
/// walk of its own, only for those).
#[inline(always)]
fn flow_vendor(dest: &Dest, decision: &Decision) -> u16 {
    if decision.vendor != 0 || decision.flags & event_flags::PROCESS_NOT_ALLOWED == 0 {
        return decision.vendor;
    }
    kill::rule_vendor(dest, decision.rule_id, decision.domain_id)
}

/// The slot in force and its settings.
#[inline(always)]
pub fn active_slot() -> Option<(u32, &'static SlotMeta)> {
    let slot = match ACTIVE_SLOT.get(0) {
        Some(&s) if s < 2 => s,
        _ => 0,
    };
    SLOT_META.get(slot).map(|m| (slot, m))
}

#[inline(always)]
fn decide(dest: &Dest, proc: &Proc, ancestors: *const u64) -> Decision {
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

#[inline(always)]
fn emit<S: flows::Sock>(sock: &S, hook: u8, dest: &Dest, proc: &Proc, decision: &Decision) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let (pid_tgid, uid_gid, exe_dev, exe_ino) = (proc.pid_tgid, proc.uid_gid, proc.exe_dev, proc.ino());
    let mut flags = dest.flags | decision.flags;
    if exe_ino == 0 {
        flags |= event_flags::EXE_UNKNOWN;
    }
    // SAFETY: plain helper.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let cookie = sock.cookie();
    let cgroup_id = proc.cgroup_id;
    entry.write(Event {
        kind: record::CONNECT,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        exe_dev,
        rule_id: decision.rule_id,
        generation: decision.generation,
        ts_ns,
        cookie,
        cgroup_id,
        exe_ino,
        start_ns: proc.start_ns,
        daddr: dest.wire,
        comm: proc.comm,
        dport: dest.port,
        family: dest.wire_family,
        proto: dest.proto,
        verdict: decision.verdict,
        hook,
        flags,
        flags2: crate::identity::flags2_of(proc),
        domain_id: decision.domain_id,
        sock_type: 0,
    });
    entry.submit(wakeup_flags());
}
