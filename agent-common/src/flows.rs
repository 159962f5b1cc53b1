//! Flows and blocks: the flow table the connect hooks fill and the cgroup_skb programs count
//! into, the end-of-socket record, and the keys of automated responses.

/// Flows the kernel tracks at once (both families). When the table is nearly full the agent
/// reports and evicts the oldest; an insertion into a full table is counted and the attempt is
/// reported with [`crate::event_flags::NO_FLOW`].
pub const MAX_FLOWS: u32 = 1 << 17;

/// Key of `FLOWS`: one socket's traffic with one peer. A connected socket has one flow; an
/// unconnected UDP socket has one per destination address and port it sends to, so a client
/// that sends many datagrams to one place is one flow, not one event per datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub cookie: u64,
    /// Peer address in network order; IPv4 (also an IPv4-mapped destination) in the first 4 bytes.
    pub addr: [u8; 16],
    /// Peer port, host order (0 for ICMP).
    pub port: u16,
    /// `AF_INET` or `AF_INET6`, as on the wire.
    pub family: u8,
    /// IPPROTO, UDP-Lite counted as UDP (as the connect hooks report it).
    pub proto: u8,
    pub _pad: u32,
}

/// Value of `FLOWS`: counted by the cgroup_skb programs, payload bytes (the transport's, so a
/// transfer counts what the application sent), updated atomically. Packets are those that
/// carry data: TCP segments without payload (ACKs, handshake, FIN) are not counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns` when the connect hook created the flow.
    pub start_ns: u64,
    /// The verdict the flow's datagrams were last reported with (see the connect hooks): a
    /// datagram of a live flow with the same verdict is only counted, not reported again.
    pub verdict: u32,
    /// Vendor id of the rule that allowed the flow (0: none), so the kill switch can cut the
    /// flow's packets (see [`KillState`]).
    pub vendor: u16,
    /// 1 when an infrastructure `allow` rule (no vendor) let the flow through: `block --all`
    /// leaves it alone.
    pub infra: u8,
    pub _pad: u8,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
}

/// A socket that had flows was released (closed, or its process exited). Its flows stay in
/// `FLOWS` until the agent has read and removed them, so a flow that starts and ends between two
/// reads is still reported, with its last bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEnd {
    /// [`crate::record::FLOW_END`].
    pub kind: u32,
    pub _pad: u32,
    pub cookie: u64,
    pub ts_ns: u64,
}

/// Key of `BLOCKS`: a vendor refused to one executable (automated response) until the value, a
/// `bpf_ktime_get_ns` time. The kernel checks the time itself, so a block never outlives its
/// cool-down even if the agent is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// [`crate::RuleEntry::vendor`].
    pub vendor: u32,
    pub exe_dev: u32,
    pub exe_ino: u64,
}

/// Blocks in force at once.
pub const MAX_BLOCKS: u32 = 1 << 12;

/// Entry 0 of `KILL_STATE`: the operator's kill switch (`egress-agent block`). Times are
/// `bpf_ktime_get_ns` values; the kernel compares them itself, so a kill ends on time even if the
/// agent is busy or late to tidy up, and `u64::MAX` stands for "until lifted".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillState {
    /// Until when every attempt is refused except those an infrastructure `allow` rule (a rule of
    /// no vendor) lets through; 0: not in force.
    pub all_until: u64,
    /// The latest end of any kill (of a vendor or of all), 0 when there is none: the hooks look in
    /// `KILLS` only while this is in the future, so the switch costs nothing when unused.
    pub any_until: u64,
}

/// Vendors killed at once (`KILLS`: vendor id → until).
pub const MAX_KILLS: u32 = 1 << 10;

/// Indexes of `FLOW_COUNTERS`.
pub mod flow_counter {
    /// A flow could not be tracked: the table was full.
    pub const FULL: u32 = 0;
    /// Attempts refused by a block.
    pub const BLOCKED: u32 = 1;
    /// Attempts refused by the kill switch.
    pub const KILLED: u32 = 2;
    /// Packets of live flows dropped by the kill switch.
    pub const KILLED_PACKETS: u32 = 3;
    /// Source-routed packets seen (dropped in enforce mode); one event per socket.
    pub const SOURCE_ROUTED: u32 = 4;
    pub const COUNT: u32 = 5;
}
