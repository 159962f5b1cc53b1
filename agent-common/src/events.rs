//! The records the kernel programs write into the ring buffer for the agent: what kind each
//! is ([`record`]), the connect record ([`Event`]) with the hook and the flag bits it carries,
//! and the DNS record ([`DnsEvent`]). Additive only: fields are never renamed or removed.

use crate::dns;

/// First field of every ring-buffer record: which struct follows.
pub mod record {
    /// An [`super::Event`]: one outbound attempt.
    pub const CONNECT: u32 = 1;
    /// An [`crate::ExecEvent`]: a process in the watched cgroup executed a program.
    pub const EXEC: u32 = 2;
    /// A [`super::DnsEvent`]: a DNS query refused or reported, an answer parsed, or an answer
    /// that was not trusted.
    pub const DNS: u32 = 3;
    /// A [`crate::FlowEnd`]: a socket with tracked flows was released.
    pub const FLOW_END: u32 = 4;
}

/// Hook that produced an event.
pub mod hook {
    pub const CONNECT4: u8 = 1;
    pub const CONNECT6: u8 = 2;
    pub const SENDMSG4: u8 = 3;
    pub const SENDMSG6: u8 = 4;
    /// A packet on its way out (cgroup_skb egress), decided there: a source-routed packet, or a
    /// datagram no sock_addr hook sees (an ICMP ping socket's, a connected UDP-Lite socket's).
    pub const EGRESS4: u8 = 5;
    pub const EGRESS6: u8 = 6;
    /// A socket being created (cgroup/sock_create): one whose sends no hook decides.
    pub const SOCK_CREATE: u8 = 7;
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
    /// The destination matched as an address learnt from a DNS answer (`domain_id` says which
    /// domain pattern).
    pub const LEARNT: u8 = 8;
    /// A rule allowed it, but an automated response (see [`crate::BlockKey`]) refused it.
    pub const BLOCKED: u8 = 16;
    /// Allowed, but not tracked as a flow: the flow table was full (counted).
    pub const NO_FLOW: u8 = 32;
    /// Refused by the operator's kill switch (`egress-agent block`), whatever the policy and its
    /// mode said; `rule_id` names the killed vendor's rule, or the rule that would have decided.
    pub const KILLED: u8 = 64;
    /// The destination was an IPv6 address under a NAT64 prefix (`64:ff9b::/96`, or one of the
    /// slot's [`crate::Nat64Key`]s) and was decided as the IPv4 address it embeds, its last four
    /// bytes. `family` and `daddr` stay the IPv6 address on the wire.
    pub const NAT64: u8 = 128;
}

/// Bits of [`Event::flags2`].
pub mod event_flags2 {
    /// A packet carrying a source route (an IPv6 routing header, an IPv4 loose or strict
    /// source-route option): it goes to the hop in `daddr` first, whatever the socket was
    /// connected to. Dropped in enforce mode (`verdict` deny), reported in monitor mode (alert).
    pub const SOURCE_ROUTED: u8 = 1;
    /// A socket of a type and protocol whose sends no hook decides (UDP-Lite, ICMP ping
    /// sockets, SCTP …): refused at creation in enforce mode, reported in monitor mode.
    /// `proto` is its protocol, `sock_type` its type; no destination.
    pub const UNDECIDABLE_SOCKET: u8 = 2;
    /// The process's executable is not the file it executed: `prctl(PR_SET_MM_MAP)` (or
    /// `PR_SET_MM_EXE_FILE`) pointed it at another file since. `exe_dev`/`exe_ino` are the file
    /// executed; `exe` selectors match nothing for it.
    pub const EXE_REPLACED: u8 = 4;
    /// The process's loader was steered by its environment at exec ([`crate::tamper::LOADER_ENV`]).
    pub const LOADER_ENV: u8 = 8;
    /// The process was traced since its exec ([`crate::tamper::TRACED`]).
    pub const TRACED: u8 = 16;
    /// An MPTCP subflow a kernel worker opened: the identity is the connection owner's.
    pub const MPTCP_SUBFLOW: u8 = 32;
    /// The agent did not see the process's exec ([`crate::tamper::UNRECORDED`]).
    pub const EXEC_UNSEEN: u8 = 64;
}

/// One outbound attempt, as seen by a cgroup hook. 120 bytes, 8-byte aligned.
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
    /// Rule that decided, or [`crate::RULE_DEFAULT`].
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
    /// More bits, [`event_flags2`].
    pub flags2: u8,
    /// The domain pattern id whose learnt address decided (with [`event_flags::LEARNT`]), else 0.
    pub domain_id: u32,
    /// The socket's type (`SOCK_DGRAM` …) with [`event_flags2::UNDECIDABLE_SOCKET`], else 0.
    pub sock_type: u32,
}

/// Bits of [`DnsEvent::flags`].
pub mod dns_flags {
    pub const NO_QUERY: u16 = 1;
    pub const WRONG_SOURCE: u16 = 2;
    pub const BAD_CHECKSUM: u16 = 4;
    pub const WRONG_QUESTION: u16 = 8;
    pub const MALFORMED: u16 = 16;
    /// The parse stopped at a limit; addresses after it were not learnt.
    pub const PARSE_LIMIT: u16 = 32;
    /// An address could not be learnt: the table was full.
    pub const LEARN_FULL: u16 = 64;
    /// A learnt address's pattern slots were full; one was replaced.
    pub const SLOT_EVICTED: u16 = 128;
    /// The message was longer than the copy in the event.
    pub const MSG_CUT: u16 = 256;
}

/// Addresses listed in one [`DnsEvent`] (more are learnt, and counted in `n_addrs`).
pub const DNS_EVENT_ADDRS: usize = 16;
/// Bytes of the DNS message copied into a [`DnsEvent`] for userspace to decode.
pub const DNS_EVENT_MSG: usize = 512;

/// A DNS query or answer seen by the DNS hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// [`record::DNS`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe_dev: u32,
    pub generation: u32,
    pub domain_id: u32,
    pub ts_ns: u64,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub exe_ino: u64,
    pub start_ns: u64,
    pub server: [u8; 16],
    pub comm: [u8; 16],
    pub qtype: u16,
    pub server_port: u16,
    pub family: u8,
    pub proto: u8,
    /// Verdict of the lookup (its name listed, or `dns.unlisted`).
    pub verdict: u8,
    /// [`crate::dns_phase`].
    pub phase: u8,
    pub rcode: u8,
    pub _pad: u8,
    /// [`dns_flags`].
    pub flags: u16,
    /// Addresses learnt from this answer (the first [`DNS_EVENT_ADDRS`] are in `addrs`).
    pub n_addrs: u32,
    /// Smallest TTL among the learnt addresses.
    pub ttl_min: u32,
    /// Length of the whole DNS message; `msg` holds the first [`DNS_EVENT_MSG`] bytes.
    pub msg_len: u32,
    pub name_len: u32,
    /// Family of each address in `addrs` (`AF_INET`/`AF_INET6`).
    pub addr_family: [u8; DNS_EVENT_ADDRS],
    pub addrs: [[u8; 16]; DNS_EVENT_ADDRS],
    pub name: [u8; dns::NAME_BUF],
    pub msg: [u8; DNS_EVENT_MSG],
    pub _pad2: u32,
}
