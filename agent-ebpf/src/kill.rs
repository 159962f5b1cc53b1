//! The operator's kill switch (`egress-agent block`), as the hooks read it: a vendor's
//! destinations refused to every process, or all egress but the infrastructure `allow` rules,
//! whatever the policy and its mode say. The kernel compares the end times itself, so a kill ends
//! on time even while the agent is down.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::maps::{KILLS, KILL_STATE};

/// The switch at one moment.
#[derive(Clone, Copy)]
pub struct Now {
    pub now: u64,
    /// Some kill may be in force: `KILLS` must be consulted.
    pub any: bool,
    /// Everything but the infrastructure `allow` rules is refused.
    pub all: bool,
}

/// Reads the switch. One array lookup when unused; the clock only when something is in force.
#[inline(always)]
pub fn now() -> Now {
    let Some(s) = KILL_STATE.get(0) else { return Now { now: 0, any: false, all: false } };
    if s.any_until == 0 {
        return Now { now: 0, any: false, all: false };
    }
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    Now { now, any: s.any_until > now, all: s.all_until > now }
}

/// Whether vendor `vendor` is killed at `now`.
#[inline(always)]
pub fn vendor(vendor: u16, now: u64) -> bool {
    if vendor == 0 {
        return false;
    }
    // SAFETY: a read of a live map value.
    match unsafe { KILLS.get(&u32::from(vendor)) } {
        Some(&until) => until > now,
        None => false,
    }
}
