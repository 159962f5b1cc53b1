//! The kernel's DNS programs — `agent-ebpf/src/dns/` with `maps.rs` and `ring.rs`, the very files
//! the BPF object is built from, included by path — built for the host against the aya-ebpf
//! shim (`fuzz/shim`), so that a fuzz target runs `dns::egress` and `dns::ingress` on packets it
//! makes. Only `identity::current_proc` and `connect::active_slot` are stand-ins (below): the
//! caller's identity and the slot lookup are not parsing, and their modules reach far beyond DNS.
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    dead_code,
    reason = "ring.rs uses an atomic intrinsic; maps.rs declares maps only other programs use"
)]

#[path = "../../../agent-ebpf/src/dns/mod.rs"]
mod dns;
#[path = "../../../agent-ebpf/src/maps.rs"]
mod maps;
#[path = "../../../agent-ebpf/src/ring.rs"]
mod ring;

pub mod host;

// As in agent-ebpf/src/main.rs.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

mod connect {
    use agent_common::SlotMeta;

    use crate::maps::{ACTIVE_SLOT, SLOT_META};

    /// As `connect::active_slot` in the kernel.
    pub fn active_slot() -> Option<(u32, &'static SlotMeta)> {
        let slot = match ACTIVE_SLOT.get(0) {
            Some(&s) if s < 2 => s,
            _ => 0,
        };
        SLOT_META.get(slot).map(|m| (slot, m))
    }
}

mod mptcp {
    /// Stands for the kernel's `mptcp::Owner` in the map declarations (the DNS programs never
    /// touch those maps).
    #[derive(Clone, Copy)]
    pub struct Owner;
}

mod identity {
    /// The fields of the kernel's `identity::Proc` the DNS programs read.
    pub struct Proc {
        pub start_ns: u64,
        pub pid_tgid: u64,
        pub uid_gid: u64,
        pub comm: [u8; 16],
        pub exe_dev: u32,
        pub exe_ino: u64,
    }

    /// A fixed caller: pid 4000, uid 65534.
    pub fn current_proc() -> Proc {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        Proc {
            start_ns: 7,
            pid_tgid: (4000 << 32) | 4001,
            uid_gid: (65534 << 32) | 65534,
            comm,
            exe_dev: 8,
            exe_ino: 1234,
        }
    }
}
