//! The layout id of the pinned maps (`<pin dir>/layout-<id>/`): a new agent adopts pinned maps
//! only when their id is its own, so the id must change whenever the maps this build would create
//! differ from the pinned ones. It is read from the eBPF object the agent embeds, not from a list
//! kept by hand: for every pinned map (`agent_common::maps::PINNED`), its name, type, key and
//! value sizes, `max_entries` as the agent sets it, flags, and the key and value types as the
//! object's BTF names them (the full layout for BTF-defined maps). Unpinned maps (the programs'
//! scratch space) and the programs themselves do not count: every start creates the first afresh
//! and swaps the second into the links.

use std::{collections::HashMap, fmt::Write as _, mem::size_of};

use agent_common::maps;
use btf_rs::{Btf, BtfType, Type};

/// Bumped by hand when what a pinned map holds changes meaning while its definition does not:
/// a field of a key or value reinterpreted, reordered (for maps declared with `#[map]`, whose
/// key and value the object names but does not lay out) or swapped for another of the same
/// size; a flag bit, an event kind or a counter index renumbered; an index scheme such as
/// `DOMAIN_RULES[slot * MAX_DOMAIN_IDS + id]` changed; or the event records the ring holds
/// changed in a way their sizes do not show.
const LAYOUT_VERSION: u32 = 1;

/// The agent's own sizes of maps, over what the object declares (the loader applies them too).
pub(super) fn max_entries(ring_bytes: u32, max_flows: u32) -> [(&'static str, u32); 2] {
    [(maps::EVENTS, ring_bytes), (maps::FLOWS, max_flows)]
}

/// The layout of this build's pinned maps with these sizes (16 hex digits).
pub fn layout_id(ring_bytes: u32, max_flows: u32) -> String {
    let object = super::datapath::OBJECT;
    match maps_of(object, &max_entries(ring_bytes, max_flows)) {
        Ok(maps) => id_of(&maps, maps::PINNED),
        // Loading the object fails just after with the reason; until then, an id that no other
        // build shares, so nothing is adopted by mistake.
        Err(e) => {
            tracing::debug!(error = %e, "the eBPF object does not parse: its layout id covers all of it");
            hash16(&format!("unparsed object {}", crate::control::audit::sha256_hex(object)))
        }
    }
}

/// One map of the object as the layout id sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MapLayout {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub extra: u64,
    /// The key and value types from the object's BTF; empty where it has none.
    pub types: String,
}

