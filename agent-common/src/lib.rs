//! The kernel/userspace ABI of egress-agent: every type that crosses a map or the ring buffer, and
//! the names of the maps and programs. Both sides compile this crate, so a layout change is seen by
//! both at once. Every struct is `#[repr(C)]` with explicit padding: the kernel copies these bytes
//! verbatim and implicit padding would leak stack garbage or shift fields.
#![no_std]

pub mod dns;
mod flows;
mod names;

pub use flows::{flow_counter, BlockKey, FlowEnd, FlowKey, FlowStats, KillState, MAX_BLOCKS, MAX_FLOWS, MAX_KILLS};
pub use names::{IdName, MAX_NAMES};

mod events;
mod identity;
pub mod maps;
pub use events::{dns_flags, event_flags, event_flags2, hook, record, DnsEvent, Event, DNS_EVENT_ADDRS, DNS_EVENT_MSG};
pub use identity::{
    tamper, Config, ExecEvent, ExecId, KernelOffsets, ENV_CHUNK, ENV_SCAN_STEPS, EXEC_FILENAME_LEN, MAX_EXEC_IDS,
};

/// Program names (the Rust function names in agent-ebpf) and the hook each attaches to.
pub mod programs {
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    pub const SENDMSG4: &str = "sendmsg4";
    pub const SENDMSG6: &str = "sendmsg6";
    /// raw_tracepoint on `sched_process_exec`.
    pub const EXEC: &str = "sched_process_exec";
    /// cgroup_skb egress: counts the bytes of tracked flows; records outstanding DNS queries,
    /// refuses unlisted ones.
    pub const SKB_EGRESS: &str = "skb_egress";
    /// cgroup_skb ingress: counts the bytes of tracked flows; parses DNS answers before the
    /// socket can read them.
    pub const SKB_INGRESS: &str = "skb_ingress";
    /// cgroup_skb egress, tail-called by `skb_egress` (not attached): decides each datagram of
    /// an ICMP ping or UDP-Lite socket by its destination (no sock_addr hook sees them all).
    pub const SKB_DGRAM: &str = "skb_dgram";
    /// cgroup/sock_release: reports the end of a socket that has flows.
    pub const FLOW_RELEASE: &str = "flow_release";
    /// cgroup/sock_create: refuses (enforce mode) sockets whose sends no hook decides.
    pub const SOCK_CREATE: &str = "sock_create";
    /// raw_tracepoint on `sched_process_fork`: a new process inherits its parent's executable.
    pub const FORK: &str = "sched_process_fork";
    /// raw_tracepoint on `sched_process_exit`: a process that ended loses its entry.
    pub const EXIT: &str = "sched_process_exit";
    /// raw_tracepoint on `sched_switch`: a thread stopping for a tracer marks its process traced.
    pub const SWITCH: &str = "sched_switch";
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
    /// ICMP and ICMPv6 from ping sockets (echo requests): ports do not apply.
    pub const ICMP: u8 = 4;
}

