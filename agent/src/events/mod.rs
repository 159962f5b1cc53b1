//! Kernel records, from the ring buffer to what the agent writes: decoding (here), who made them
//! (`enrich`), the connect record (`connect`), flows (`flows`), the per-key rate limit
//! (`ratelimit`) and per-pod counts (`pods`).

pub mod connect;
pub mod enrich;
pub mod flows;
pub mod flows_kept;
pub mod pods;
pub mod ratelimit;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{hook, record, verdict, DnsEvent, Event, ExecEvent, FlowEnd};

/// One ring-buffer record.
pub enum Record {
    Connect(Event),
    Exec(Box<ExecEvent>),
    Dns(Box<DnsEvent>),
    FlowEnd(FlowEnd),
}

/// Copies a record out of the ring buffer; `None` for an unknown kind or a short record (an ABI
/// mismatch between the embedded object and this binary, which cannot happen in one build).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        record::CONNECT => read::<Event>(bytes).map(Record::Connect),
        record::EXEC => read::<ExecEvent>(bytes).map(|e| Record::Exec(Box::new(e))),
        record::DNS => read::<DnsEvent>(bytes).map(|e| Record::Dns(Box::new(e))),
        record::FLOW_END => read::<FlowEnd>(bytes).map(Record::FlowEnd),
        _ => None,
    }
}

fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is repr(C) plain data (Pod) and the length was checked; read_unaligned does not
    // rely on the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A NUL-terminated byte array as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn dst(ev: &Event) -> IpAddr {
    addr(ev.family, &ev.daddr)
}

/// An address as the kernel records carry it: `AF_INET` (2) in the first 4 bytes, else IPv6.
pub fn addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == 2 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

pub fn proto(ev: &Event) -> &'static str {
    match ev.proto {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        // Only sockets refused at creation carry these (the connect hooks report UDP-Lite as udp).
        136 => "udplite",
        132 => "sctp",
        33 => "dccp",
        115 => "l2tp",
        _ => "other",
    }
}

pub fn verdict(ev: &Event) -> &'static str {
    match ev.verdict {
        verdict::ALLOW => "allow",
        verdict::DENY => "deny",
        _ => "alert",
    }
}

pub fn hook(ev: &Event) -> &'static str {
    match ev.hook {
        hook::CONNECT4 => "connect4",
        hook::CONNECT6 => "connect6",
        hook::SENDMSG4 => "sendmsg4",
        hook::EGRESS4 => "egress4",
        hook::EGRESS6 => "egress6",
        hook::SOCK_CREATE => "sock_create",
        _ => "sendmsg6",
    }
}

/// Offset that turns CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) into Unix time.
pub fn monotonic_to_realtime_offset() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

/// CLOCK_MONOTONIC now, in ns: the kernel's `bpf_ktime_get_ns` clock.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn rfc3339(unix_nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A connect record for tests: pid 0, TCP to 0.0.0.0:0 from `curl`, allowed.
#[cfg(test)]
pub fn test_event() -> Event {
    Event {
        kind: record::CONNECT,
        pid: 0,
        tid: 0,
        uid: 0,
        gid: 0,
        exe_dev: 0,
        rule_id: 0,
        generation: 0,
        ts_ns: 0,
        cookie: 0,
        cgroup_id: 0,
        exe_ino: 0,
        start_ns: 0,
        daddr: [0; 16],
        comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        dport: 0,
        family: 2,
        proto: 6,
        verdict: 0,
        hook: 1,
        flags: 0,
        flags2: 0,
        domain_id: 0,
        sock_type: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields() {
        let mut ev = test_event();
        ev.daddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        // SAFETY: test-only view of a repr(C) value as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), std::mem::size_of::<Event>()) };
        let Some(Record::Connect(back)) = decode(bytes) else { panic!("a connect record") };
        assert_eq!(back, ev);
        assert_eq!(dst(&back).to_string(), "192.0.2.1");
        assert_eq!(c_str(&back.comm), "curl");
        assert_eq!(proto(&back), "tcp");
        assert!(decode(&bytes[..50]).is_none());
        let mut unknown = bytes.to_vec();
        unknown[0] = 99;
        assert!(decode(&unknown).is_none());
        ev.family = 10;
        ev.daddr = "2001:db8::5".parse::<Ipv6Addr>().expect("v6").octets();
        assert_eq!(dst(&ev).to_string(), "2001:db8::5");
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
    }
}
