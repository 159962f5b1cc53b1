//! The kernel datapath: loads the embedded programs, attaches them to the watched cgroup, and
//! installs compiled policies into the maps. Dropping a [`Datapath`] detaches everything.
#![expect(
    clippy::result_large_err,
    reason = "aya's EbpfError and ProgramError are large; these errors happen once, at start-up or reload"
)]

use std::{fs::File, os::fd::AsRawFd as _, path::Path};

use std::net::IpAddr;

use agent_common::{
    dns_counter, domain_kind, maps, programs as progs, AddrV4, AddrV6, Config, DestValue, DomainValue, ExeKey,
    KernelOffsets, Learnt, LearntKeyV4, LearntKeyV6, Nat64Key, ResolverKey, RuleEntry, Selector, SlotMeta,
    MAX_DOMAIN_IDS, MAX_RULE_ENTRIES, MAX_SELECTORS, NAT64_LISTED,
};
use aya::{
    maps::{
        lpm_trie::Key, Array, CgroupArray, HashMap, LpmTrie, MapData, MapError, PerCpuArray, ProgramArray, RingBuf,
    },
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, ProgramError, RawTracePoint,
    },
    Ebpf, EbpfError,
};

use super::flows::VendorIds;
use crate::{
    dns::ids::{DomainIds, IdsExhausted},
    policy::CompiledPolicy,
};

/// The cgroup_skb programs (flow accounting, then DNS) and the direction each attaches to.
pub(super) const SKB_HOOKS: [(&str, &str, CgroupSkbAttachType); 2] = [
    (progs::SKB_EGRESS, "cgroup_skb/egress", CgroupSkbAttachType::Egress),
    (progs::SKB_INGRESS, "cgroup_skb/ingress", CgroupSkbAttachType::Ingress),
];

/// The program `skb_egress` tail-calls (through `DGRAM_PROG`) for ping and UDP-Lite sockets:
/// loaded, never attached.
const TAIL_CALLED: (&str, &str) = (progs::SKB_DGRAM, "cgroup_skb/egress (tail call)");

/// The socket hooks: the release hook that reports the end of sockets with flows, and the
/// create hook that refuses sockets no other hook can decide.
pub(super) const SOCK_HOOKS: [(&str, &str); 2] =
    [(progs::FLOW_RELEASE, "cgroup/sock_release"), (progs::SOCK_CREATE, "cgroup/sock_create")];

/// The kernel programs, built by build.rs for this kernel's BPF target and embedded in the binary.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The four hooks, with the name their program has in the object.
pub(super) const HOOKS: [(&str, &str); 4] = [
    (progs::CONNECT4, "cgroup/connect4"),
    (progs::CONNECT6, "cgroup/connect6"),
    (progs::SENDMSG4, "cgroup/sendmsg4"),
    (progs::SENDMSG6, "cgroup/sendmsg6"),
];

/// Every raw tracepoint: execs (the file executed, and the exec record), forks (a new process
/// inherits it) and exits (its entry goes). Each program is named for its tracepoint.
pub(super) const TRACEPOINTS: [&str; 4] = [progs::EXEC, progs::FORK, progs::EXIT, progs::SWITCH];