/// Every map of `object`, `max_entries` overridden by `overrides` (by map name).
pub(super) fn maps_of(object: &[u8], overrides: &[(&str, u32)]) -> Result<Vec<MapLayout>, aya_obj::ParseError> {
    let obj = aya_obj::Object::parse(object)?;
    // A BTF that does not parse only leaves the types out: the sizes still count.
    let btf = obj.btf.as_ref().and_then(|b| Btf::from_bytes(&b.to_bytes()).ok());
    let vars = btf.as_ref().map(map_vars).unwrap_or_default();
    let mut out: Vec<MapLayout> = obj
        .maps
        .iter()
        .map(|(name, m)| {
            let types = match (&btf, m) {
                (Some(btf), aya_obj::Map::Btf(b)) => format!(
                    "key={} value={}",
                    describe(btf, b.def.btf_key_type_id, 0),
                    describe(btf, b.def.btf_value_type_id, 0)
                ),
                (Some(_), aya_obj::Map::Legacy(_)) => vars.get(name).map(|t| type_arguments(t)).unwrap_or_default(),
                (None, _) => String::new(),
            };
            MapLayout {
                name: name.clone(),
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: overrides.iter().find(|(n, _)| n == name).map_or(m.max_entries(), |(_, v)| *v),
                flags: m.map_flags(),
                extra: m.map_extra(),
                types,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The id of the maps named in `pinned`: the others do not count.
pub(super) fn id_of(maps: &[MapLayout], pinned: &[&str]) -> String {
    hash16(&description(maps, pinned))
}

/// What the id is the hash of, one line per item (also handy to diff two builds).
fn description(maps: &[MapLayout], pinned: &[&str]) -> String {
    use agent_common as c;
    let mut text = format!("egress-agent layout {LAYOUT_VERSION}\n");
    // The ring's records: events the old programs wrote while no agent ran are read by the
    // adopting agent, and a ring buffer's definition says nothing of them.
    let _ = writeln!(
        text,
        "records Event={} ExecEvent={} DnsEvent={} FlowEnd={}",
        size_of::<c::Event>(),
        size_of::<c::ExecEvent>(),
        size_of::<c::DnsEvent>(),
        size_of::<c::FlowEnd>(),
    );
    let mut names = pinned.to_vec();
    names.sort_unstable();
    names.dedup();
    for name in names {
        match maps.iter().find(|m| m.name == name) {
            Some(m) => {
                let _ = writeln!(
                    text,
                    "map {} type={} key={} value={} max_entries={} flags={:#x} extra={} types={}",
                    m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.flags, m.extra, m.types
                );
            }
            None => {
                let _ = writeln!(text, "map {name} absent");
            }
        }
    }
    text
}

fn hash16(text: &str) -> String {
    crate::control::audit::sha256_hex(text.as_bytes())[..16].to_owned()
}

/// The BTF type name of every map variable (sections `maps` and `.maps`), by variable name:
/// for a `#[map]` it is its aya-ebpf type, e.g. `HashMap<agent_common::FlowKey, …>`.
fn map_vars(btf: &Btf) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for section in ["maps", ".maps"] {
        for t in btf.resolve_types_by_name(section).unwrap_or_default() {
            let Type::Datasec(sec) = t else { continue };
            for v in &sec.variables {
                let Ok(Type::Var(var)) = btf.resolve_chained_type(v) else { continue };
                let (Ok(name), Ok(ty)) = (btf.resolve_name(&var), btf.resolve_chained_type(&var)) else { continue };
                if let Some(ty_name) = ty.as_btf_type().and_then(|t| btf.resolve_name(t).ok()) {
                    out.insert(name, decode(&ty_name));
                }
            }
        }
    }
    out
}

/// `HashMap<a::FlowKey, a::FlowStats>` → `FlowKey, FlowStats`: what a `#[map]` holds.
fn type_arguments(map_type: &str) -> String {
    match (map_type.find('<'), map_type.rfind('>')) {
        (Some(start), Some(end)) if start < end => strip_paths(&map_type[start + 1..end]),
        _ => String::new(),
    }
}

/// Undoes bpf-linker's escaping of BTF names (`_3C_` for `<`: BTF allows identifiers only).
fn decode(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' && i + 3 < bytes.len() && bytes[i + 3] == b'_' {
            if let Some(c) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(char::from(c));
                i += 4;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// `agent_common::flows::FlowKey` → `FlowKey`: a type moved to another module keeps its layout.
fn strip_paths(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut path_start = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(path_start);
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            path_start = out.len();
        }
    }
    out
}

/// The layout of BTF type `id`: sizes, offsets, member names and the names of structs, through
/// typedefs and qualifiers. Pointers are not followed (their target is not in the map).
fn describe(btf: &Btf, id: u32, depth: u32) -> String {
    if depth > 8 {
        return "…".to_owned();
    }
    let Ok(t) = btf.resolve_type_by_id(id) else { return format!("?{id}") };
    let name = |t: &dyn BtfType| btf.resolve_name(t).map(|n| strip_paths(&decode(&n))).unwrap_or_default();
    let inner = |t: &dyn BtfType| t.get_type_id().map_or_else(|| "?".to_owned(), |i| describe(btf, i, depth + 1));
    match &t {
        Type::Void => "void".to_owned(),
        Type::Int(i) => format!("{}{}", if i.is_signed() { "i" } else { "u" }, i.size() * 8),
        Type::Float(f) => format!("f{}", f.size() * 8),
        Type::Ptr(_) => "ptr".to_owned(),
        Type::Array(a) => format!("[{}; {}]", inner(a), a.len()),
        Type::Struct(s) | Type::Union(s) => {
            let kind = if matches!(t, Type::Union(_)) { "union" } else { "struct" };
            let members: Vec<String> = s
                .members
                .iter()
                .map(|m| {
                    let bits = m.bitfield_size().map(|b| format!(":{b}")).unwrap_or_default();
                    format!("{}@{}{bits}: {}", name(m), m.bit_offset(), inner(m))
                })
                .collect();
            format!("{kind} {}({}) {{{}}}", name(s), s.size(), members.join(", "))
        }
        Type::Enum(e) => {
            let values: Vec<String> = e.members.iter().map(|m| format!("{}={}", name(m), m.val())).collect();
            format!("enum {}({}) {{{}}}", name(e), e.size(), values.join(", "))
        }
        Type::Enum64(e) => {
            let values: Vec<String> = e.members.iter().map(|m| format!("{}={}", name(m), m.val())).collect();
            format!("enum {}({}) {{{}}}", name(e), e.size(), values.join(", "))
        }
        Type::Fwd(f) => format!("fwd {}", name(f)),
        Type::Typedef(q) => inner(q),
        Type::Volatile(q) | Type::Const(q) | Type::Restrict(q) => inner(q),
        Type::TypeTag(q) => inner(q),
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: u32 = 1 << 22;
    const FLOWS: u32 = 1 << 17;

    /// What a change is, and the change.
    type Change = (&'static str, fn(&mut MapLayout));

    fn object_maps() -> Vec<MapLayout> {
        maps_of(super::super::datapath::OBJECT, &max_entries(RING, FLOWS)).expect("the embedded object parses")
    }

    fn with(maps: &[MapLayout], name: &str, change: impl Fn(&mut MapLayout)) -> Vec<MapLayout> {
        let mut maps = maps.to_vec();
        change(maps.iter_mut().find(|m| m.name == name).expect("map in the object"));
        maps
    }

    #[test]
    fn the_id_is_stable_for_the_same_object_and_sizes() {
        let id = layout_id(RING, FLOWS);
        assert_eq!(id, layout_id(RING, FLOWS));
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(id, id_of(&object_maps(), maps::PINNED));
        let mut reversed = object_maps();
        reversed.reverse();
        assert_eq!(id, id_of(&reversed, maps::PINNED), "the order of the maps does not count");
    }

    #[test]
    fn the_id_follows_the_agents_own_sizes() {
        assert_ne!(layout_id(RING, FLOWS), layout_id(RING * 2, FLOWS));
        assert_ne!(layout_id(RING, FLOWS), layout_id(RING, FLOWS / 2));
    }

    #[test]
    fn every_pinned_map_is_in_the_object_with_its_override() {
        let maps = object_maps();
        for name in maps::PINNED {
            assert!(maps.iter().any(|m| m.name == *name), "pinned map {name} is not in the eBPF object");
        }
        let get = |name: &str| maps.iter().find(|m| m.name == name).expect("map in the object");
        assert_eq!(get(maps::EVENTS).max_entries, RING);
        assert_eq!(get(maps::FLOWS).max_entries, FLOWS);
    }

    #[test]
    fn a_change_to_a_pinned_map_changes_the_id() {
        let maps = object_maps();
        let id = id_of(&maps, maps::PINNED);
        let changes: [Change; 8] = [
            ("max_entries", |m| m.max_entries += 1),
            ("value size", |m| m.value_size += 8),
            ("key size", |m| m.key_size += 4),
            ("map type", |m| m.map_type = 9),
            ("flags", |m| m.flags |= 1),
            ("extra", |m| m.extra = 1),
            ("types", |m| m.types = "FlowKey, FlowStatsV2".to_owned()),
            ("name", |m| m.name = "FLOWS_V2".to_owned()),
        ];
        for (what, change) in changes {
            assert_ne!(id, id_of(&with(&maps, maps::FLOWS, change), maps::PINNED), "{what} of a pinned map");
        }
        let without: Vec<_> = maps.iter().filter(|m| m.name != maps::KILLS).cloned().collect();
        assert_ne!(id, id_of(&without, maps::PINNED), "a pinned map removed");
        let mut pinned = maps::PINNED.to_vec();
        pinned.push("DNS_SCRATCH");
        assert_ne!(id, id_of(&maps, &pinned), "a map that becomes pinned");
    }

    #[test]
    fn an_unpinned_map_does_not_change_the_id() {
        let maps = object_maps();
        let id = id_of(&maps, maps::PINNED);
        assert!(!maps::PINNED.contains(&"DNS_SCRATCH"));
        assert_eq!(id, id_of(&with(&maps, "DNS_SCRATCH", |m| m.value_size += 64), maps::PINNED));
        assert_eq!(id, id_of(&with(&maps, "DNS_SCRATCH", |m| m.max_entries = 8), maps::PINNED));
        let without: Vec<_> = maps.iter().filter(|m| m.name != "DNS_NEST").cloned().collect();
        assert_eq!(id, id_of(&without, maps::PINNED), "an unpinned map removed");
        let mut added = maps.clone();
        added.push(MapLayout { name: "NEW_SCRATCH".to_owned(), ..maps[0].clone() });
        assert_eq!(id, id_of(&added, maps::PINNED), "an unpinned map added");
    }

    #[test]
    fn the_object_names_the_key_and_value_types() {
        let maps = object_maps();
        let get = |name: &str| maps.iter().find(|m| m.name == name).expect("map in the object");
        assert_eq!(get(maps::FLOWS).types, "FlowKey, FlowStats");
        assert_eq!(get(maps::DESTS_V4[0]).types, "[u8; 4], DestValue");
        assert_eq!(get(maps::EVENTS).types, "");
        // A BTF-defined map: its value laid out, field by field.
        let pending = &get(maps::SK_PENDING).types;
        assert!(pending.starts_with("key=i32 value=struct SockPending(1480) {q@0: [struct Pending("), "{pending}");
        assert!(pending.contains("next@"), "{pending}");
    }

    #[test]
    fn btf_names_are_decoded_and_their_paths_dropped() {
        let name = "HashMap_3C_agent_common_3A__3A_flows_3A__3A_FlowKey_2C__20_u64_3E_";
        assert_eq!(decode(name), "HashMap<agent_common::flows::FlowKey, u64>");
        assert_eq!(type_arguments(&decode(name)), "FlowKey, u64");
        assert_eq!(decode("agent_common"), "agent_common");
        assert_eq!(strip_paths("a::b::C<d::E, [u8; 4]>"), "C<E, [u8; 4]>");
        assert_eq!(type_arguments("RingBuf"), "");
    }
}
