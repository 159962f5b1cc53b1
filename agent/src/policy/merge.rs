//! Merging documents into one policy: lists concatenate, settings given once (or alike), every
//! rule keeps its place, and what cannot be merged is an error naming both places.

use std::fmt;

use agent_common::MAX_NAT64_PREFIXES;
use ipnet::Ipv6Net;

use super::{
    model::{self, AllowRule, DefaultAction, Mode, Vendor},
    Document, Place, PolicyError, Problem,
};

/// The documents merged into one policy, each rule with its place.
#[derive(Debug, Clone)]
pub struct Merged {
    pub name: String,
    pub mode: Mode,
    pub default: DefaultAction,
    pub dns: DnsSettings,
    /// `spec.baseline` as given (unset keys are `None`); each vendor's overrides and response
    /// stay on its [`Vendor`]. Resolved by `baseline::settings::BaselineSettings::from_merged`.
    pub baseline: model::BaselineSpec,
    pub allow: Vec<(AllowRule, Place)>,
    pub vendors: Vec<(Vendor, VendorPlaces)>,
    /// `spec.nat64Prefixes` of every document, each once, with where it was first listed.
    pub nat64: Vec<(Ipv6Net, Place)>,
    /// SHA-256 of the policy text this was merged from, as read (see `policy::load`); empty
    /// when merged from documents alone.
    pub sha256: String,
}

/// `spec.dns` after merging, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub grace_s: u32,
    pub unlisted: DefaultAction,
    pub resolvers: Vec<std::net::IpAddr>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        // Unlisted lookups are reported, not refused, unless the policy says so: refusing them
        // breaks every name nobody thought of, which a first rollout must not do.
        Self { grace_s: model::Grace::DEFAULT.0, unlisted: DefaultAction::Alert, resolvers: Vec::new() }
    }
}

/// Where a vendor and each of its process selectors are defined.
#[derive(Debug, Clone)]
pub struct VendorPlaces {
    pub name: Place,
    pub processes: Vec<Place>,
}

