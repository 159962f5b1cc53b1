//! Every map of the kernel programs. Names are the constants of `agent_common::maps`.

use agent_common::{
    dns::ParseState, AddrV4, AddrV6, BlockKey, Config, DestValue, DomainValue, ExeKey, FlowKey, FlowStats, KillState,
    Learnt, LearntKeyV4, LearntKeyV6, Pending, ResolverKey, RuleEntry, Selector, SlotMeta, SockPending,
    EVENTS_RING_BYTES, MAX_BLOCKS, MAX_DOMAINS, MAX_DOMAIN_IDS, MAX_EXE_KEYS, MAX_FLOWS, MAX_KILLS, MAX_LEARNT,
    MAX_PREFIXES, MAX_RESOLVERS, MAX_RULE_ENTRIES, MAX_SELECTORS,
};
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, CgroupArray, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Events that found the ring buffer full, per CPU (index 0).
#[map(name = "EVENTS_DROPPED")]
pub static EVENTS_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Which of the two policy slots is in force (0 or 1). The agent fills the other slot and then
/// flips this single word, so no attempt is ever decided by a half-written rule set.
#[map(name = "ACTIVE_SLOT")]
pub static ACTIVE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "SLOT_META")]
pub static SLOT_META: Array<SlotMeta> = Array::with_max_entries(2, 0);

/// Rule entries of both slots: slot `s` owns `[s * MAX_RULE_ENTRIES, (s + 1) * MAX_RULE_ENTRIES)`.
#[map(name = "RULES")]
pub static RULES: Array<RuleEntry> = Array::with_max_entries(2 * MAX_RULE_ENTRIES, 0);

/// Process selectors of both slots, laid out like `RULES`.
#[map(name = "SELECTORS")]
pub static SELECTORS: Array<Selector> = Array::with_max_entries(2 * MAX_SELECTORS, 0);

/// Executables (by device and inode) that satisfy a selector's `exe`: the value is the file's inode
/// generation, or `GEN_ANY`.
#[map(name = "EXE_SET")]
pub static EXE_SET: HashMap<ExeKey, u64> = HashMap::with_max_entries(MAX_EXE_KEYS, 0);

#[map(name = "DESTS_V4_0")]
pub static DESTS_V4_0: LpmTrie<AddrV4, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V4_1")]
pub static DESTS_V4_1: LpmTrie<AddrV4, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V6_0")]
pub static DESTS_V6_0: LpmTrie<AddrV6, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "DESTS_V6_1")]
pub static DESTS_V6_1: LpmTrie<AddrV6, DestValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "WATCHED_CGROUP")]
pub static WATCHED_CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

/// Domain-pattern tries of the two slots (key: reversed labels, see `DomainValue`).
#[map(name = "DOMAINS_0")]
pub static DOMAINS_0: LpmTrie<[u8; 256], DomainValue> = LpmTrie::with_max_entries(MAX_DOMAINS, 0);
#[map(name = "DOMAINS_1")]
pub static DOMAINS_1: LpmTrie<[u8; 256], DomainValue> = LpmTrie::with_max_entries(MAX_DOMAINS, 0);

/// `[slot * MAX_DOMAIN_IDS + id]`: the rule entries (in `RULES` of that slot) a domain id stands
/// for; count 0: no rule in that slot.
#[map(name = "DOMAIN_RULES")]
pub static DOMAIN_RULES: Array<DestValue> = Array::with_max_entries(2 * MAX_DOMAIN_IDS, 0);

/// NAT64 prefixes the policy of each slot lists (`NAT64_LISTED` for each).
#[map(name = "NAT64_PREFIXES")]
pub static NAT64_PREFIXES: HashMap<agent_common::Nat64Key, u32> =
    HashMap::with_max_entries(2 * agent_common::MAX_NAT64_PREFIXES, 0);

#[map(name = "RESOLVERS")]
pub static RESOLVERS: HashMap<ResolverKey, u8> = HashMap::with_max_entries(MAX_RESOLVERS, 0);

/// Outstanding queries in the socket that sent them (socket-local storage, freed with the
/// socket): a flood of queries from one process cannot push out another's.
#[btf_map]
pub static SK_PENDING: SkStorage<SockPending> = SkStorage::new();

/// Parser state per CPU: indexes 0-3 for egress by nesting level, 4 for ingress (softirq), so a
/// run that interrupts another never shares its state.
#[map(name = "DNS_SCRATCH")]
pub static DNS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(5, 0);

/// How many egress runs are in progress on this CPU (see `dns::egress`).
#[map(name = "DNS_NEST")]
pub static DNS_NEST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Addresses learnt from answers, per network namespace. LRU maps: the kernel recycles the least
/// recently used entries (expired ones first, since nothing uses them) atomically, so no
/// userspace sweep can race a renewal; evictions are counted (entries created minus present).
#[map(name = "LEARNT_V4")]
pub static LEARNT_V4: LruHashMap<LearntKeyV4, Learnt> = LruHashMap::with_max_entries(MAX_LEARNT, 0);
#[map(name = "LEARNT_V6")]
pub static LEARNT_V6: LruHashMap<LearntKeyV6, Learnt> = LruHashMap::with_max_entries(MAX_LEARNT, 0);

#[map(name = "DNS_COUNTERS")]
pub static DNS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(agent_common::dns_counter::COUNT, 0);

