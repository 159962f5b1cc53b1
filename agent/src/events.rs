//! Decoding of the kernel's [`Event`] records and of their fields into text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{hook, verdict, Event};

/// Copies an event out of a ring-buffer record; `None` if the record is too short (an ABI
/// mismatch between the embedded object and this binary, which cannot happen in one build).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is repr(C) plain data and the length was checked; ring-buffer records are
    // 8-byte aligned but read_unaligned does not rely on it.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

pub fn dst(ev: &Event) -> IpAddr {
    if ev.family == 2 {
        IpAddr::V4(Ipv4Addr::new(ev.daddr[0], ev.daddr[1], ev.daddr[2], ev.daddr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(ev.daddr))
    }
}

pub fn proto(ev: &Event) -> &'static str {
    match ev.proto {
        6 => "tcp",
        17 => "udp",
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
        _ => "sendmsg6",
    }
}

/// The task's comm, up to its first NUL.
pub fn comm(ev: &Event) -> String {
    let end = ev.comm.iter().position(|&c| c == 0).unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end]).into_owned()
}

/// The kernel's internal dev_t (12-bit major << 20 | 20-bit minor) as userspace `st_dev`.
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xf_ffff)
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

pub fn rfc3339(unix_nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            ts_ns: 0, cookie: 0, cgroup_id: 0, exe_ino: 0, pid: 0, tid: 0, uid: 0, gid: 0, exe_dev: 0,
            rule_id: 0, generation: 0, _pad0: 0, daddr: [0; 16], comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            dport: 0, family: 2, proto: 6, verdict: 0, hook: 1, flags: 0, _pad1: 0,
        }
    }

    #[test]
    fn decodes_fields() {
        let mut ev = event();
        ev.daddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        // SAFETY: test-only view of a repr(C) value as bytes.
        let bytes = unsafe { std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), std::mem::size_of::<Event>()) };
        let back = decode(bytes).expect("full record");
        assert_eq!(back, ev);
        assert_eq!(dst(&back).to_string(), "192.0.2.1");
        assert_eq!(comm(&back), "curl");
        assert_eq!(proto(&back), "tcp");
        assert!(decode(&bytes[..50]).is_none());
        ev.family = 10;
        ev.daddr = "2001:db8::5".parse::<Ipv6Addr>().expect("v6").octets();
        assert_eq!(dst(&ev).to_string(), "2001:db8::5");
    }

    #[test]
    fn kernel_dev_encoding() {
        // 8:1 (sda1) in kernel form is 8 << 20 | 1.
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), libc::makedev(8, 1));
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
    }
}