/// What the verifier walked for each program (`name=instructions`): how close each is to its
/// budget of one million, which every program added to the hooks spends from.
fn verified_insns(ebpf: &Ebpf) -> String {
    ebpf.programs()
        .map(|(name, p)| {
            let n = p.info().ok().and_then(|i| i.verified_instruction_count());
            format!("{name}={}", n.map_or_else(|| "?".to_owned(), |n| n.to_string()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Program `program` of the object as its type `T`; errors name the program and its hook.
pub(super) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let err = |source| DatapathError::Program { program, hook, source };
    ebpf.program_mut(program).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("program `{program}` ({hook}): {source}")]
    Program { program: &'static str, hook: &'static str, source: ProgramError },
    #[error("attaching `{program}` ({hook}) to cgroup {cgroup}: {source}")]
    Attach { program: &'static str, hook: &'static str, cgroup: String, source: ProgramError },
    #[error("opening cgroup {cgroup}: {source}")]
    Cgroup { cgroup: String, source: std::io::Error },
    #[error("map `{map}` is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("map `{map}`: {source}")]
    Map { map: &'static str, source: MapError },
    #[error(transparent)]
    DomainIds(#[from] IdsExhausted),
    #[error("reading the kernel programs' log: {0}")]
    Logger(aya_log::Error),
    #[error("pinned datapath: {0}")]
    Pin(#[from] super::pin::PinError),
    #[error("pinned link {path}: {source}")]
    Link { path: String, source: std::io::Error },
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) active_slot: u32,
    /// Ids of every domain pattern installed so far (see `dns::ids`).
    pub(super) domain_ids: DomainIds,
    /// Ids of every vendor installed so far (the key of blocks).
    pub(super) vendor_ids: VendorIds,
    /// The datapath is pinned (see `pin`): the links below hold the programs, and the names of
    /// new ids are saved with the maps.
    pub(super) pinned: bool,
    /// The highest domain and vendor ids whose names are saved.
    pub(super) names_saved: (u32, u16),
    /// The generation in force when this agent adopted a running datapath.
    pub(super) adopted_generation: Option<u32>,
    /// Descriptors of the links this agent attached or updated (pinned ones too): closing them
    /// after unpinning detaches the programs.
    pub(super) links: Vec<std::os::fd::OwnedFd>,
}

/// The learnt-address tables, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearntStats {
    /// Entries with a pattern still live.
    pub live: u64,
    /// Entries whose every pattern expired (recycled first when the table is full).
    pub expired: u64,
}

impl Datapath {
    /// Loads the programs into the kernel (not attached yet) and writes the kernel offsets.
    /// `ring_bytes`: capacity of the event ring buffer (a power of two, at least a page);
    /// `max_flows`: capacity of the flow table.
    /// `pins`: the pinned datapath to create or adopt (its maps are reused when present).
    pub fn load(
        offsets: KernelOffsets,
        ring_bytes: u32,
        max_flows: u32,
        pins: Option<&super::pin::Pins>,
    ) -> Result<Self, DatapathError> {
        let paths: Vec<(&'static str, std::path::PathBuf)> =
            pins.map(|p| maps::PINNED.iter().map(|m| (*m, p.map_path(m))).collect()).unwrap_or_default();
        let mut loader = aya::EbpfLoader::new();
        // The same sizes make the layout id (see `layout`).
        for (m, n) in super::layout::max_entries(ring_bytes, max_flows) {
            loader.map_max_entries(m, n);
        }
        for (m, path) in &paths {
            loader.map_pin_path(m, path.as_path());
        }
        let started = std::time::Instant::now();
        let mut ebpf = loader.load(OBJECT)?;
        for (name, hook, _) in SKB_HOOKS {
            let prog: &mut CgroupSkb = program(&mut ebpf, name, hook)?;
            prog.load().map_err(|source| DatapathError::Program { program: name, hook, source })?;
        }
        {
            // Not attached: `skb_egress` tail-calls it through `DGRAM_PROG`, set below.
            let (name, hook) = TAIL_CALLED;
            let prog: &mut CgroupSkb = program(&mut ebpf, name, hook)?;
            prog.load().map_err(|source| DatapathError::Program { program: name, hook, source })?;
        }
        for (name, hook) in HOOKS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name, hook)?;
            prog.load().map_err(|source| DatapathError::Program { program: name, hook, source })?;
        }
        for (name, hook) in SOCK_HOOKS {
            let prog: &mut CgroupSock = program(&mut ebpf, name, hook)?;
            prog.load().map_err(|source| DatapathError::Program { program: name, hook, source })?;
        }
        for tp in TRACEPOINTS {
            let prog: &mut RawTracePoint = program(&mut ebpf, tp, tp)?;
            prog.load().map_err(|source| DatapathError::Program { program: tp, hook: tp, source })?;
        }
        tracing::info!(
            load_ms = started.elapsed().as_millis() as u64,
            verified_insns = %verified_insns(&ebpf),
            "programs loaded"
        );
        let mut dp = Self {
            ebpf,
            active_slot: 0,
            domain_ids: DomainIds::default(),
            vendor_ids: VendorIds::default(),
            pinned: pins.is_some(),
            names_saved: (0, 0),
            adopted_generation: None,
            links: Vec::new(),
        };
        match pins {
            Some(p) if p.adopted => dp.adopt()?,
            Some(p) => {
                if let Some(old) = p.old_layout() {
                    let n = dp.inherit(old, true)?;
                    tracing::info!(learnt = n, "learnt addresses and blocks carried over from the replaced layout");
                }
            }
            None => {}
        }
        dp.set_tail_calls()?;
        let mut config: Array<_, Config> = dp.map_mut(maps::CONFIG)?;
        let config_value = Config { offsets, wakeup_bytes: ring_bytes / 8, _pad: 0 };
        config.set(0, config_value, 0).map_err(map_err(maps::CONFIG))?;
        Ok(dp)
    }

    /// Attaches every hook to `cgroup` through bpf links. A cgroup link always coexists with the
    /// programs others attached (the kernel refuses attach flags on link creation, hence
    /// `Single`): the agent adds a check, it never replaces one. Closing the link detaches it.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let cg = cgroup.display().to_string();
        let fd = File::open(cgroup).map_err(|source| DatapathError::Cgroup { cgroup: cg.clone(), source })?;
        // The exec tracepoint first, so that no process starts unseen once the hooks decide.
        {
            let mut watched: CgroupArray<_> = self.map_mut(maps::WATCHED_CGROUP)?;
            watched.set(0, fd.as_raw_fd(), 0).map_err(map_err(maps::WATCHED_CGROUP))?;
        }
        for tp in TRACEPOINTS {
            let prog: &mut RawTracePoint = program(&mut self.ebpf, tp, tp)?;
            prog.attach(tp).map_err(|source| DatapathError::Attach {
                program: tp,
                hook: tp,
                cgroup: cg.clone(),
                source,
            })?;
        }
        for (name, hook) in HOOKS {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name, hook)?;
            prog.attach(&fd, CgroupAttachMode::Single).map_err(|source| DatapathError::Attach {
                program: name,
                hook,
                cgroup: cg.clone(),
                source,
            })?;
        }
        // The DNS programs before the connect hooks would be better still, but all attach before
        // the agent reports ready, and a query sent in between is only unrecorded (its answer
        // learns nothing: fail closed).
        for (name, hook, direction) in SKB_HOOKS {
            let prog: &mut CgroupSkb = program(&mut self.ebpf, name, hook)?;
            prog.attach(&fd, direction, CgroupAttachMode::Single).map_err(|source| DatapathError::Attach {
                program: name,
                hook,
                cgroup: cg.clone(),
                source,
            })?;
        }
        for (name, hook) in SOCK_HOOKS {
            let prog: &mut CgroupSock = program(&mut self.ebpf, name, hook)?;
            prog.attach(&fd, CgroupAttachMode::Single).map_err(|source| DatapathError::Attach {
                program: name,
                hook,
                cgroup: cg.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Puts this agent's `skb_dgram` into `DGRAM_PROG`, before anything is attached (an adopted
    /// array then hands the running `skb_egress`'s packets to it at once: both use these maps).
    fn set_tail_calls(&mut self) -> Result<(), DatapathError> {
        let (name, hook) = TAIL_CALLED;
        let err = |source| DatapathError::Program { program: name, hook, source };
        let prog = self.ebpf.program(name).ok_or(err(ProgramError::NotLoaded))?;
        let fd = prog.fd().map_err(err)?.try_clone().map_err(|e| err(ProgramError::IOError(e)))?;
        let mut array: ProgramArray<_> = self.map_mut(maps::DGRAM_PROG)?;
        array.set(0, &fd, 0).map_err(map_err(maps::DGRAM_PROG))
    }

    pub(super) fn map_mut<'a, T>(&'a mut self, map: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let m = self.ebpf.map_mut(map).ok_or(DatapathError::MissingMap { map })?;
        T::try_from(m).map_err(map_err(map))
    }

    /// Installs `policy` with generation `generation`: fills the inactive slot completely, then
    /// switches `ACTIVE_SLOT` to it with one word write. Attempts decided during the install see
    /// either the old rule set or the new one, never a mix.
    pub fn install(&mut self, policy: &CompiledPolicy, generation: u32) -> Result<(), DatapathError> {
        let slot = 1 - self.active_slot;
        let slot_idx = slot as usize;
        let t = &policy.tables;
        let v4 = t.v4.iter().map(|(n, v)| (Key::new(u32::from(n.prefix_len()), n.network().octets()), *v));
        self.fill_trie::<AddrV4>(maps::DESTS_V4[slot_idx], v4)?;
        let v6 = t.v6.iter().map(|(n, v)| (Key::new(u32::from(n.prefix_len()), n.network().octets()), *v));
        self.fill_trie::<AddrV6>(maps::DESTS_V6[slot_idx], v6)?;
        // Each entry carries its vendor's id, which blocks are keyed by.
        let entries: Vec<RuleEntry> = t
            .entries
            .iter()
            .map(|e| {
                let vendor = policy.rule(e.rule_id).and_then(|r| r.vendor.as_deref());
                RuleEntry { vendor: vendor.map_or(0, |v| self.vendor_ids.assign(v)), ..*e }
            })
            .collect();
        {
            let mut rules: Array<_, RuleEntry> = self.map_mut(maps::RULES)?;
            let base = slot * MAX_RULE_ENTRIES;
            for (i, e) in entries.iter().enumerate() {
                rules.set(base + i as u32, e, 0).map_err(map_err(maps::RULES))?;
            }
        }
        let sel_base = slot * MAX_SELECTORS;
        {
            let mut sels: Array<_, Selector> = self.map_mut(maps::SELECTORS)?;
            for (i, s) in t.selectors.iter().enumerate() {
                sels.set(sel_base + i as u32, s, 0).map_err(map_err(maps::SELECTORS))?;
            }
        }
        {
            let mut exes: HashMap<_, ExeKey, u64> = self.map_mut(maps::EXE_SET)?;
            // Both slots share this map: drop only the inactive slot's keys.
            let range = sel_base..sel_base + MAX_SELECTORS;
            let keys: Vec<ExeKey> = exes.keys().collect::<Result<_, _>>().map_err(map_err(maps::EXE_SET))?;
            let stale = keys.into_iter().filter(|k| range.contains(&k.selector));
            for k in stale {
                exes.remove(&k).map_err(map_err(maps::EXE_SET))?;
            }
            for &(sel, dev, ino, gen) in &t.exe_keys {
                exes.insert(ExeKey { selector: sel_base + sel, dev, ino }, gen, 0).map_err(map_err(maps::EXE_SET))?;
            }
        }
        self.install_domains(policy, slot)?;
        self.install_nat64(policy, slot)?;
        // Before the slot is in force: an id the kernel can use is always named.
        self.save_names()?;
        {
            let mut meta: Array<_, SlotMeta> = self.map_mut(maps::SLOT_META)?;
            let m = SlotMeta {
                generation,
                mode: policy.mode_bits(),
                default_verdict: policy.default_verdict_bits(),
                unlisted_verdict: policy.unlisted_verdict_bits(),
                resolvers_only: u8::from(!policy.tables.dns.resolvers.is_empty()),
                dns_grace_s: policy.tables.dns.grace_s,
                _pad: 0,
            };
            meta.set(slot, m, 0).map_err(map_err(maps::SLOT_META))?;
        }
        let mut active: Array<_, u32> = self.map_mut(maps::ACTIVE_SLOT)?;
        active.set(0, slot, 0).map_err(map_err(maps::ACTIVE_SLOT))?;
        self.active_slot = slot;
        wait_for_running_programs();
        Ok(())
    }

    /// Fills the inactive slot's domain trie, the rules every known domain id stands for in it
    /// (retired patterns included: their learnt addresses keep what still covers their names),
    /// and its trusted resolvers. Learnt addresses themselves are not touched.
    fn install_domains(&mut self, policy: &CompiledPolicy, slot: u32) -> Result<(), DatapathError> {
        let t = &policy.tables;
        let mut trie_entries = Vec::with_capacity(t.domains.len());
        for e in &t.domains {
            let id = self.domain_ids.assign(&e.pattern)?;
            let at_id = match &e.at {
                Some(p) => self.domain_ids.assign(p)?,
                None => 0,
            };
            let key = e.pattern.rkey();
            let mut data = [0u8; 256];
            let n = key.len().min(256);
            data[..n].copy_from_slice(&key[..n]);
            let kind = if e.pattern.is_wildcard() { domain_kind::WILDCARD } else { domain_kind::EXACT };
            trie_entries.push((Key::new(8 * n as u32, data), DomainValue { key_len: n as u32, kind, id, at_id }));
        }
        {
            let map = maps::DOMAINS[slot as usize];
            let mut trie: LpmTrie<_, [u8; 256], DomainValue> = self.map_mut(map)?;
            let keys: Vec<Key<[u8; 256]>> = trie.keys().collect::<Result<_, _>>().map_err(map_err(map))?;
            for k in keys {
                trie.remove(&k).map_err(map_err(map))?;
            }
            for (k, v) in &trie_entries {
                trie.insert(k, v, 0).map_err(map_err(map))?;
            }
        }
        let rules: Vec<(u32, DestValue)> = self.domain_ids.iter().map(|(id, p)| (id, policy.domain_rules(p))).collect();
        {
            let mut arr: Array<_, DestValue> = self.map_mut(maps::DOMAIN_RULES)?;
            for (id, v) in rules {
                arr.set(slot * MAX_DOMAIN_IDS + id, v, 0).map_err(map_err(maps::DOMAIN_RULES))?;
            }
        }
        {
            let mut res: HashMap<_, ResolverKey, u8> = self.map_mut(maps::RESOLVERS)?;
            let keys: Vec<ResolverKey> = res.keys().collect::<Result<_, _>>().map_err(map_err(maps::RESOLVERS))?;
            for k in keys.into_iter().filter(|k| k.slot == slot) {
                res.remove(&k).map_err(map_err(maps::RESOLVERS))?;
            }
            for a in &t.dns.resolvers {
                let (family, addr) = match a {
                    IpAddr::V4(v4) => {
                        let mut b = [0u8; 16];
                        b[..4].copy_from_slice(&v4.octets());
                        (2, b)
                    }
                    IpAddr::V6(v6) => (10, v6.octets()),
                };
                res.insert(ResolverKey { slot, family, addr }, 1, 0).map_err(map_err(maps::RESOLVERS))?;
            }
        }
        Ok(())
    }

    /// Fills the inactive slot's NAT64 prefixes (`nat64Prefixes`): the hooks look the active
    /// slot's up, so they switch with the rest of the policy.
    fn install_nat64(&mut self, policy: &CompiledPolicy, slot: u32) -> Result<(), DatapathError> {
        let mut map: HashMap<_, Nat64Key, u32> = self.map_mut(maps::NAT64_PREFIXES)?;
        let keys: Vec<Nat64Key> = map.keys().collect::<Result<_, _>>().map_err(map_err(maps::NAT64_PREFIXES))?;
        for k in keys.into_iter().filter(|k| k.slot == slot) {
            map.remove(&k).map_err(map_err(maps::NAT64_PREFIXES))?;
        }
        for (net, _) in &policy.tables.nat64 {
            let mut prefix = [0u8; 12];
            prefix.copy_from_slice(&net.network().octets()[..12]);
            map.insert(Nat64Key { slot, prefix }, NAT64_LISTED, 0).map_err(map_err(maps::NAT64_PREFIXES))?;
        }
        Ok(())
    }

    /// The ids of the domain patterns installed so far.
    pub fn domain_ids(&self) -> &DomainIds {
        &self.domain_ids
    }

    /// Counts the learnt addresses, live (some pattern not expired at `now_ns`, CLOCK_MONOTONIC
    /// as the kernel's `bpf_ktime_get_ns`) and expired. Nothing is removed here: the tables are
    /// LRU maps the kernel recycles itself, so no removal can race a renewal.
    pub fn learnt_stats(&mut self, now_ns: u64) -> Result<LearntStats, DatapathError> {
        let mut stats = LearntStats::default();
        let live = |v: &Learnt| v.slots.iter().any(|s| s.domain_id != 0 && s.expires_ns > now_ns);
        {
            let m: HashMap<_, LearntKeyV4, Learnt> = self.map_mut(maps::LEARNT_V4)?;
            for (_, v) in m.iter().filter_map(Result::ok) {
                if live(&v) {
                    stats.live += 1;
                } else {
                    stats.expired += 1;
                }
            }
        }
        {
            let m: HashMap<_, LearntKeyV6, Learnt> = self.map_mut(maps::LEARNT_V6)?;
            for (_, v) in m.iter().filter_map(Result::ok) {
                if live(&v) {
                    stats.live += 1;
                } else {
                    stats.expired += 1;
                }
            }
        }
        Ok(stats)
    }

    /// The DNS counters, summed over CPUs, indexed by `agent_common::dns_counter`.
    pub fn dns_counters(&mut self) -> Result<[u64; dns_counter::COUNT as usize], DatapathError> {
        let counters: PerCpuArray<_, u64> = self.map_mut(maps::DNS_COUNTERS)?;
        let mut out = [0u64; dns_counter::COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = counters.get(&(i as u32), 0).map_err(map_err(maps::DNS_COUNTERS))?.iter().sum();
        }
        Ok(out)
    }

    /// Empties a destination trie of the inactive slot and fills it with `entries`.
    fn fill_trie<K: aya::Pod>(
        &mut self,
        map: &'static str,
        entries: impl Iterator<Item = (Key<K>, DestValue)>,
    ) -> Result<(), DatapathError> {
        let mut trie: LpmTrie<_, K, DestValue> = self.map_mut(map)?;
        clear_trie(&mut trie, map)?;
        for (key, value) in entries {
            trie.insert(&key, value, 0).map_err(map_err(map))?;
        }
        Ok(())
    }

    /// The reader of the programs' own diagnostics (aya-log: rare paths such as a parse that gave
    /// up or a full table), which writes them to the agent's log; can be taken once.
    pub fn take_logger(&mut self) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>, DatapathError> {
        aya_log::EbpfLogger::init(&mut self.ebpf).map_err(DatapathError::Logger)
    }

    /// The ring buffer of events; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self.ebpf.take_map(maps::EVENTS).ok_or(DatapathError::MissingMap { map: maps::EVENTS })?;
        RingBuf::try_from(map).map_err(map_err(maps::EVENTS))
    }

    /// Events the kernel could not deliver because the ring buffer was full, summed over CPUs.
    pub fn events_dropped(&mut self) -> Result<u64, DatapathError> {
        let counter: PerCpuArray<_, u64> = self.map_mut(maps::EVENTS_DROPPED)?;
        let values = counter.get(&0, 0).map_err(map_err(maps::EVENTS_DROPPED))?;
        Ok(values.iter().sum())
    }
}

/// Returns once every program run that started before the call has finished. cgroup programs run
/// inside an RCU read-side section and membarrier(MEMBARRIER_CMD_GLOBAL) waits for an RCU grace
/// period, so after it no program still reads the slot just deactivated, and the next install
/// may rewrite it: a preempted program can never see a mix of two rule sets.
fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: plain syscall without pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // Kernels without membarrier: programs run for microseconds; wait far longer.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn clear_trie<K: aya::Pod>(
    trie: &mut LpmTrie<&mut MapData, K, DestValue>,
    map: &'static str,
) -> Result<(), DatapathError> {
    let keys: Vec<Key<K>> = trie.keys().collect::<Result<_, _>>().map_err(map_err(map))?;
    for k in keys {
        trie.remove(&k).map_err(map_err(map))?;
    }
    Ok(())
}
