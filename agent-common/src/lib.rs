//! The kernel/userspace ABI of egress-agent: every type that crosses a map or the ring buffer, and
//! the names of the maps and programs. Both sides compile this crate, so a layout change is seen by
//! both at once. Every struct is `#[repr(C)]` with explicit padding: the kernel copies these bytes
//! verbatim and implicit padding would leak stack garbage or shift fields.
#![no_std]

/// Map names, as they appear in the eBPF object.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const EVENTS_DROPPED: &str = "EVENTS_DROPPED";
    pub const CONFIG: &str = "CONFIG";
    pub const ACTIVE_SLOT: &str = "ACTIVE_SLOT";
    pub const SLOT_META: &str = "SLOT_META";
    pub const RULES: &str = "RULES";
    pub const SELECTORS: &str = "SELECTORS";
    pub const EXE_SET: &str = "EXE_SET";
    /// `CgroupArray` whose entry 0 is the watched cgroup: filters the (host-wide) exec tracepoint.
    pub const WATCHED_CGROUP: &str = "WATCHED_CGROUP";
    /// Indexed by slot: `DESTS_V4[slot]` is the IPv4 trie of that slot.
    pub const DESTS_V4: [&str; 2] = ["DESTS_V4_0", "DESTS_V4_1"];
    pub const DESTS_V6: [&str; 2] = ["DESTS_V6_0", "DESTS_V6_1"];
}

/// Program names (the Rust function names in agent-ebpf) and the hook each attaches to.
pub mod programs {
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    pub const SENDMSG4: &str = "sendmsg4";
    pub const SENDMSG6: &str = "sendmsg6";
    /// raw_tracepoint on `sched_process_exec`.
    pub const EXEC: &str = "sched_process_exec";
}

/// First field of every ring-buffer record: which struct follows.
pub mod record {
    /// An [`super::Event`]: one outbound attempt.
    pub const CONNECT: u32 = 1;
    /// An [`super::ExecEvent`]: a process in the watched cgroup executed a program.
    pub const EXEC: u32 = 2;
}

/// Default capacity of the ring buffer that carries [`Event`]s, in bytes (a power of two, page
/// multiple); the agent can load the programs with another (`--ring-bytes`).
pub const EVENTS_RING_BYTES: u32 = 1 << 22;
/// The kernel wakes the reader once this many bytes of events are pending (an eighth of the ring,
/// about 5,000 events); below it the reader drains every [`EVENTS_POLL_MS`].
pub const EVENTS_WAKEUP_BYTES: u32 = EVENTS_RING_BYTES / 8;
/// How often the reader drains the ring without being woken.
pub const EVENTS_POLL_MS: u64 = 50;
/// Rule entries per slot; `RULES` holds two slots back to back.
pub const MAX_RULE_ENTRIES: u32 = 1 << 16;
/// Prefixes per family per slot.
pub const MAX_PREFIXES: u32 = 1 << 16;
/// Process selectors per slot; `SELECTORS` holds two slots back to back. Index 0 of a slot is
/// unused: a rule entry with selector 0 is for any process.
pub const MAX_SELECTORS: u32 = 1 << 12;
/// (selector, executable) pairs, both slots together.
pub const MAX_EXE_KEYS: u32 = 1 << 16;
/// How many rule entries one destination prefix may carry. The kernel walks them in a bounded
/// loop, so this is a verifier budget, not a soft limit: a policy that needs more is refused.
pub const MAX_RULES_PER_PREFIX: u32 = 64;

/// Hook that produced an event.
pub mod hook {
    pub const CONNECT4: u8 = 1;
    pub const CONNECT6: u8 = 2;
    pub const SENDMSG4: u8 = 3;
    pub const SENDMSG6: u8 = 4;
}

/// What was decided for an attempt.
pub mod verdict {
    pub const ALLOW: u8 = 0;
    /// Refused in the kernel with EPERM.
    pub const DENY: u8 = 1;
    /// Let through, but no rule allows it (monitor mode or `default: alert`).
    pub const ALERT: u8 = 2;
}

/// Policy enforcement mode of a slot.
pub mod mode {
    pub const MONITOR: u8 = 0;
    pub const ENFORCE: u8 = 1;
}

/// Bits of [`RuleEntry::protocols`].
pub mod proto_bits {
    pub const TCP: u8 = 1;
    pub const UDP: u8 = 2;
}

/// Bits of [`Event::flags`].
pub mod event_flags {
    /// The destination was an IPv4-mapped IPv6 address and was matched as IPv4.
    pub const V4_MAPPED: u8 = 1;
    /// The executable's inode could not be read (kernel thread, no offsets, read fault).
    pub const EXE_UNKNOWN: u8 = 2;
    /// A vendor's destination, port and protocol matched, but the process is not one the vendor
    /// allows; `rule_id` names that vendor's rule.
    pub const PROCESS_NOT_ALLOWED: u8 = 4;
}

/// Bits of [`Selector::flags`]: which fields must match (all of them).
pub mod selector_flags {
    pub const EXE: u32 = 1;
    pub const COMM: u32 = 2;
    pub const UID: u32 = 4;
    pub const CGROUP: u32 = 8;
    /// Could not be resolved (no such user, executable or cgroup): matches nothing.
    pub const NEVER: u32 = 16;
}

/// Bits of [`RuleEntry::flags`].
pub mod rule_flags {
    /// The vendor overrides the policy mode: its process mismatches are only reported.
    pub const MODE_MONITOR: u8 = 1;
    /// The vendor overrides the policy mode: its process mismatches are refused.
    pub const MODE_ENFORCE: u8 = 2;
}

