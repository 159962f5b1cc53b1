//! Kernel side of egress-agent: cgroup socket-address hooks that attribute every outbound TCP/UDP
//! attempt to its process, decide it against the destination tries the agent fills, and report it
//! through a ring buffer.
//!
//! Coverage, and why these four hooks suffice:
//! - connect4/connect6 run for TCP connect(), UDP connect() (so a connected UDP socket is checked
//!   once, when it is connected) and TCP Fast Open (`sendto(MSG_FASTOPEN)` goes through the same
//!   `pre_connect` path).
//! - sendmsg4/sendmsg6 run for every datagram sent with an explicit address on an unconnected UDP
//!   socket. An IPv4-mapped destination on an IPv6 UDP socket is handed to the IPv4 path by the
//!   kernel and arrives at sendmsg4; on connect6 we unmap it ourselves.
//! - The hooks are inherited by every descendant cgroup and every process, so children after
//!   fork/exec are covered without tracking them.
//!
//! A raw tracepoint on `sched_process_exec` reports each program executed in the watched cgroup,
//! so userspace can name the executable of a process that is gone before its events are read.
#![no_std]
#![no_main]
// The BPF target does not advertise atomics to `core::sync::atomic`, but the instruction set has
// an atomic add (BPF_ATOMIC | BPF_ADD), which this intrinsic lowers to.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use agent_common::{
    event_flags, hook, mode, proto_bits, record, rule_flags, selector_flags, verdict, AddrV4, AddrV6, Config,
    DestValue, Event, ExeKey, ExecEvent, RuleEntry, Selector, SlotMeta, EVENTS_RING_BYTES, EVENTS_WAKEUP_BYTES,
    MAX_EXE_KEYS, MAX_PREFIXES, MAX_RULES_PER_PREFIX, MAX_RULE_ENTRIES, MAX_SELECTORS, RULE_DEFAULT,
};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_socket_cookie,
            bpf_ktime_get_ns,
        },
    },
    macros::{cgroup_sock_addr, map, raw_tracepoint},
    maps::{lpm_trie::Key, Array, CgroupArray, HashMap, LpmTrie, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, SockAddrContext},
    EbpfContext,
};

const AF_INET: u8 = 2;
// bpf_ringbuf_submit / bpf_ringbuf_query flags (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_UDPLITE: u32 = 136;

/// Return values of a cgroup sock_addr program.
const PASS: i32 = 1;
const REFUSE: i32 = 0; // the syscall fails with EPERM

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Events that found the ring buffer full, per CPU (index 0).
#[map(name = "EVENTS_DROPPED")]
static EVENTS_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Which of the two policy slots is in force (0 or 1). The agent fills the other slot and then
/// flips this single word, so no attempt is ever decided by a half-written rule set.
#[map(name = "ACTIVE_SLOT")]
static ACTIVE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "SLOT_META")]
static SLOT_META: Array<SlotMeta> = Array::with_max_entries(2, 0);

/// Rule entries of both slots: slot `s` owns `[s * MAX_RULE_ENTRIES, (s + 1) * MAX_RULE_ENTRIES)`.
#[map(name = "RULES")]
static RULES: Array<RuleEntry> = Array::with_max_entries(2 * MAX_RULE_ENTRIES, 0);

/// Process selectors of both slots, laid out like `RULES`.
#[map(name = "SELECTORS")]
static SELECTORS: Array<Selector> = Array::with_max_entries(2 * MAX_SELECTORS, 0);

/// Executables (by device and inode) that satisfy a selector's `exe`.
#[map(name = "EXE_SET")]
static EXE_SET: HashMap<ExeKey, u8> = HashMap::with_max_entries(MAX_EXE_KEYS, 0);

#[map(name = "DESTS_V4_0")]
static DESTS_V4_0: LpmTrie<AddrV4, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V4_1")]
static DESTS_V4_1: LpmTrie<AddrV4, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V6_0")]
static DESTS_V6_0: LpmTrie<AddrV6, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V6_1")]
static DESTS_V6_1: LpmTrie<AddrV6, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "WATCHED_CGROUP")]
static WATCHED_CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    on_v4(&ctx, hook::CONNECT4)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    on_v4(&ctx, hook::SENDMSG4)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    on_v6(&ctx, hook::CONNECT6)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    on_v6(&ctx, hook::SENDMSG6)
}