/// Merges documents: lists concatenate; a vendor defined twice, or `mode`/`default` set to
/// different values, is an error naming both places. Also checks each selector's shape.
pub fn merge(docs: &[Document]) -> Result<(Merged, Vec<Problem>), PolicyError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut mode: Option<(Mode, Place)> = None;
    let mut default: Option<(DefaultAction, Place)> = None;
    let mut dns: Option<(model::DnsSpec, Place)> = None;
    let mut baseline: Option<(model::BaselineSpec, Place)> = None;
    let mut allow = Vec::new();
    let mut vendors: Vec<(Vendor, VendorPlaces)> = Vec::new();
    let mut nat64: Vec<(Ipv6Net, Place)> = Vec::new();
    for d in docs {
        let spec = &d.doc.spec;
        if !names.contains(&d.doc.metadata.name.0) {
            names.push(d.doc.metadata.name.0.clone());
        }
        set_once(&mut mode, spec.mode, d, "mode", &mut errors);
        set_once(&mut default, spec.default, d, "default", &mut errors);
        if let Some(spec_dns) = &spec.dns {
            let here = d.place("spec.dns");
            match &dns {
                Some((prev, at)) if prev != spec_dns => errors.push(Problem::error(
                    here,
                    format!("dns settings differ from those at {at}: give `spec.dns` in one document"),
                )),
                Some(_) => {}
                None => dns = Some((spec_dns.clone(), here)),
            }
        }
        if let Some(spec_baseline) = &spec.baseline {
            let here = d.place("spec.baseline");
            match &baseline {
                Some((prev, at)) if prev != spec_baseline => errors.push(Problem::error(
                    here,
                    format!("baseline settings differ from those at {at}: give `spec.baseline` in one document"),
                )),
                Some(_) => {}
                None => baseline = Some((*spec_baseline, here)),
            }
        }
        for (i, p) in spec.nat64_prefixes.iter().enumerate() {
            let here = d.place(&format!("spec.nat64Prefixes[{i}]"));
            if nat64.iter().any(|(n, _)| *n == p.0) {
                continue;
            }
            if nat64.len() == MAX_NAT64_PREFIXES as usize {
                errors.push(Problem::error(
                    here,
                    format!(
                        "more than {MAX_NAT64_PREFIXES} NAT64 prefixes: the kernel holds at most {MAX_NAT64_PREFIXES}"
                    ),
                ));
                continue;
            }
            nat64.push((p.0, here));
        }
        for (i, a) in spec.allow.iter().enumerate() {
            if let Err(msg) = a.dest() {
                errors.push(Problem::error(d.place(&format!("spec.allow[{i}]")), msg));
            }
            allow.push((a.clone(), d.place(&format!("spec.allow[{i}]"))));
        }
        for (i, v) in spec.vendors.iter().enumerate() {
            let here = d.place(&format!("spec.vendors[{i}].name"));
            if let Some((_, first)) = vendors.iter().find(|(o, _)| o.name == v.name) {
                errors.push(Problem::error(
                    here.clone(),
                    format!("vendor `{}` is defined twice: here and at {}", v.name, first.name),
                ));
                continue;
            }
            let mut processes = Vec::new();
            for (j, sel) in v.processes.iter().enumerate() {
                let at = d.place(&format!("spec.vendors[{i}].processes[{j}]"));
                processes.push(at.clone());
                if *sel == model::ProcessSelector::default() {
                    errors.push(Problem::error(
                        at,
                        "empty selector: it would match every process; omit `processes` to allow any process",
                    ));
                } else if sel.uid.is_some() && sel.user.is_some() {
                    errors.push(Problem::error(at, "give `uid` or `user`, not both"));
                } else if (sel.pod_labels.is_some() || sel.pod_name.is_some()) && sel.pod_namespace.is_none() {
                    errors.push(Problem::error(
                        at,
                        "`pod_labels` and `pod_name` need `pod_namespace`: whoever may create a pod in any namespace can give it any name and labels",
                    ));
                } else if sel.cgroup.is_some() && (sel.names_pod() || sel.container.is_some()) {
                    errors.push(Problem::error(
                        at,
                        "give `cgroup` or `pod_uid`/`pod_namespace`/`pod_name`/`pod_labels`/`container`, not both: each names the cgroup the process must be in, and the kernel checks one per selector",
                    ));
                }
            }
            for (j, dest) in v.destinations.iter().enumerate() {
                let at = || d.place(&format!("spec.vendors[{i}].destinations[{j}]"));
                match dest.dest() {
                    Err(msg) => errors.push(Problem::error(at(), msg)),
                    Ok(model::Dest::Domain(p)) if p.is_wildcard() && !p.base().contains('.') => {
                        warnings.push(Problem::warning(
                            at(),
                            format!("`{p}` covers every name under a top-level domain: whoever registers one there adds addresses to this vendor; name the vendor's own domain"),
                        ));
                    }
                    Ok(_) => {}
                }
            }
            if v.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
                warnings.push(Problem::warning(
                    here.clone(),
                    format!("vendor `{}` has no owner: name the team accountable for it", v.name),
                ));
            }
            if v.baseline.is_some_and(|b| b.utc_offset.is_some()) {
                errors.push(Problem::error(
                    d.place(&format!("spec.vendors[{i}].baseline.utcOffset")),
                    "utcOffset is one clock for the whole host: set it in spec.baseline",
                ));
            }
            if let Some(r) = &v.response {
                if r.on.is_empty() {
                    errors.push(Problem::error(
                        d.place(&format!("spec.vendors[{i}].response.on")),
                        "no anomaly kinds: name the ones that trigger the response (volume_spike, rate_spike, ...) or omit `response`",
                    ));
                }
            }
            if v.destinations.is_empty() {
                warnings.push(Problem::warning(
                    d.place(&format!("spec.vendors[{i}].destinations")),
                    "no destinations: this vendor allows nothing",
                ));
            }
            vendors.push((v.clone(), VendorPlaces { name: here, processes }));
        }
    }
    if !errors.is_empty() {
        return Err(PolicyError::Invalid(errors));
    }
    let merged = Merged {
        sha256: String::new(),
        name: names.join(","),
        mode: mode.map_or(Mode::Monitor, |m| m.0),
        default: default.map_or(DefaultAction::Deny, |d| d.0),
        dns: dns.map_or_else(DnsSettings::default, |(d, _)| DnsSettings {
            grace_s: d.grace.unwrap_or(model::Grace::DEFAULT).0,
            unlisted: d.unlisted.unwrap_or(DefaultAction::Alert),
            resolvers: d.resolvers.iter().map(|r| r.0).collect(),
        }),
        baseline: baseline.map(|(b, _)| b).unwrap_or_default(),
        allow,
        vendors,
        nat64,
    };
    Ok((merged, warnings))
}

/// Records a policy-wide setting that several documents may give, but only with one value; a
/// different value is an error naming both places.
fn set_once<T: Copy + PartialEq + fmt::Debug>(
    slot: &mut Option<(T, Place)>,
    value: Option<T>,
    doc: &Document,
    field: &str,
    errors: &mut Vec<Problem>,
) {
    let Some(v) = value else { return };
    let here = doc.place(&format!("spec.{field}"));
    match slot {
        Some((prev, at)) if *prev != v => {
            errors.push(Problem::error(here, format!("{field} {v:?} conflicts with {field} {prev:?} at {at}")));
        }
        Some(_) => {}
        None => *slot = Some((v, here)),
    }
}