/// What one DNS parse keeps between `bpf_loop` steps, besides the shared parser state.
#[repr(C)]
pub struct Scratch {
    pub st: ParseState,
    /// Addresses learnt so far (the first `DNS_EVENT_ADDRS`), for the event.
    pub addrs: [[u8; 16]; agent_common::DNS_EVENT_ADDRS],
    pub addr_family: [u8; agent_common::DNS_EVENT_ADDRS],
    pub n_addrs: u32,
    pub ttl_min: u32,
    pub domain_id: u32,
    pub grace_s: u32,
    pub now_ns: u64,
    /// Network namespace of the socket the answer is for.
    pub netns: u64,
    /// Which of its socket's slots the answer being judged matched.
    pub pending_slot: u32,
    /// The policy slot in force when the answer arrived (its NAT64 prefixes apply).
    pub slot: u32,
    /// Learnt-table keys being looked up or inserted (kept off the stack).
    pub k4: agent_common::LearntKeyV4,
    pub k6: agent_common::LearntKeyV6,
    pub k64: agent_common::Nat64Key,

    /// `dns_flags` gathered while learning.
    pub flags: u16,
    pub _pad: [u8; 6],
    /// The outstanding query an answer matched (copied: the map entry is deleted), or the one
    /// being recorded on egress.
    pub pending: Pending,
    /// A new `LEARNT_*` value being inserted (kept off the stack).
    pub new_learnt: Learnt,
    /// Never written: the source of zeroes for `copy`.
    pub zero_addrs: [[u8; 16]; agent_common::DNS_EVENT_ADDRS],
    pub zero_slots: [agent_common::LearntSlot; agent_common::LEARNT_SLOTS],
    pub zero_name: [u8; agent_common::dns::NAME_SCRATCH],
}

/// The headers of the packet being parsed, per CPU and direction (see `dns::headers`).
#[map(name = "DNS_HEADERS")]
pub static DNS_HEADERS: PerCpuArray<crate::dns::L4> = PerCpuArray::with_max_entries(5, 0);

/// Tracked flows (see `flows`). A plain hash, not an LRU: the kernel must never drop a flow
/// silently; the agent reports and evicts the oldest when it fills up.
#[map(name = "FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(MAX_FLOWS, 0);

/// Marks sockets that have flows, so that only their release is reported.
#[btf_map]
pub static SK_FLOWS: SkStorage<u32> = SkStorage::new();

/// Automated responses: (vendor, executable) → `bpf_ktime_get_ns` until which it is refused.
#[map(name = "BLOCKS")]
pub static BLOCKS: HashMap<BlockKey, u64> = HashMap::with_max_entries(MAX_BLOCKS, 0);

/// Sockets (by cookie) whose source-routed packets were reported: one event per socket.
#[map(name = "SROUTE_SEEN")]
pub static SROUTE_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// The file each process executed, by tgid (see `identity`).
#[map(name = "EXEC_IDS")]
pub static EXEC_IDS: HashMap<u32, agent_common::ExecId> =
    HashMap::with_max_entries(agent_common::MAX_EXEC_IDS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// The process that connected each MPTCP connection, by its `mptcp_sock` address (see `mptcp`).
/// Removed when the socket is released; an LRU, so that a missed release costs nothing.
#[map(name = "MPTCP_OWNERS")]
pub static MPTCP_OWNERS: LruHashMap<u64, crate::mptcp::Owner> = LruHashMap::with_max_entries(1 << 14, 0);

/// Who created each ICMP ping and UDP-Lite socket, in the socket's storage (see `dgram`).
#[btf_map]
pub static SK_OWNERS: SkStorage<crate::mptcp::Owner> = SkStorage::new();

/// Entry 0: the `skb_dgram` program, which `skb_egress` hands the packets of ping and UDP-Lite
/// sockets to (a tail call). Pinned: a program array's entries are cleared once no descriptor or
/// pin holds it, and the datapath must go on deciding those packets while no agent runs.
#[map(name = "DGRAM_PROG")]
pub static DGRAM_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Sockets (by cookie, its low bit the mode) with no recorded creator whose packets were
/// reported: one event per socket.
#[map(name = "DGRAM_UNOWNED")]
pub static DGRAM_UNOWNED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Where an [`crate::mptcp::Owner`] is built (too large for the stack).
#[map(name = "MPTCP_SCRATCH")]
pub static MPTCP_SCRATCH: PerCpuArray<crate::mptcp::Owner> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "FLOW_COUNTERS")]
pub static FLOW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(agent_common::flow_counter::COUNT, 0);

/// The operator's kill switch (see `kill`).
#[map(name = "KILL_STATE")]
pub static KILL_STATE: Array<KillState> = Array::with_max_entries(1, 0);

/// Vendors killed: vendor id → `bpf_ktime_get_ns` until which every destination of theirs is refused.
#[map(name = "KILLS")]
pub static KILLS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_KILLS, 0);

/// Names of the ids the agent assigned (see `agent_common::IdName`), for an agent that adopts the
/// pinned datapath; never read here. Not preallocated: only assigned ids take memory.
#[map(name = "DOMAIN_NAMES")]
pub static DOMAIN_NAMES: HashMap<u32, agent_common::IdName> =
    HashMap::with_max_entries(agent_common::MAX_NAMES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
#[map(name = "VENDOR_NAMES")]
pub static VENDOR_NAMES: HashMap<u32, agent_common::IdName> =
    HashMap::with_max_entries(agent_common::MAX_NAMES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
