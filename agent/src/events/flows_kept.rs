//! Open flows across an agent restart on a pinned datapath. The kernel's flow table outlives the
//! agent (its counters go on while no agent runs, and the kill switch goes on cutting the flows
//! it knows the vendor of); what the agent alone knew of each flow — the connect record that
//! started it, its rule and policy names, the name it was resolved from, what was reported so
//! far — is written to `STATE/open-flows.json` by an agent stopping without detaching
//! (`failMode: closed`), and read back by the agent that adopts the datapath. Its flows then
//! continue: their updates and their end are reported with the bytes since the last report.
//!
//! The file names the datapath it was written for (its pinned layout directory and the boot):
//! it is read, and removed, at every start, and applied only by an agent adopting that very
//! datapath, and to flows the kernel still has with the same start time.
//!
//! Without the file (a crash, no state directory) the flows the kernel still has are
//! *inherited*: left in the table, so enforcement and the kill switch go on, counted, and removed
//! when their socket is released; they are not reported one by one (who opened them is gone).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use agent_common::Event;
use serde::{Deserialize, Serialize};

use super::connect::RuleNames;

const KIND: &str = "egress-agent/open-flows";
const VERSION: u32 = 2;

/// What an agent stopping without detaching leaves for the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The datapath the flows are in (see [`datapath_id`]).
    pub datapath: String,
    pub flows: Vec<KeptFlow>,
}

/// Names one pinned datapath in one boot: its layout directory and the kernel's boot id.
pub fn datapath_id(layout_dir: &Path) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{}@{}", layout_dir.display(), boot.trim())
}

pub fn path(state: &Path) -> PathBuf {
    state.join("open-flows.json")
}

/// One open flow as an agent stopping left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFlow {
    /// The kernel's connect record, its bytes in hex (the layout of this agent's `Event`).
    pub record: String,
    pub reported_out: u64,
    pub reported_in: u64,
    /// The kernel's start time of the flow (`FlowStats::start_ns`).
    pub start_ns: u64,
    pub vendor: Option<String>,
    pub rule: String,
    pub policy: Option<String>,
    pub domain: Option<String>,
    pub domain_rule: Option<String>,
}

impl KeptFlow {
    pub fn new(
        ev: &Event,
        names: &RuleNames,
        reported: (u64, u64),
        start_ns: u64,
        domain: (Option<&str>, Option<&str>),
    ) -> Self {
        // SAFETY: Event is repr(C) plain data without uninitialised padding (its padding is
        // explicit fields); the slice covers exactly the value and lives no longer than it.
        let bytes = unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), size_of::<Event>()) };
        KeptFlow {
            record: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            reported_out: reported.0,
            reported_in: reported.1,
            start_ns,
            vendor: names.vendor.clone(),
            rule: names.rule.clone(),
            policy: names.policy.clone(),
            domain: domain.0.map(str::to_owned),
            domain_rule: domain.1.map(str::to_owned),
        }
    }

    /// The connect record, if it is one of this agent's layout.
    pub fn event(&self) -> Option<Event> {
        let h = self.record.as_bytes();
        if h.len() != 2 * size_of::<Event>() {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            h.chunks(2).map(|c| std::str::from_utf8(c).ok().and_then(|s| u8::from_str_radix(s, 16).ok())).collect();
        match super::decode(&bytes?)? {
            super::Record::Connect(ev) => Some(ev),
            _ => None,
        }
    }

    pub fn names(&self) -> Arc<RuleNames> {
        Arc::new(RuleNames { vendor: self.vendor.clone(), rule: self.rule.clone(), policy: self.policy.clone() })
    }
}

pub fn save(state: &Path, kept: &Kept) -> std::io::Result<()> {
    crate::statefile::save(&path(state), KIND, VERSION, kept)
}

/// Reads and removes the file: it describes one stop, and must not be applied twice.
pub fn take(state: &Path) -> Result<Option<Kept>, String> {
    let p = path(state);
    let got = match crate::statefile::load::<Kept>(&p, KIND, VERSION) {
        Ok(crate::statefile::Loaded::Absent) => return Ok(None),
        Ok(crate::statefile::Loaded::Read(v)) => Ok(Some(v)),
        Ok(crate::statefile::Loaded::SetAside { reason, moved_to }) => {
            return Err(format!("{}: {reason}; moved to {}", p.display(), moved_to.display()))
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    };
    let _ = std::fs::remove_file(&p);
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_flow_gives_back_its_connect_record_and_names() {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.kind = agent_common::record::CONNECT;
        ev.pid = 4242;
        ev.cookie = 77;
        ev.dport = 443;
        let names = RuleNames { vendor: Some("stripe".into()), rule: "vendor/stripe".into(), policy: Some("p".into()) };
        let k = KeptFlow::new(&ev, &names, (10, 20), 99, (Some("api.stripe.com"), None));
        assert_eq!(k.event(), Some(ev));
        assert_eq!(*k.names(), names);
        let dir = std::env::temp_dir().join(format!("ea-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let kept = Kept { datapath: datapath_id(Path::new("/sys/fs/bpf/x/layout-1")), flows: vec![k.clone()] };
        assert!(kept.datapath.starts_with("/sys/fs/bpf/x/layout-1@") && kept.datapath.len() > 30, "{}", kept.datapath);
        save(&dir, &kept).expect("save");
        assert_eq!(take(&dir).expect("read"), Some(kept));
        assert_eq!(take(&dir).expect("gone"), None, "applied once");
        let short = KeptFlow { record: "00ff".into(), ..k };
        assert_eq!(short.event(), None, "another layout");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