/// The destination of one attempt, as it will be matched.
struct Dest {
    addr: [u8; 16],
    family: u8,
    port: u16,
    proto: u8,
    flags: u8,
}

#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) -> &bpf_sock_addr {
    // SAFETY: the kernel hands every sock_addr program a valid context for its whole run.
    unsafe { &*ctx.sock_addr }
}

#[inline(always)]
fn on_v4(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    let mut addr = [0u8; 16];
    // user_ip4 is in network order in memory: its native bytes are the address bytes.
    let ip4 = sa.user_ip4.to_ne_bytes();
    addr[..4].copy_from_slice(&ip4);
    let dest = Dest { addr, family: AF_INET, port: u16::from_be(sa.user_port as u16), proto, flags: 0 };
    handle(ctx, hook, &dest)
}

#[inline(always)]
fn on_v6(ctx: &SockAddrContext, hook: u8) -> i32 {
    let sa = sock_addr(ctx);
    let proto = protocol(sa);
    // The verifier only allows 4-byte loads of user_ip6, one word at a time.
    let w0 = sa.user_ip6[0].to_ne_bytes();
    let w1 = sa.user_ip6[1].to_ne_bytes();
    let w2 = sa.user_ip6[2].to_ne_bytes();
    let w3 = sa.user_ip6[3].to_ne_bytes();
    let port = u16::from_be(sa.user_port as u16);
    let mut addr = [0u8; 16];
    // ::ffff:a.b.c.d is IPv4 on the wire: match it against the IPv4 rules, or it would bypass them.
    let mapped = w0 == [0; 4] && w1 == [0; 4] && w2 == [0, 0, 0xff, 0xff];
    let dest = if mapped {
        addr[..4].copy_from_slice(&w3);
        Dest { addr, family: AF_INET, port, proto, flags: event_flags::V4_MAPPED }
    } else {
        addr[0..4].copy_from_slice(&w0);
        addr[4..8].copy_from_slice(&w1);
        addr[8..12].copy_from_slice(&w2);
        addr[12..16].copy_from_slice(&w3);
        Dest { addr, family: AF_INET6, port, proto, flags: 0 }
    };
    handle(ctx, hook, &dest)
}

/// The IPPROTO number to match and report. UDP-Lite sockets take the UDP paths and are UDP to
/// the policy. Anything else that reaches these hooks (ICMP ping sockets connect through
/// connect4/6) is decided and reported too: no rule can allow it, so `default` decides, and
/// nothing passes unseen.
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
}

/// The calling task, read once per attempt: the verdict and the event both use it.
struct Proc {
    /// The process's name: its thread-group leader's comm (what selectors match).
    pcomm: [u8; 16],
    start_ns: u64,
    pid_tgid: u64,
    uid_gid: u64,
    comm: [u8; 16],
    exe_dev: u32,
    exe_ino: u64,
}