/// Rule id reported when no rule matched and the slot's default action decided.
pub const RULE_DEFAULT: u32 = u32::MAX;

/// One outbound attempt, as seen by a cgroup hook. 112 bytes, 8-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// [`record::CONNECT`].
    pub kind: u32,
    /// Thread-group id.
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Kernel-internal `dev_t` (major << 20 | minor) of the executable's filesystem.
    pub exe_dev: u32,
    /// Rule that decided, or [`RULE_DEFAULT`].
    pub rule_id: u32,
    /// Policy generation that decided: lets userspace name the rule even across a reload.
    pub generation: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub exe_ino: u64,
    /// The process's start time (its thread-group leader's `start_time`, ns since boot): with
    /// `pid`, a process identity that survives pid reuse.
    pub start_ns: u64,
    /// Destination address in network order; IPv4 (and matched IPv4-mapped) uses the first 4 bytes.
    pub daddr: [u8; 16],
    pub comm: [u8; 16],
    /// Destination port, host order.
    pub dport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10) as matched.
    pub family: u8,
    /// IPPROTO number: 6 (TCP), 17 (UDP; UDP-Lite is reported and matched as UDP), or another
    /// protocol that reached a hook (1, ICMP ping sockets), which no rule can allow.
    pub proto: u8,
    pub verdict: u8,
    pub hook: u8,
    pub flags: u8,
    pub _pad1: u8,
}

/// Bytes of the exec'd path carried by an [`ExecEvent`] (longer paths are cut, NUL-terminated).
pub const EXEC_FILENAME_LEN: usize = 256;

/// A process in the watched cgroup executed a program. Lets the agent name the executable of a
/// process that has exited before its connection events are read (a `curl` in a script).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    /// [`record::EXEC`].
    pub kind: u32,
    pub pid: u32,
    /// Kernel `dev_t` and inode of the new executable, as in [`Event`].
    pub exe_dev: u32,
    pub _pad: u32,
    pub exe_ino: u64,
    pub ts_ns: u64,
    /// As [`Event::start_ns`].
    pub start_ns: u64,
    /// The path given to execve (`linux_binprm.filename`), NUL-terminated; may be relative.
    pub filename: [u8; EXEC_FILENAME_LEN],
}

/// Field offsets in kernel structs, computed by the agent from the running kernel's BTF.
/// `valid == 0` means the agent could not compute them and the programs skip the exe lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub binprm_filename: u32,
    pub task_start_time: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub valid: u32,
    pub _pad: u32,
}

/// `CONFIG[0]`: settings that do not change with the policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: KernelOffsets,
    /// Wake the reader once this many bytes of events are pending (see [`EVENTS_WAKEUP_BYTES`]
    /// for the default ring); 0 wakes it for every event.
    pub wakeup_bytes: u32,
    pub _pad: u32,
}

/// `SLOT_META[slot]`: the policy-wide settings of one slot. Written before the slot is activated
/// through `ACTIVE_SLOT`, never while it is active, so readers never see a torn value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    pub generation: u32,
    pub mode: u8,
    /// Verdict for traffic no rule allows, before the mode is applied (see [`verdict`]).
    pub default_verdict: u8,
    pub _pad: [u8; 2],
}

/// Value of a destination trie: the rule entries `RULES[first .. first + count]` that apply to
/// every address under the prefix (the prefix's own rules and those of every enclosing prefix,
/// most specific first), so one longest-prefix lookup finds all candidates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestValue {
    pub first: u32,
    pub count: u32,
}

/// One allow rule as the kernel checks it after the destination matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub rule_id: u32,
    /// Inclusive port range, host order; 0..=65535 for any port.
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`proto_bits`].
    pub protocols: u8,
    /// [`rule_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Index of the [`Selector`] within the slot; 0: any process.
    pub selector: u32,
}

/// Which processes a rule entry is for, as the kernel checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// [`selector_flags`].
    pub flags: u32,
    pub uid: u32,
    /// Depth of `cgroup_id` in the hierarchy (the root is 0), for
    /// `bpf_get_current_ancestor_cgroup_id`.
    pub cgroup_level: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// NUL-padded name of the process (its thread-group leader's comm, not the calling
    /// thread's: worker threads often rename themselves).
    pub comm: [u8; 16],
}

/// Key of `EXE_SET`: this executable (kernel dev_t, inode) satisfies the selector at absolute
/// index `selector` (slot * MAX_SELECTORS + index), whose `exe` glob it matched at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeKey {
    pub selector: u32,
    pub dev: u32,
    pub ino: u64,
}

/// LPM trie key data for IPv4: the address in network order.
pub type AddrV4 = [u8; 4];
/// LPM trie key data for IPv6: the address in network order.
pub type AddrV6 = [u8; 16];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, made of integers, with explicit padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SlotMeta {}
    unsafe impl aya::Pod for super::DestValue {}
    unsafe impl aya::Pod for super::RuleEntry {}
    unsafe impl aya::Pod for super::Selector {}
    unsafe impl aya::Pod for super::ExeKey {}
}

// The layout is an ABI: fail the build of both sides if it drifts.
const _: () = assert!(core::mem::size_of::<Event>() == 112);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 40 + EXEC_FILENAME_LEN);
const _: () = assert!(core::mem::size_of::<Config>() == 56);
const _: () = assert!(core::mem::size_of::<SlotMeta>() == 8);
const _: () = assert!(core::mem::size_of::<RuleEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Selector>() == 40);
const _: () = assert!(core::mem::size_of::<ExeKey>() == 16);
