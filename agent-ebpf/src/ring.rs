//! The event ring buffer: batched wakeups and the count of events it could not take.

use aya_ebpf::maps::PerCpuArray;

use crate::maps::{CONFIG, EVENTS, EVENTS_DROPPED};

// bpf_ringbuf_submit / bpf_ringbuf_query flags (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Waking the reader for every event costs more than the rest of the hook together (an irq_work
/// and a cross-CPU wakeup per connect). The reader is woken only once a batch has piled up, and
/// otherwise drains on its own short timer (`EVENTS_POLL_MS`), so connect() pays for neither.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let threshold = CONFIG.get(0).map_or(agent_common::EVENTS_WAKEUP_BYTES, |c| c.wakeup_bytes);
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub fn count_drop() {
    add(&EVENTS_DROPPED, 0);
}

/// Adds one to a per-CPU counter. Atomic even though the slot is per CPU: these programs run
/// preemptibly, so another program on the same CPU can interleave with a plain read-modify-write.
#[inline(always)]
pub fn add(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer is to a live, aligned u64 map value.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(counter, 1);
        }
    }
}