#[inline(always)]
fn current_proc() -> Proc {
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

#[inline(always)]
fn handle(ctx: &SockAddrContext, hook: u8, dest: &Dest) -> i32 {
    let proc = current_proc();
    let decision = decide(dest, &proc);
    emit(ctx, hook, dest, &proc, &decision);
    if decision.verdict == verdict::DENY {
        REFUSE
    } else {
        PASS
    }
}

#[inline(always)]
fn decide(dest: &Dest, proc: &Proc) -> Decision {
    let slot = match ACTIVE_SLOT.get(0) {
        Some(&s) if s < 2 => s,
        _ => 0,
    };
    let Some(meta) = SLOT_META.get(slot) else {
        // Unreachable with a loaded agent (array maps always have their entries); never refuse
        // on an internal fault.
        return Decision { verdict: verdict::ALERT, rule_id: RULE_DEFAULT, generation: 0, flags: 0 };
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
    let mut scoped: Option<(u32, u8)> = None;
    if let Some(value) = value {
        match match_rules(slot, &value, dest, proc) {
            Match::Allowed(rule_id) => {
                return Decision { verdict: verdict::ALLOW, rule_id, generation, flags: 0 };
            }
            Match::WrongProcess(rule_id, flags) => scoped = Some((rule_id, flags)),
            Match::None => {}
        }
    }
    // A vendor's destination from a process the vendor does not allow: refused (or, in monitor
    // mode, reported) whatever `default` says, since the destination is reserved to the vendor's
    // processes. The vendor's own mode, if it has one, decides over the policy's.
    if let Some((rule_id, flags)) = scoped {
        let enforce = if flags & rule_flags::MODE_MONITOR != 0 {
            false
        } else {
            flags & rule_flags::MODE_ENFORCE != 0 || meta.mode == mode::ENFORCE
        };
        let verdict = if enforce { verdict::DENY } else { verdict::ALERT };
        return Decision { verdict, rule_id, generation, flags: event_flags::PROCESS_NOT_ALLOWED };
    }
    let verdict = match (meta.default_verdict, meta.mode) {
        (verdict::ALLOW, _) => verdict::ALLOW,
        (verdict::DENY, mode::ENFORCE) => verdict::DENY,
        _ => verdict::ALERT,
    };
    Decision { verdict, rule_id: RULE_DEFAULT, generation, flags: 0 }
}

enum Match {
    Allowed(u32),
    /// First entry whose destination, port and protocol matched but whose process did not.
    WrongProcess(u32, u8),
    None,
}

#[inline(always)]
fn match_rules(slot: u32, value: &DestValue, dest: &Dest, proc: &Proc) -> Match {
    let bit = match dest.proto as u32 {
        IPPROTO_TCP => proto_bits::TCP,
        IPPROTO_UDP => proto_bits::UDP,
        _ => return Match::None,
    };
    let base = slot * MAX_RULE_ENTRIES;
    let mut wrong = Match::None;
    for i in 0..MAX_RULES_PER_PREFIX {
        if i >= value.count {
            break;
        }
        let Some(rule) = RULES.get(base + value.first + i) else {
            break;
        };
        if rule.protocols & bit == 0 || dest.port < rule.port_lo || dest.port > rule.port_hi {
            continue;
        }
        if rule.selector == 0 || selector_matches(slot, rule.selector, proc) {
            return Match::Allowed(rule.rule_id);
        }
        if let Match::None = wrong {
            wrong = Match::WrongProcess(rule.rule_id, rule.flags);
        }
    }
    wrong
}

#[inline(always)]
fn selector_matches(slot: u32, index: u32, proc: &Proc) -> bool {
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
    if f & selector_flags::CGROUP != 0 {
        // SAFETY: plain helper; an out-of-range level yields 0, which is never a cgroup id.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(sel.cgroup_level as i32) };
        if ancestor != sel.cgroup_id {
            return false;
        }
    }
    if f & selector_flags::EXE != 0 {
        let key = ExeKey { selector: abs, dev: proc.exe_dev, ino: proc.exe_ino };
        if proc.exe_ino == 0 || EXE_SET.get_ptr(&key).is_none() {
            return false;
        }
    }
    true
}

#[inline(always)]
fn emit(ctx: &SockAddrContext, hook: u8, dest: &Dest, proc: &Proc, decision: &Decision) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let (pid_tgid, uid_gid, exe_dev, exe_ino) = (proc.pid_tgid, proc.uid_gid, proc.exe_dev, proc.exe_ino);
    let mut flags = dest.flags | decision.flags;
    if exe_ino == 0 {
        flags |= event_flags::EXE_UNKNOWN;
    }
    // SAFETY: plain helpers without pointer arguments, or with the program's own context.
    let (ts_ns, cgroup_id, cookie) =
        unsafe { (bpf_ktime_get_ns(), bpf_get_current_cgroup_id(), bpf_get_socket_cookie(ctx.as_ptr())) };
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
        daddr: dest.addr,
        comm: proc.comm,
        dport: dest.port,
        family: dest.family,
        proto: dest.proto,
        verdict: decision.verdict,
        hook,
        flags,
        _pad1: 0,
    });
    entry.submit(wakeup_flags());
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`: runs
/// in the context of the task that exec'd, after its new mm (and exe_file) is installed.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
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

/// Waking the reader for every event costs more than the rest of the hook together (an irq_work
/// and a cross-CPU wakeup per connect). The reader is woken only once a batch has piled up, and
/// otherwise drains on its own short timer (`EVENTS_POLL_MS`), so connect() pays for neither.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let threshold = CONFIG.get(0).map_or(EVENTS_WAKEUP_BYTES, |c| c.wakeup_bytes);
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn count_drop() {
    if let Some(counter) = EVENTS_DROPPED.get_ptr_mut(0) {
        // Atomic even though the slot is per CPU: these programs run preemptibly, so another
        // program on the same CPU can interleave with a plain read-modify-write.
        // SAFETY: the pointer is to a live, aligned u64 map value.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(counter, 1);
        }
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
