//! How full each kernel table is, for `status` and the metrics. The policy tables are counted
//! from the compiled policy in force (what the active slot holds); the hash maps the kernel fills
//! are counted by walking their keys (they are small), except the flow and learnt-address
//! tables, which the agent already counts as it goes.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these fail rarely and are logged"
)]

use agent_common::{
    maps, BlockKey, ExeKey, ResolverKey, MAX_BLOCKS, MAX_DOMAINS, MAX_DOMAIN_IDS, MAX_EXE_KEYS, MAX_KILLS, MAX_LEARNT,
    MAX_NAT64_PREFIXES, MAX_PREFIXES, MAX_RESOLVERS, MAX_RULE_ENTRIES, MAX_SELECTORS,
};
use aya::maps::HashMap;
use serde::Serialize;

use super::datapath::{Datapath, DatapathError};
use crate::policy::CompiledPolicy;

/// One table's fill.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableFill {
    pub table: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// What the agent counts itself.
pub struct Counted {
    pub flows: u64,
    pub flows_capacity: u64,
    /// Both learnt-address tables.
    pub learnt: u64,
}

impl Datapath {
    /// Entries of hash map `map`, whose keys are `K` and values `V`.
    fn count_keys<K: aya::Pod, V: aya::Pod>(&mut self, map: &'static str) -> Result<u64, DatapathError> {
        let m: HashMap<_, K, V> = self.map_mut(map)?;
        Ok(m.keys().filter_map(Result::ok).count() as u64)
    }

    /// Every table with its entries and capacity.
    pub fn table_fill(&mut self, policy: &CompiledPolicy, counted: &Counted) -> Result<Vec<TableFill>, DatapathError> {
        let t = &policy.tables;
        let fill = |table, entries: usize, capacity: u32| TableFill {
            table,
            entries: entries as u64,
            capacity: u64::from(capacity),
        };
        let mut out = vec![
            fill("rules", t.entries.len(), MAX_RULE_ENTRIES),
            fill("prefixes_v4", t.v4.len(), MAX_PREFIXES),
            fill("prefixes_v6", t.v6.len(), MAX_PREFIXES),
            fill("selectors", t.selectors.len(), MAX_SELECTORS),
            fill("domains", t.domains.len(), MAX_DOMAINS),
            fill("domain_ids", self.domain_ids().iter().count(), MAX_DOMAIN_IDS),
            fill("nat64_prefixes", t.nat64.len(), MAX_NAT64_PREFIXES),
        ];
        out.push(TableFill {
            table: "exe_set",
            entries: self.count_keys::<ExeKey, u64>(maps::EXE_SET)?,
            capacity: MAX_EXE_KEYS.into(),
        });
        out.push(TableFill {
            table: "resolvers",
            entries: self.count_keys::<ResolverKey, u8>(maps::RESOLVERS)?,
            capacity: MAX_RESOLVERS.into(),
        });
        out.push(TableFill { table: "learnt", entries: counted.learnt, capacity: 2 * u64::from(MAX_LEARNT) });
        out.push(TableFill { table: "flows", entries: counted.flows, capacity: counted.flows_capacity });
        out.push(TableFill {
            table: "blocks",
            entries: self.count_keys::<BlockKey, u64>(maps::BLOCKS)?,
            capacity: MAX_BLOCKS.into(),
        });
        out.push(TableFill {
            table: "kills",
            entries: self.count_keys::<u32, u64>(maps::KILLS)?,
            capacity: MAX_KILLS.into(),
        });
        Ok(out)
    }
}
