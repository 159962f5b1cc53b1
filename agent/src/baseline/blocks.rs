//! Automated blocks in force (responses to anomalies), and how they outlive a restart. The kernel
//! refuses by itself until a block's end (`BLOCKS` is pinned with the datapath); the agent keeps
//! what the block was for — vendor, process, anomaly — so that its `end` record is written when
//! it runs out. That is kept in `STATE/blocks.json`, written whenever a block starts or ends, and
//! read by the agent that adopts the datapath: a block found there and still in the kernel's
//! table with the same end is tracked again, and its end reported by the new agent.

use std::path::{Path, PathBuf};

use agent_common::BlockKey;
use serde::{Deserialize, Serialize};

use super::anomalies::AnomalyKind;

const KIND: &str = "egress-agent/blocks";
const VERSION: u32 = 1;

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveBlock {
    pub vendor_id: u32,
    pub exe_dev: u32,
    pub exe_ino: u64,
    /// CLOCK_MONOTONIC, as the kernel checks it (a reboot empties the kernel's table too).
    pub until_ns: u64,
    pub vendor: String,
    pub process: String,
    pub anomaly: AnomalyKind,
    pub seconds: u64,
}

impl ActiveBlock {
    pub fn key(&self) -> BlockKey {
        BlockKey { vendor: self.vendor_id, exe_dev: self.exe_dev, exe_ino: self.exe_ino }
    }
}

fn path(state: &Path) -> PathBuf {
    state.join("blocks.json")
}

pub fn save(state: &Path, blocks: &[ActiveBlock]) -> std::io::Result<()> {
    crate::statefile::save(&path(state), KIND, VERSION, &blocks)
}

/// The blocks an earlier agent kept, if any; a file that cannot be read is set aside and said.
pub fn load(state: &Path) -> Result<Vec<ActiveBlock>, String> {
    let p = path(state);
    match crate::statefile::load::<Vec<ActiveBlock>>(&p, KIND, VERSION) {
        Ok(crate::statefile::Loaded::Absent) => Ok(Vec::new()),
        Ok(crate::statefile::Loaded::Read(v)) => Ok(v),
        Ok(crate::statefile::Loaded::SetAside { reason, moved_to }) => {
            Err(format!("{}: {reason}; moved to {}", p.display(), moved_to.display()))
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Of the kept blocks, those the kernel still enforces with the same end.
pub fn still_in_force(
    kept: Vec<ActiveBlock>,
    mut kernel_until: impl FnMut(&BlockKey) -> Option<u64>,
) -> Vec<ActiveBlock> {
    kept.into_iter().filter(|b| kernel_until(&b.key()) == Some(b.until_ns)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ino: u64, until_ns: u64) -> ActiveBlock {
        ActiveBlock {
            vendor_id: 3,
            exe_dev: 7,
            exe_ino: ino,
            until_ns,
            vendor: "stripe".into(),
            process: "/usr/bin/curl".into(),
            anomaly: AnomalyKind::RateSpike,
            seconds: 600,
        }
    }

    #[test]
    fn kept_blocks_come_back_only_where_the_kernel_still_has_them() {
        let dir = std::env::temp_dir().join(format!("ea-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(load(&dir), Ok(Vec::new()));
        let kept = vec![block(1, 100), block(2, 200), block(3, 300)];
        save(&dir, &kept).expect("save");
        let read = load(&dir).expect("load");
        assert_eq!(read, kept);
        // Block 2 was lifted meanwhile, block 3 extended by another agent: only 1 resumes.
        let kernel = |k: &BlockKey| match k.exe_ino {
            1 => Some(100),
            3 => Some(999),
            _ => None,
        };
        assert_eq!(still_in_force(read, kernel), vec![block(1, 100)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
