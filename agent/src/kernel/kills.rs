//! The kill switch's kernel tables as the agent writes them (see agent-ebpf `kill`).
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these fail rarely and are logged"
)]

use std::collections::HashMap as StdHashMap;

use agent_common::{maps, KillState};
use aya::maps::{Array, HashMap, MapError};

use super::datapath::{map_err, Datapath, DatapathError};

impl Datapath {
    /// Makes the kernel's kill tables exactly `vendors` (vendor id → until, `bpf_ktime_get_ns`)
    /// and `all_until` (0: none). Vendors are written before the state that makes the hooks look
    /// at them, and removed after it, so a kill is never half in force.
    pub fn set_kills(&mut self, vendors: &StdHashMap<u16, u64>, all_until: u64) -> Result<(), DatapathError> {
        let any_until = vendors.values().copied().chain([all_until]).max().unwrap_or(0);
        let stale: Vec<u32> = {
            let mut m: HashMap<_, u32, u64> = self.map_mut(maps::KILLS)?;
            for (&v, &until) in vendors {
                m.insert(u32::from(v), until, 0).map_err(map_err(maps::KILLS))?;
            }
            m.keys().filter_map(Result::ok).filter(|k| !vendors.contains_key(&(*k as u16))).collect()
        };
        {
            let mut s: Array<_, KillState> = self.map_mut(maps::KILL_STATE)?;
            s.set(0, KillState { all_until, any_until }, 0).map_err(map_err(maps::KILL_STATE))?;
        }
        let mut m: HashMap<_, u32, u64> = self.map_mut(maps::KILLS)?;
        for k in stale {
            match m.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(DatapathError::Map { map: maps::KILLS, source }),
            }
        }
        Ok(())
    }
}

impl Datapath {
    /// The kills in force in the kernel (an adopted datapath's): `block --all`'s end, and each
    /// killed vendor's name (by the ids adopted with the datapath) and end, `bpf_ktime_get_ns`.
    pub fn kernel_kills(&mut self) -> Result<(u64, Vec<(String, u64)>), DatapathError> {
        let all_until = {
            let s: Array<_, KillState> = self.map_mut(maps::KILL_STATE)?;
            s.get(&0, 0).map_err(map_err(maps::KILL_STATE))?.all_until
        };
        let ids: Vec<(u32, u64)> = {
            let m: HashMap<_, u32, u64> = self.map_mut(maps::KILLS)?;
            m.iter().filter_map(Result::ok).collect()
        };
        let names: StdHashMap<u16, String> = self.vendor_ids.iter().map(|(id, n)| (id, n.to_owned())).collect();
        let vendors = ids
            .into_iter()
            .filter_map(|(id, until)| u16::try_from(id).ok().and_then(|id| names.get(&id)).map(|n| (n.clone(), until)))
            .collect();
        Ok((all_until, vendors))
    }
}
