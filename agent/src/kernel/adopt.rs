//! The datapath side of pinning (see `pin`): adopting the state a running datapath has, saving
//! the names of new ids with it, and attaching through pinned links, or swapping this agent's
//! programs into the links already there.
#![expect(
    clippy::result_large_err,
    reason = "DatapathError wraps aya's large errors (see datapath.rs); these happen at start-up"
)]

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use agent_common::{maps, BlockKey, IdName, Learnt, LearntKeyV4, LearntKeyV6, SlotMeta};
use aya::{
    maps::{Array, CgroupArray, HashMap, Map, MapData},
    programs::{links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSock, CgroupSockAddr, RawTracePoint},
};
use tracing::{info, warn};

use super::{
    datapath::{map_err, program, Datapath, DatapathError, HOOKS, SKB_HOOKS, SOCK_HOOKS, TRACEPOINTS},
    flows::VendorIds,
    pin::{self, Pins},
};
use crate::dns::{ids::DomainIds, name::DomainPattern};

impl Datapath {
    /// Reads what the running datapath uses: the slot in force (a new policy goes into the other
    /// one), its generation, and the names of the ids its tables hold.
    pub(super) fn adopt(&mut self) -> Result<(), DatapathError> {
        let slot = {
            let active: Array<_, u32> = self.map_mut(maps::ACTIVE_SLOT)?;
            active.get(&0, 0).map_err(map_err(maps::ACTIVE_SLOT))?
        };
        self.active_slot = if slot < 2 { slot } else { 0 };
        let active_slot = self.active_slot;
        let generation = {
            let meta: Array<_, SlotMeta> = self.map_mut(maps::SLOT_META)?;
            meta.get(&active_slot, 0).map_err(map_err(maps::SLOT_META))?.generation
        };
        self.adopted_generation = (generation > 0).then_some(generation);
        let mut domains = Vec::new();
        {
            let names: HashMap<_, u32, IdName> = self.map_mut(maps::DOMAIN_NAMES)?;
            for (id, name) in names.iter().filter_map(Result::ok) {
                match name.as_str().map(str::parse::<DomainPattern>) {
                    Some(Ok(p)) => domains.push((id, p)),
                    _ => warn!(id, "a pinned domain pattern name does not parse: its id stays unused"),
                }
            }
        }
        let mut vendors = Vec::new();
        {
            let names: HashMap<_, u32, IdName> = self.map_mut(maps::VENDOR_NAMES)?;
            for (id, name) in names.iter().filter_map(Result::ok) {
                if let (Ok(id), Some(n)) = (u16::try_from(id), name.as_str()) {
                    vendors.push((id, n.to_owned()));
                }
            }
        }
        let max_domain = domains.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let max_vendor = vendors.iter().map(|(id, _)| *id).max().unwrap_or(0);
        info!(
            slot = self.active_slot,
            generation,
            domain_ids = domains.len(),
            vendor_ids = vendors.len(),
            "adopting the pinned datapath: enforcement, learnt addresses, blocks and counters carry on"
        );
        self.domain_ids = DomainIds::restore(domains);
        self.vendor_ids = VendorIds::restore(vendors);
        self.names_saved = (max_domain, max_vendor);
        Ok(())
    }

    /// A new layout replaces `old` (another version's maps): carries over what keeps verdicts
    /// unchanged where the types did not change — the names of the ids (so what the kernel
    /// learnt keeps its meaning), the addresses learnt from DNS, and automated blocks. Called
    /// before the policy is installed, and again after the programs were swapped (answers the
    /// old programs learnt in between). Returns how many learnt addresses it copied.
    pub fn inherit(&mut self, old: &Path, names: bool) -> Result<usize, DatapathError> {
        if names && self.domain_ids.iter().next().is_none() {
            let mut domains = Vec::new();
            for (id, n) in read_old::<u32, IdName>(old, maps::DOMAIN_NAMES) {
                if let Some(Ok(p)) = n.as_str().map(str::parse::<DomainPattern>) {
                    domains.push((id, p));
                }
            }
            let vendors: Vec<(u16, String)> = read_old::<u32, IdName>(old, maps::VENDOR_NAMES)
                .into_iter()
                .filter_map(|(id, n)| Some((u16::try_from(id).ok()?, n.as_str()?.to_owned())))
                .collect();
            info!(
                domain_ids = domains.len(),
                vendor_ids = vendors.len(),
                "carrying the ids over from the replaced layout"
            );
            self.domain_ids = DomainIds::restore(domains);
            self.vendor_ids = VendorIds::restore(vendors);
            // Saved into the new maps with the first install.
            self.names_saved = (0, 0);
        }
        let mut copied = 0;
        copied += copy_old::<LearntKeyV4, Learnt>(self, old, maps::LEARNT_V4)?;
        copied += copy_old::<LearntKeyV6, Learnt>(self, old, maps::LEARNT_V6)?;
        copy_old::<BlockKey, u64>(self, old, maps::BLOCKS)?;
        Ok(copied)
    }

