//! The flow table, the blocks of automated responses, and the stable vendor ids blocks are keyed
//! by, as the agent reads and writes them.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these fail rarely and are logged"
)]

use std::collections::HashMap as StdHashMap;

use agent_common::{flow_counter, maps, BlockKey, FlowKey, FlowStats};
use aya::maps::{HashMap, MapError, PerCpuArray};

use super::datapath::{map_err, Datapath, DatapathError};

/// Vendor ids, stable for the agent's lifetime like domain pattern ids: a reload that keeps a
/// vendor keeps its id, so its blocks stay in force without being rewritten.
#[derive(Debug, Clone, Default)]
pub struct VendorIds {
    by_name: StdHashMap<String, u16>,
    /// The highest id assigned (ids restored from a pinned datapath may have gaps).
    last: u16,
}

impl VendorIds {
    /// The id of `vendor`, assigning the next one to a new name; 0 (no vendor: cannot be
    /// blocked) once 65,535 vendors have been seen since the agent started.
    pub fn assign(&mut self, vendor: &str) -> u16 {
        if let Some(&id) = self.by_name.get(vendor) {
            return id;
        }
        let Some(id) = self.last.checked_add(1) else { return 0 };
        self.last = id;
        self.by_name.insert(vendor.to_owned(), id);
        id
    }

    /// Ids as an earlier agent assigned them (see `DomainIds::restore`).
    pub fn restore(pairs: impl IntoIterator<Item = (u16, String)>) -> Self {
        let mut ids = VendorIds::default();
        for (id, name) in pairs.into_iter().filter(|(id, _)| *id != 0) {
            ids.last = ids.last.max(id);
            ids.by_name.insert(name, id);
        }
        ids
    }

    /// Every (id, name) assigned so far.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &str)> {
        self.by_name.iter().map(|(n, &id)| (id, n.as_str()))
    }

    pub fn get(&self, vendor: &str) -> Option<u16> {
        self.by_name.get(vendor).copied()
    }
}

/// The flow path's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows not tracked because the table was full.
    pub full: u64,
    /// Attempts refused by a block.
    pub blocked: u64,
    /// Attempts refused by the kill switch.
    pub killed: u64,
    /// Packets of live flows the kill switch dropped.
    pub killed_packets: u64,
    /// Source-routed packets (dropped in enforce mode).
    pub source_routed: u64,
}

impl Datapath {
    /// The counters of a flow, if the kernel still has it.
    pub fn flow(&mut self, key: &FlowKey) -> Result<Option<FlowStats>, DatapathError> {
        let m: HashMap<_, FlowKey, FlowStats> = self.map_mut(maps::FLOWS)?;
        match m.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DatapathError::Map { map: maps::FLOWS, source }),
        }
    }

    /// Reads a flow's final counters and removes it.
    pub fn take_flow(&mut self, key: &FlowKey) -> Result<Option<FlowStats>, DatapathError> {
        let stats = self.flow(key)?;
        if stats.is_some() {
            let mut m: HashMap<_, FlowKey, FlowStats> = self.map_mut(maps::FLOWS)?;
            match m.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(DatapathError::Map { map: maps::FLOWS, source }),
            }
        }
        Ok(stats)
    }

    /// Every flow in the kernel's table (for the sweep that finds flows the agent never heard of).
    pub fn flows(&mut self) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
        let m: HashMap<_, FlowKey, FlowStats> = self.map_mut(maps::FLOWS)?;
        // Entries removed while iterating are skipped, not errors.
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    pub fn flow_counters(&mut self) -> Result<FlowCounters, DatapathError> {
        let counters: PerCpuArray<_, u64> = self.map_mut(maps::FLOW_COUNTERS)?;
        let sum = |i: u32| -> Result<u64, DatapathError> {
            Ok(counters.get(&i, 0).map_err(map_err(maps::FLOW_COUNTERS))?.iter().sum())
        };
        Ok(FlowCounters {
            full: sum(flow_counter::FULL)?,
            blocked: sum(flow_counter::BLOCKED)?,
            killed: sum(flow_counter::KILLED)?,
            killed_packets: sum(flow_counter::KILLED_PACKETS)?,
            source_routed: sum(flow_counter::SOURCE_ROUTED)?,
        })
    }

    pub fn vendor_id(&self, vendor: &str) -> Option<u16> {
        self.vendor_ids.get(vendor)
    }

    /// Refuses `key` until `until_ns` (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub fn set_block(&mut self, key: BlockKey, until_ns: u64) -> Result<(), DatapathError> {
        let mut m: HashMap<_, BlockKey, u64> = self.map_mut(maps::BLOCKS)?;
        m.insert(key, until_ns, 0).map_err(map_err(maps::BLOCKS))
    }

    /// When the block of `key` ends, if the kernel has it.
    pub fn block_until(&mut self, key: &BlockKey) -> Result<Option<u64>, DatapathError> {
        let m: HashMap<_, BlockKey, u64> = self.map_mut(maps::BLOCKS)?;
        match m.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DatapathError::Map { map: maps::BLOCKS, source }),
        }
    }

    pub fn remove_block(&mut self, key: &BlockKey) -> Result<(), DatapathError> {
        let mut m: HashMap<_, BlockKey, u64> = self.map_mut(maps::BLOCKS)?;
        match m.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DatapathError::Map { map: maps::BLOCKS, source }),
        }
    }
}