/// Bits of [`Selector::flags`]: which fields must match (all of them).
pub mod selector_flags {
    pub const EXE: u32 = 1;
    pub const COMM: u32 = 2;
    pub const UID: u32 = 4;
    pub const CGROUP: u32 = 8;
    /// Could not be resolved (no such user, executable or cgroup): matches nothing.
    pub const NEVER: u32 = 16;
    /// `untampered: true`: the process's loader was not steered and it was not traced (see
    /// [`crate::tamper`]).
    pub const UNTAMPERED: u32 = 32;
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

/// `SLOT_META[slot]`: the policy-wide settings of one slot. Written before the slot is activated
/// through `ACTIVE_SLOT`, never while it is active, so readers never see a torn value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    pub generation: u32,
    pub mode: u8,
    /// Verdict for traffic no rule allows, before the mode is applied (see [`verdict`]).
    pub default_verdict: u8,
    /// Verdict for a DNS query of a name no rule covers, before the mode is applied.
    pub unlisted_verdict: u8,
    /// 1: answers are trusted only from the addresses in `RESOLVERS` for this slot.
    pub resolvers_only: u8,
    /// Seconds an address learnt from an answer stays allowed after its TTL ran out.
    pub dns_grace_s: u32,
    pub _pad: u32,
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
    /// Stable id of the rule's vendor for the agent's lifetime (0: not a vendor's rule); the
    /// key of [`BlockKey`].
    pub vendor: u16,
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

/// Value of an `EXE_SET` entry whose file's inode generation could not be read (a filesystem
/// without `FS_IOC_GETVERSION`): any generation matches. Otherwise the value is the generation.
pub const GEN_ANY: u64 = u64::MAX;

/// LPM trie key data for IPv4: the address in network order.
pub type AddrV4 = [u8; 4];
/// LPM trie key data for IPv6: the address in network order.
pub type AddrV6 = [u8; 16];

/// Domain pattern ids are stable for the agent's lifetime (a reload keeps the id of a pattern it
/// keeps), so addresses learnt under an id survive reloads; each slot maps ids to its rules.
pub const MAX_DOMAIN_IDS: u32 = 1 << 14;
/// Entries per slot in the domain-pattern trie.
pub const MAX_DOMAINS: u32 = 1 << 14;
/// Learnt addresses per family. An LRU: when full, the least recently used entry (an expired
/// one, as long as there are) makes room; evictions are counted.
pub const MAX_LEARNT: u32 = 1 << 15;
/// Domain patterns one learnt address can carry at once (shared CDN addresses): when all are
/// live, the one that expires first is replaced, counted.
pub const LEARNT_SLOTS: usize = 8;
/// Trusted resolver addresses, both slots together.
pub const MAX_RESOLVERS: u32 = 256;
/// NAT64 prefixes a policy may list (`nat64Prefixes`), per slot.
pub const MAX_NAT64_PREFIXES: u32 = 64;
/// The NAT64 well-known prefix `64:ff9b::/96` (RFC 6052), its 12 bytes: always decided as IPv4.
pub const NAT64_WELL_KNOWN: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
/// Value of a `NAT64_PREFIXES` entry: all ones, the mask the hooks select IPv4 bytes with.
pub const NAT64_LISTED: u32 = u32::MAX;
/// A TTL above this (one day) is taken as this: an answer cannot allow an address for longer.
pub const MAX_TTL_S: u32 = 86_400;

/// Value of a domain-pattern trie entry. The key is the name's labels in reverse order, each as
/// a length byte and its bytes: an exact name ends with a 0 byte, a wildcard `*.S` is the key of
/// `S` without it, so one longest-prefix lookup with a query's key (which ends with 0) finds the
/// exact entry or the nearest wildcard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainValue {
    /// Bytes of this entry's key.
    pub key_len: u32,
    /// [`domain_kind`].
    pub kind: u32,
    /// Id of the entry's pattern: the exact name, or `*.S` for names strictly below S.
    pub id: u32,
    /// Wildcard entries only: the id that applies to the name S itself (the nearest enclosing
    /// wildcard's), 0 if none.
    pub at_id: u32,
}

pub mod domain_kind {
    pub const EXACT: u32 = 1;
    pub const WILDCARD: u32 = 2;
}

/// Key of `RESOLVERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResolverKey {
    pub slot: u32,
    /// `AF_INET` or `AF_INET6`; IPv4 uses the first 4 bytes of `addr`.
    pub family: u32,
    pub addr: [u8; 16],
}

/// Key of `NAT64_PREFIXES`: a /96 NAT64 prefix the policy of `slot` lists, its top 12 bytes
/// (only /96 prefixes: RFC 6052's shorter ones split the IPv4 address around a zero octet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat64Key {
    pub slot: u32,
    pub prefix: [u8; 12],
}

/// An outstanding query: who asked, whom, for what, and the verdict of the lookup. Recorded on
/// egress, in the asking process's context, so the answer (parsed in softirq context) can name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub exe_ino: u64,
    pub start_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe_dev: u32,
    /// Domain id the query name maps to in the slot in force then, 0 if unlisted.
    pub domain_id: u32,
    pub generation: u32,
    /// Bytes of `name` (wire form, lowercase, with its final 0).
    pub name_len: u32,
    pub server: [u8; 16],
    pub server_port: u16,
    pub txid: u16,
    pub qtype: u16,
    pub family: u8,
    pub verdict: u8,
    pub proto: u8,
    /// 1 while the query is outstanding.
    pub used: u8,
    pub _pad: [u8; 6],
    pub comm: [u8; 16],
    pub name: [u8; dns::NAME_BUF],
}

/// Queries one socket may have outstanding at once (glibc sends A and AAAA together; a retry
/// reuses its slot). A further one replaces the oldest of that socket.
pub const PENDING_PER_SOCKET: usize = 4;

/// Per-socket storage of outstanding queries (`SK_PENDING`, a socket-local storage map): a
/// socket's queries can only be pushed out by the same socket's, never by another process's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockPending {
    pub q: [Pending; PENDING_PER_SOCKET],
    /// Slot the next query takes when none is free.
    pub next: u32,
    pub _pad: u32,
}

