//! Map names, as they appear in the eBPF object.

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
/// Indexed by slot: the domain-pattern trie of that slot (see [`crate::DomainValue`]).
pub const DOMAINS: [&str; 2] = ["DOMAINS_0", "DOMAINS_1"];
/// `[slot * MAX_DOMAIN_IDS + id]`: the rule entries a domain id stands for in that slot.
pub const DOMAIN_RULES: &str = "DOMAIN_RULES";
/// Trusted resolver addresses per slot (`spec.dns.resolvers`).
pub const RESOLVERS: &str = "RESOLVERS";
/// NAT64 prefixes the policy lists, per slot (`nat64Prefixes`; see [`crate::Nat64Key`]).
pub const NAT64_PREFIXES: &str = "NAT64_PREFIXES";
/// Outstanding DNS queries, in each socket's local storage.
pub const SK_PENDING: &str = "SK_PENDING";
/// Per-CPU parser state (index 0: egress, 1: ingress).
pub const DNS_SCRATCH: &str = "DNS_SCRATCH";
/// Addresses learnt from DNS answers, by address.
pub const LEARNT_V4: &str = "LEARNT_V4";
pub const LEARNT_V6: &str = "LEARNT_V6";
/// Per-CPU counters of the DNS path, indexed by [`crate::dns_counter`].
pub const DNS_COUNTERS: &str = "DNS_COUNTERS";
/// Bytes and packets of every tracked flow, by [`crate::FlowKey`].
pub const FLOWS: &str = "FLOWS";
/// Marks, in each socket's local storage, a socket that has flows (so its release is reported).
pub const SK_FLOWS: &str = "SK_FLOWS";
/// (vendor, executable) pairs refused until a time: automated responses (see [`crate::BlockKey`]).
pub const BLOCKS: &str = "BLOCKS";
/// Per-CPU counters of the flow path, indexed by [`crate::flow_counter`].
pub const FLOW_COUNTERS: &str = "FLOW_COUNTERS";
/// The kill switch: one [`crate::KillState`].
pub const KILL_STATE: &str = "KILL_STATE";
/// Vendors killed: vendor id → until (`bpf_ktime_get_ns`, `u64::MAX`: until lifted).
pub const KILLS: &str = "KILLS";
/// Domain pattern id → pattern ([`crate::IdName`]), for an agent adopting the datapath.
pub const DOMAIN_NAMES: &str = "DOMAIN_NAMES";
/// Vendor id → vendor name ([`crate::IdName`]), likewise.
pub const VENDOR_NAMES: &str = "VENDOR_NAMES";
/// Sockets whose source-routed packets were reported (one event per socket).
pub const SROUTE_SEEN: &str = "SROUTE_SEEN";
/// The file each process executed (see `ExecId`).
pub const EXEC_IDS: &str = "EXEC_IDS";
/// Who connected each MPTCP connection (agent-ebpf `mptcp`), for the subflows the kernel opens.
pub const MPTCP_OWNERS: &str = "MPTCP_OWNERS";
/// Who created each ICMP ping and UDP-Lite socket (agent-ebpf `dgram`), in the socket's local
/// storage: their datagrams are decided on the way out, where no task identity is at hand.
pub const SK_OWNERS: &str = "SK_OWNERS";
/// Program array: entry 0 is `skb_dgram`, which `skb_egress` tail-calls for ping and UDP-Lite
/// sockets (pinned: its entries would be cleared once no agent held it).
pub const DGRAM_PROG: &str = "DGRAM_PROG";

/// The maps kept in bpffs with the datapath (all that hold state; the programs' scratch
/// space is not).
pub const PINNED: &[&str] = &[
    EVENTS,
    EVENTS_DROPPED,
    CONFIG,
    ACTIVE_SLOT,
    SLOT_META,
    RULES,
    SELECTORS,
    EXE_SET,
    WATCHED_CGROUP,
    DESTS_V4[0],
    DESTS_V4[1],
    DESTS_V6[0],
    DESTS_V6[1],
    DOMAINS[0],
    DOMAINS[1],
    DOMAIN_RULES,
    RESOLVERS,
    SK_PENDING,
    LEARNT_V4,
    LEARNT_V6,
    DNS_COUNTERS,
    FLOWS,
    SK_FLOWS,
    BLOCKS,
    FLOW_COUNTERS,
    KILL_STATE,
    KILLS,
    DOMAIN_NAMES,
    VENDOR_NAMES,
    EXEC_IDS,
    MPTCP_OWNERS,
    NAT64_PREFIXES,
    SK_OWNERS,
    DGRAM_PROG,
];