    /// The generation in force when this agent adopted the datapath.
    pub fn adopted_generation(&self) -> Option<u32> {
        self.adopted_generation
    }

    /// Saves the names of ids assigned since the last call (pinned datapath only).
    pub(super) fn save_names(&mut self) -> Result<(), DatapathError> {
        if !self.pinned {
            return Ok(());
        }
        let (saved_d, saved_v) = self.names_saved;
        let new_d: Vec<(u32, String)> =
            self.domain_ids.iter().filter(|(id, _)| *id > saved_d).map(|(id, p)| (id, p.to_string())).collect();
        let new_v: Vec<(u16, String)> =
            self.vendor_ids.iter().filter(|(id, _)| *id > saved_v).map(|(id, n)| (id, n.to_owned())).collect();
        {
            let mut names: HashMap<_, u32, IdName> = self.map_mut(maps::DOMAIN_NAMES)?;
            for (id, p) in &new_d {
                if let Some(n) = IdName::new(p) {
                    names.insert(id, n, 0).map_err(map_err(maps::DOMAIN_NAMES))?;
                }
            }
        }
        {
            let mut names: HashMap<_, u32, IdName> = self.map_mut(maps::VENDOR_NAMES)?;
            for (id, v) in &new_v {
                if let Some(n) = IdName::new(v) {
                    names.insert(u32::from(*id), n, 0).map_err(map_err(maps::VENDOR_NAMES))?;
                }
            }
        }
        let max_d = new_d.iter().map(|(id, _)| *id).max().unwrap_or(saved_d);
        let max_v = new_v.iter().map(|(id, _)| *id).max().unwrap_or(saved_v);
        self.names_saved = (max_d.max(saved_d), max_v.max(saved_v));
        Ok(())
    }