/// One domain pattern carried by a learnt address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearntSlot {
    pub domain_id: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` after which this slot no longer allows anything (TTL + grace).
    pub expires_ns: u64,
}

/// Key of `LEARNT_V4`: an address in one network namespace. An answer received in a namespace
/// allows its addresses in that namespace only: a process that makes its own user and network
/// namespace (where it may bind port 53 and answer itself) cannot teach the host anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearntKeyV4 {
    /// `bpf_get_netns_cookie` of the socket's namespace.
    pub netns: u64,
    pub addr: [u8; 4],
    pub _pad: u32,
}

/// Key of `LEARNT_V6` (see [`LearntKeyV4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearntKeyV6 {
    pub netns: u64,
    pub addr: [u8; 16],
}

/// Value of `LEARNT_V4`/`LEARNT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    pub slots: [LearntSlot; LEARNT_SLOTS],
}

/// Indexes of `DNS_COUNTERS`.
pub mod dns_counter {
    /// A new address could not be learnt (the map refused the insertion).
    pub const LEARN_FULL: u32 = 0;
    /// A learnt address had all its pattern slots live; the soonest to expire was replaced.
    pub const SLOT_EVICTED: u32 = 1;
    /// Answers not trusted (no matching outstanding query, wrong source, bad checksum, question
    /// mismatch, malformed).
    pub const ANSWER_REJECTED: u32 = 2;
    /// Answers whose parse stopped before every record was read (limits).
    pub const PARSE_LIMIT: u32 = 3;
    /// Queries refused (`unlisted: deny` in enforce mode, spoofed answers from raw sockets).
    pub const QUERY_DENIED: u32 = 4;
    /// Addresses learnt (new or renewed).
    pub const LEARNT: u32 = 5;
    /// Entries created in the learnt tables (the agent derives evictions from it).
    pub const LEARNT_NEW: u32 = 6;
    /// Egress packets refused because DNS programs nested deeper on one CPU than they have
    /// state for (never expected).
    pub const NEST_OVERFLOW: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Phases of a [`DnsEvent`].
pub mod dns_phase {
    /// A query that was refused or reported when it was sent (unlisted name).
    pub const QUERY: u8 = 1;
    /// An answer matched to its query and parsed.
    pub const ANSWER: u8 = 2;
    /// An answer that was not trusted; nothing learnt.
    pub const REJECTED: u8 = 3;
    /// A DNS answer sent from a raw socket in the watched cgroup (a forgery attempt).
    pub const SPOOF: u8 = 4;
}

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
    unsafe impl aya::Pod for super::DnsEvent {}
    unsafe impl aya::Pod for super::DomainValue {}
    unsafe impl aya::Pod for super::ResolverKey {}
    unsafe impl aya::Pod for super::Nat64Key {}
    unsafe impl aya::Pod for super::Pending {}
    unsafe impl aya::Pod for super::Learnt {}
    unsafe impl aya::Pod for super::LearntSlot {}
    unsafe impl aya::Pod for super::LearntKeyV4 {}
    unsafe impl aya::Pod for super::LearntKeyV6 {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEnd {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::KillState {}
    unsafe impl aya::Pod for super::IdName {}
    unsafe impl aya::Pod for super::ExecId {}
}

// The layout is an ABI: fail the build of both sides if it drifts.
const _: () = assert!(core::mem::size_of::<Event>() == 120);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 40 + EXEC_FILENAME_LEN);
const _: () = assert!(core::mem::size_of::<Config>() == 96);
const _: () = assert!(core::mem::size_of::<ExecId>() == 24);
const _: () = assert!(core::mem::size_of::<SlotMeta>() == 16);
const _: () = assert!(core::mem::size_of::<DomainValue>() == 16);
const _: () = assert!(core::mem::size_of::<ResolverKey>() == 24);
const _: () = assert!(core::mem::size_of::<Nat64Key>() == 16);
const _: () = assert!(core::mem::size_of::<Pending>() == 112 + dns::NAME_BUF);
const _: () = assert!(core::mem::size_of::<Learnt>() == 16 * LEARNT_SLOTS);
const _: () = assert!(core::mem::size_of::<DnsEvent>() == 152 + 16 * DNS_EVENT_ADDRS + dns::NAME_BUF + DNS_EVENT_MSG);
const _: () = assert!(core::mem::size_of::<RuleEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Selector>() == 40);
const _: () = assert!(core::mem::size_of::<ExeKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 32);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 48);
const _: () = assert!(core::mem::size_of::<FlowEnd>() == 24);
const _: () = assert!(core::mem::size_of::<BlockKey>() == 16);