    /// Attaches every hook to `cgroup` through links pinned under `pins`: a link already pinned
    /// for this cgroup and program gets this agent's program (`BPF_LINK_UPDATE`, atomic), a
    /// missing one is created and pinned. Then earlier layouts' maps and links on other cgroups
    /// are removed.
    pub fn attach_pinned(&mut self, cgroup: &Path, pins: &mut Pins) -> Result<(), DatapathError> {
        let cg = cgroup.display().to_string();
        let cg_fd = File::open(cgroup).map_err(|source| DatapathError::Cgroup { cgroup: cg.clone(), source })?;
        {
            let mut watched: CgroupArray<_> = self.map_mut(maps::WATCHED_CGROUP)?;
            watched.set(0, cg_fd.as_raw_fd(), 0).map_err(map_err(maps::WATCHED_CGROUP))?;
        }
        let id = pin::cgroup_id(cgroup)?;
        let dir = pins.links_dir(id);
        std::fs::create_dir_all(&dir)
            .map_err(|source| DatapathError::Link { path: dir.display().to_string(), source })?;
        let mut updated = 0;
        // The tracepoints: their links cannot be updated; the new one is attached and pinned
        // beside the old, which is then unpinned (two readers of execs for a moment: harmless,
        // both record the same file).
        for tp in TRACEPOINTS {
            let path = dir.join(tp);
            // bpffs refuses names with a dot.
            let staged = dir.join(format!("{tp}_new"));
            let prog: &mut RawTracePoint = program(&mut self.ebpf, tp, tp)?;
            let attach_err = |source| DatapathError::Attach { program: tp, hook: tp, cgroup: cg.clone(), source };
            let link_id = prog.attach(tp).map_err(attach_err)?;
            let link: FdLink = prog.take_link(link_id).map_err(attach_err)?.into();
            let _ = std::fs::remove_file(&staged);
            pin_link(link, &staged)?;
            // rename(2) replaces the old pin atomically: no moment without an exec link pinned.
            std::fs::rename(&staged, &path)
                .map_err(|source| DatapathError::Link { path: path.display().to_string(), source })?;
            self.hold(&path)?;
        }
        let mut each = |dp: &mut Datapath,
                        name: &'static str,
                        hook: &'static str,
                        attach: &dyn Fn(&mut Datapath) -> Result<FdLink, DatapathError>|
         -> Result<(), DatapathError> {
            let path = dir.join(name);
            if path.exists() {
                let link = pin::obj_get(&path)
                    .map_err(|source| DatapathError::Link { path: path.display().to_string(), source })?;
                let prog_fd = dp
                    .ebpf
                    .program(name)
                    .ok_or(DatapathError::Program {
                        program: name,
                        hook,
                        source: aya::programs::ProgramError::NotLoaded,
                    })?
                    .fd()
                    .map_err(|source| DatapathError::Program { program: name, hook, source })?
                    .as_fd()
                    .as_raw_fd();
                pin::link_update(&link, prog_fd)
                    .map_err(|source| DatapathError::Link { path: path.display().to_string(), source })?;
                dp.links.push(link);
                updated += 1;
            } else {
                pin_link(attach(dp)?, &path)?;
                dp.hold(&path)?;
            }
            Ok(())
        };
        let attach_err = |program: &'static str, hook: &'static str, cg: &str| {
            let cg = cg.to_owned();
            move |source| DatapathError::Attach { program, hook, cgroup: cg.clone(), source }
        };
        for (name, hook) in HOOKS {
            each(self, name, hook, &|dp: &mut Datapath| {
                let prog: &mut CgroupSockAddr = program(&mut dp.ebpf, name, hook)?;
                let id = prog.attach(&cg_fd, CgroupAttachMode::Single).map_err(attach_err(name, hook, &cg))?;
                FdLink::try_from(prog.take_link(id).map_err(attach_err(name, hook, &cg))?)
                    .map_err(|e| DatapathError::Link { path: name.to_owned(), source: std::io::Error::other(e) })
            })?;
        }
        for (name, hook, direction) in SKB_HOOKS {
            each(self, name, hook, &|dp: &mut Datapath| {
                let prog: &mut CgroupSkb = program(&mut dp.ebpf, name, hook)?;
                let id =
                    prog.attach(&cg_fd, direction, CgroupAttachMode::Single).map_err(attach_err(name, hook, &cg))?;
                FdLink::try_from(prog.take_link(id).map_err(attach_err(name, hook, &cg))?)
                    .map_err(|e| DatapathError::Link { path: name.to_owned(), source: std::io::Error::other(e) })
            })?;
        }
        for (name, hook) in SOCK_HOOKS {
            each(self, name, hook, &|dp: &mut Datapath| {
                let prog: &mut CgroupSock = program(&mut dp.ebpf, name, hook)?;
                let id = prog.attach(&cg_fd, CgroupAttachMode::Single).map_err(attach_err(name, hook, &cg))?;
                FdLink::try_from(prog.take_link(id).map_err(attach_err(name, hook, &cg))?)
                    .map_err(|e| DatapathError::Link { path: name.to_owned(), source: std::io::Error::other(e) })
            })?;
        }
        if updated > 0 {
            info!(links = updated, cgroup = %cg, "swapped this agent's programs into the pinned links (no gap)");
        }
        // Links of programs this version does not have (an earlier one's, renamed or dropped)
        // would go on running that version's program on its old maps: detach them.
        let ours: Vec<&str> = HOOKS
            .iter()
            .map(|(n, _)| *n)
            .chain(SKB_HOOKS.iter().map(|(n, _, _)| *n))
            .chain(SOCK_HOOKS.iter().map(|(n, _)| *n))
            .chain(TRACEPOINTS)
            .collect();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !ours.contains(&name.as_str()) {
                    warn!(link = %e.path().display(), "detaching a pinned link of a program this version does not have");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // What the old programs learnt until the swap, before their maps go.
        if let Some(old) = pins.old_layout() {
            if !pins.adopted {
                self.inherit(old, false)?;
            }
        }
        pins.tidy(id);
        Ok(())
    }

    /// Keeps a descriptor of the link pinned at `path`, so that unpinning and closing it at a
    /// fail-open stop detaches it.
    fn hold(&mut self, path: &Path) -> Result<(), DatapathError> {
        let fd =
            pin::obj_get(path).map_err(|source| DatapathError::Link { path: path.display().to_string(), source })?;
        self.links.push(fd);
        Ok(())
    }
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), DatapathError> {
    link.pin(path)
        .map(drop)
        .map_err(|e| DatapathError::Link { path: path.display().to_string(), source: std::io::Error::other(e) })
}

/// The entries of the old layout's hash map `name`, if it is pinned there with these key and
/// value sizes (a changed type is not carried over).
fn read_old<K: aya::Pod, V: aya::Pod>(old: &Path, name: &str) -> Vec<(K, V)> {
    let Ok(data) = MapData::from_pin(old.join(name)) else { return Vec::new() };
    let fits = data.info().is_ok_and(|i| {
        i.key_size() as usize == std::mem::size_of::<K>() && i.value_size() as usize == std::mem::size_of::<V>()
    });
    if !fits {
        warn!(map = name, "the replaced layout's map has other types: not carried over");
        return Vec::new();
    }
    let map = Map::HashMap(data);
    match HashMap::<_, K, V>::try_from(&map) {
        Ok(m) => m.iter().filter_map(Result::ok).collect(),
        Err(_) => {
            // LRU maps (the learnt tables) are another variant.
            let Map::HashMap(data) = map else { return Vec::new() };
            let lru = Map::LruHashMap(data);
            HashMap::<_, K, V>::try_from(&lru).map(|m| m.iter().filter_map(Result::ok).collect()).unwrap_or_default()
        }
    }
}

fn copy_old<K: aya::Pod, V: aya::Pod>(
    dp: &mut Datapath,
    old: &Path,
    name: &'static str,
) -> Result<usize, DatapathError> {
    let entries = read_old::<K, V>(old, name);
    let n = entries.len();
    if n > 0 {
        let mut m: HashMap<_, K, V> = dp.map_mut(name)?;
        for (k, v) in entries {
            m.insert(k, v, 0).map_err(map_err(name))?;
        }
    }
    Ok(n)
}
