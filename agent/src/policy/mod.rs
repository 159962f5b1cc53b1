//! Policy: the file format, loading and merging of files and documents, validation with the
//! place of every problem, and compilation into the kernel's tables.

pub mod baseline_spec;
pub mod compile;
pub mod domains;
pub mod files;
mod from_str_de;
mod globwalk;
pub mod locate;
mod merge;
pub mod model;
pub mod process_model;
pub mod resolve;
mod selectors;
mod shadowing;

use std::{collections::HashMap, fmt, path::PathBuf};

use serde::Deserialize as _;

pub use compile::CompiledPolicy;
pub use files::expand;
use locate::Pos;
pub use merge::{merge, DnsSettings, Merged};
use model::{AllowRule, PolicyDoc, Vendor};

/// The policy the agent runs when none is given: monitor mode, so it refuses nothing on any host.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../policies/default.yaml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded default policy>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Where a value is: file, line, column and field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub pos: Pos,
    pub field: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}:{} ({})", self.file, self.pos.line, self.pos.column, self.field)
    }
}

/// One problem in a policy, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub place: Place,
    pub message: String,
}

impl Problem {
    pub fn error(place: Place, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, place, message: message.into() }
    }

    pub fn warning(place: Place, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, place, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let p = &self.place;
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if p.pos.line == 0 {
            // A whole file (one a directory holds and that is not read), or no place known.
            return write!(f, "{}: {sev}: {}: {}", p.file, p.field, self.message);
        }
        write!(f, "{}:{}:{}: {sev}: {}: {}", p.file, p.pos.line, p.pos.column, p.field, self.message)
    }
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `skipped`: the entries with a policy file's name that could not be read, if any.
    #[error("{path}: no policy files (*.yaml, *.yml) in this directory{skipped}")]
    Empty { path: String, skipped: String },
    /// A policy file that is not read: not a regular file, or too large.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// Every error found (warnings travel separately).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The policy is valid but does not fit the kernel's maps.
    #[error("policy exceeds a kernel limit: {message}")]
    Limit { message: String },
}

/// One parsed YAML document, with the index that names places in it.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub doc: PolicyDoc,
    locs: HashMap<String, Pos>,
}

impl Document {
    /// The place of `field`, or of its closest enclosing value that has one.
    pub fn place(&self, field: &str) -> Place {
        Place { file: self.file.clone(), pos: position(&self.locs, field), field: field.to_owned() }
    }
}

/// The position of `field`, or of its closest enclosing value that has one.
fn position(locs: &HashMap<String, Pos>, field: &str) -> Pos {
    let mut f = field;
    loop {
        if let Some(p) = locs.get(f) {
            return *p;
        }
        match f.rfind(['.', '[']) {
            Some(i) => f = &f[..i],
            None => return locs.get("").copied().unwrap_or_default(),
        }
    }
}

/// SHA-256 of policy texts: each file as its name and its contents, in order. The digest
/// recorded (status, audit) is this of exactly what was compiled; a signed bundle's signature
/// covers it too (see `central::bundle`).
pub fn digest_texts(files: &[(String, String)]) -> String {
    let mut all = Vec::new();
    for (name, text) in files {
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(text.as_bytes());
        all.push(0);
    }
    crate::control::audit::sha256_hex(&all)
}

/// Parses every document of every text: the documents that parsed, and the problems of those
/// that did not.
fn parse_all(files: &[(String, String)]) -> (Vec<Document>, Vec<Problem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in files {
        match parse(name, text) {
            Ok(d) => docs.extend(d),
            Err(p) => problems.extend(p),
        }
    }
    (docs, problems)
}

/// Parses every document of a text; for a document that does not parse, its problems (see
/// [`rule_problems`]).
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, Vec<Problem>> {
    let located = locate::index_documents(text).map_err(|deep| {
        vec![Problem::error(
            Place { file: file.to_owned(), pos: deep.pos, field: "(document)".into() },
            deep.to_string(),
        )]
    })?;
    // After a syntax error the YAML document iterator yields that error again and again: read
    // no more documents than the text has (at least one, for the error), or a broken policy
    // (`spec: [`) would hang the agent's reload.
    let documents = located.len().max(1);
    let mut locs = located.into_iter();
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (n, de) in serde_yaml_ng::Deserializer::from_str(text).take(documents).enumerate() {
        let idx = locs.next().unwrap_or_default();
        match serde_path_to_error::deserialize::<_, PolicyDoc>(de) {
            Ok(doc) => docs.push(Document { file: file.to_owned(), doc, locs: idx }),
            Err(err) => {
                let field = match err.path().to_string() {
                    p if p == "." || p.is_empty() => "(document)".to_owned(),
                    p => p,
                };
                // An empty document (a trailing `---`, common in generated YAML) is no policy.
                if idx.keys().all(String::is_empty) {
                    continue;
                }
                let inner = err.into_inner();
                let pos = inner.location().map_or(Pos::default(), |l| Pos { line: l.line(), column: l.column() });
                let message = strip_location(&inner.to_string());
                // serde_yaml_ng starts its message with the path, which the problem shows already.
                let message = message.strip_prefix(&format!("{field}: ")).map_or(message.clone(), str::to_owned);
                problems.push(Problem::error(Place { file: file.to_owned(), pos, field }, message));
                // Parsing stopped at that problem: check every rule on its own for the others,
                // from the same document read again untyped (only on this, the error path).
                let value = serde_yaml_ng::Deserializer::from_str(text)
                    .nth(n)
                    .and_then(|de| serde_yaml_ng::Value::deserialize(de).ok());
                if let Some(v) = value {
                    let seen: Vec<String> = problems.iter().map(|p| p.place.field.clone()).collect();
                    problems
                        .extend(rule_problems(file, &v, &idx).into_iter().filter(|p| !seen.contains(&p.place.field)));
                }
            }
        }
    }
    if docs.is_empty() && problems.is_empty() {
        problems.push(Problem::error(
            Place { file: file.to_owned(), pos: Pos { line: 1, column: 1 }, field: "(document)".into() },
            "no policy document",
        ));
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(problems)
    }
}

/// The problems of a document that failed to parse, found by checking the document without its
/// rule lists and then each `allow` and `vendors` entry on its own: one problem per entry (and
/// one for the rest), with positions from the document's index.
fn rule_problems(file: &str, doc: &serde_yaml_ng::Value, locs: &HashMap<String, Pos>) -> Vec<Problem> {
    fn check<T: serde::de::DeserializeOwned>(v: serde_yaml_ng::Value) -> Option<(String, String)> {
        serde_path_to_error::deserialize::<_, T>(v).err().map(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let msg = msg.strip_prefix(&format!("{path}: ")).map_or(msg.clone(), str::to_owned);
            (if path == "." { String::new() } else { path }, msg)
        })
    }
    let mut out = Vec::new();
    let mut push = |field: String, message: String| {
        let field = if field.is_empty() { "(document)".to_owned() } else { field };
        out.push(Problem::error(Place { file: file.to_owned(), pos: position(locs, &field), field }, message));
    };
    let mut head = doc.clone();
    if let Some(spec) = head.get_mut("spec").and_then(serde_yaml_ng::Value::as_mapping_mut) {
        for list in ["allow", "vendors"] {
            if spec.contains_key(list) {
                spec.insert(list.into(), serde_yaml_ng::Value::Sequence(Vec::new()));
            }
        }
    }
    if let Some((path, msg)) = check::<PolicyDoc>(head) {
        push(path, msg);
    }
    for list in ["allow", "vendors"] {
        let Some(items) = doc.get("spec").and_then(|s| s.get(list)).and_then(serde_yaml_ng::Value::as_sequence) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let found = if list == "allow" { check::<AllowRule>(item.clone()) } else { check::<Vendor>(item.clone()) };
            if let Some((path, msg)) = found {
                let base = format!("spec.{list}[{i}]");
                let field = if path.is_empty() {
                    base
                } else if path.starts_with('[') {
                    format!("{base}{path}")
                } else {
                    format!("{base}.{path}")
                };
                push(field, msg);
            }
        }
    }
    out
}

fn strip_location(message: &str) -> String {
    // serde_yaml_ng appends " at line L column C"; the problem's prefix says it already.
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Loads, merges and compiles policy paths (or the embedded default when there are none),
/// resolving process selectors on this host. Returns the policy and its warnings.
pub fn load(
    paths: &[PathBuf],
    now: time::OffsetDateTime,
    resolver: &dyn resolve::Resolver,
) -> Result<(Merged, CompiledPolicy, Vec<Problem>), PolicyError> {
    if paths.is_empty() {
        let docs = parse(EMBEDDED_NAME, EMBEDDED_DEFAULT).map_err(PolicyError::Invalid)?;
        let sha256 = crate::control::audit::sha256_hex(EMBEDDED_DEFAULT.as_bytes());
        return compile_docs(&docs, Vec::new(), sha256, now, resolver);
    }
    let (files, skipped) = files::read_all(paths, files::max_bytes())?;
    // The entries of a directory that were not read are named with the policy's warnings, and
    // with its errors when it has any.
    match load_texts(&files, now, resolver) {
        Ok((merged, compiled, warnings)) => Ok((merged, compiled, [skipped, warnings].concat())),
        Err(PolicyError::Invalid(errors)) if !skipped.is_empty() => {
            Err(PolicyError::Invalid([errors, skipped].concat()))
        }
        Err(e) => Err(e),
    }
}

/// [`load`] for texts that are not files here (a policy bundle's): `files` are (name, text)
/// pairs, the names being what messages show.
pub fn load_texts(
    files: &[(String, String)],
    now: time::OffsetDateTime,
    resolver: &dyn resolve::Resolver,
) -> Result<(Merged, CompiledPolicy, Vec<Problem>), PolicyError> {
    let (docs, errors) = parse_all(files);
    compile_docs(&docs, errors, digest_texts(files), now, resolver)
}

fn compile_docs(
    docs: &[Document],
    mut errors: Vec<Problem>,
    sha256: String,
    now: time::OffsetDateTime,
    resolver: &dyn resolve::Resolver,
) -> Result<(Merged, CompiledPolicy, Vec<Problem>), PolicyError> {
    // The documents that parsed are merged even when others did not, so one run reports the
    // problems of both kinds.
    let merged = merge(docs);
    let (mut merged, mut warnings) = match merged {
        Ok(m) if errors.is_empty() => m,
        Ok(_) => return Err(PolicyError::Invalid(errors)),
        Err(PolicyError::Invalid(more)) => {
            errors.extend(more);
            return Err(PolicyError::Invalid(errors));
        }
        Err(other) => return Err(other),
    };
    merged.sha256 = sha256;
    let (compiled, w) = compile::compile(&merged, resolver, now)?;
    warnings.extend(w);
    Ok((merged, compiled, warnings))
}

/// SHA-256 of the policy as read now: every file `paths` expands to, each as its path and its
/// contents, in order (the embedded default's text when there are none).
pub fn digest(paths: &[PathBuf]) -> String {
    use crate::control::audit::sha256_hex;
    if paths.is_empty() {
        return sha256_hex(EMBEDDED_DEFAULT.as_bytes());
    }
    let mut all = Vec::new();
    for p in expand(paths).map(|(files, _)| files).unwrap_or_default() {
        all.extend_from_slice(p.display().to_string().as_bytes());
        all.push(0);
        all.extend_from_slice(&files::read_bytes(&p, files::max_bytes()).unwrap_or_default());
        all.push(0);
    }
    sha256_hex(&all)
}

/// Describes the paths in messages.
pub fn describe(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return EMBEDDED_NAME.to_owned();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::{model::Mode, *};

    pub fn err(text: &str) -> String {
        match parse("p.yaml", text).and_then(|d| {
            merge(&d).map_err(|e| match e {
                PolicyError::Invalid(p) => p,
                other => panic!("{other}"),
            })
        }) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        }
    }

    const HEAD: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n";

    #[test]
    fn an_unterminated_flow_collection_is_refused_not_looped_on() {
        // The YAML document iterator repeats a syntax error forever: this used to hang.
        let e = err(&format!("{HEAD}spec: {{allow: [\n"));
        assert!(e.contains("p.yaml:") && e.contains("spec.allow"), "{e}");
        let e = err("spec: [\n");
        assert!(e.starts_with("p.yaml:1:"), "{e}");
    }

    fn one(text: &str) -> PolicyDoc {
        let mut d = parse("p.yaml", text).unwrap_or_else(|e| panic!("{e:?}"));
        d.remove(0).doc
    }

    #[test]
    fn embedded_default_is_valid_monitor() {
        let doc = one(EMBEDDED_DEFAULT);
        assert_eq!(doc.spec.mode, Some(Mode::Monitor));
    }

    #[test]
    fn example_from_the_issue_parses() {
        let text = format!(
            "{HEAD}spec:\n  mode: enforce\n  default: deny\n  allow:\n    - {{cidr: 10.0.0.0/8, ports: [53], protocols: [udp, tcp]}}\n  vendors:\n    - name: stripe\n      destinations: [{{cidr: 54.187.174.169/32}}, {{cidr: 54.187.216.72/32}}]\n      ports: [443]\n      protocols: [tcp]\n"
        );
        let doc = one(&text);
        assert_eq!(doc.spec.mode, Some(Mode::Enforce));
        assert_eq!(doc.spec.vendors[0].destinations.len(), 2);
        assert_eq!(doc.spec.allow[0].ports[0], model::PortRange { lo: 53, hi: 53 });
    }

    #[test]
    fn bad_cidr_names_line_column_and_field() {
        let e = err(&format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.300/8\n"));
        assert!(e.starts_with("p.yaml:6:"), "{e}");
        assert!(e.contains("error: spec.allow[0].cidr"), "{e}");
        assert!(e.contains("invalid CIDR `10.0.0.300/8`"), "{e}");
    }

    #[test]
    fn host_bits_are_refused_with_a_suggestion() {
        let e = err(&format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.1/8\n"));
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  allow:\n    - cidr: \"::ffff:10.0.0.0/104\"\n"));
        assert!(e.contains("write `10.0.0.0/8`"), "{e}");
    }

    #[test]
    fn ports_and_ranges() {
        let doc = one(&format!("{HEAD}spec:\n  allow:\n    - {{cidr: \"::1\", ports: [443, \"8000-8100\"]}}\n"));
        let r = &doc.spec.allow[0];
        assert_eq!(r.ports, vec![model::PortRange { lo: 443, hi: 443 }, model::PortRange { lo: 8000, hi: 8100 }]);
        assert_eq!(r.cidr.map(|c| c.0.prefix_len()), Some(128));
        for bad in ["0", "65536", "\"9-3\"", "\"x\""] {
            let e = err(&format!("{HEAD}spec:\n  allow:\n    - {{cidr: 1.1.1.1, ports: [{bad}]}}\n"));
            assert!(e.contains("spec.allow[0].ports[0]"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_fields_and_enums_are_named() {
        let e = err(&format!("{HEAD}spec:\n  mode: enforcing\n"));
        assert!(e.contains("spec.mode") && e.starts_with("p.yaml:5:"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  vendors:\n    - name: a\n      destinations: []\n      port: [1]\n"));
        assert!(e.contains("unknown field `port`"), "{e}");
        let e = err("apiVersion: v2\nkind: EgressPolicy\nmetadata: {name: t}\nspec: {}\n");
        assert!(e.contains("apiVersion") && e.starts_with("p.yaml:1:"), "{e}");
    }

    #[test]
    fn duplicate_vendor_names_both_places_across_documents() {
        let e = err(&format!(
            "{HEAD}spec:\n  vendors:\n    - {{name: a, destinations: [{{cidr: 1.1.1.1}}]}}\n---\n{HEAD}spec:\n  vendors:\n    - name: a\n      destinations: [{{cidr: 2.2.2.2}}]\n"
        ));
        assert!(
            e.starts_with(
                "p.yaml:13:13: error: spec.vendors[0].name: vendor `a` is defined twice: here and at p.yaml:6:14"
            ),
            "{e}"
        );
    }

    #[test]
    fn conflicting_modes_across_documents_are_refused() {
        let e = err(&format!("{HEAD}spec: {{mode: enforce}}\n---\n{HEAD}spec: {{mode: monitor}}\n"));
        assert!(e.contains("conflicts with mode Enforce at p.yaml:4:"), "{e}");
    }

    #[test]
    fn selectors_that_can_never_match_are_refused() {
        let v = |sel: &str| {
            format!("{HEAD}spec:\n  vendors:\n    - name: a\n      destinations: [{{cidr: 1.1.1.1}}]\n      processes: [{sel}]\n")
        };
        assert!(err(&v("{exe: bin/curl}")).contains("not an absolute path"));
        assert!(err(&v("{comm: a-very-long-task-name}")).contains("could never match"));
        assert!(err(&v("{}")).contains("empty selector"));
        assert!(err(&v("{uid: 0, user: root}")).contains("not both"));
        assert!(err(&v("{cgroup: system.slice}")).contains("absolute path under the cgroup2 mount"));
        let e = err(&v("{exe: /usr/bin/curl, uid: x}"));
        assert!(e.contains("spec.vendors[0].processes[0].uid"), "{e}");
    }

    #[test]
    fn vendor_metadata_and_expiry_parse() {
        let doc = one(&format!(
            "{HEAD}spec:\n  vendors:\n    - name: twilio\n      owner: growth-team\n      purpose: SMS one-time codes\n      data: [pii]\n      destinations: [{{cidr: 1.1.1.0/24}}]\n      mode: monitor\n      expires: 2026-12-31\n"
        ));
        let v = &doc.spec.vendors[0];
        assert_eq!(v.owner.as_deref(), Some("growth-team"));
        assert_eq!(v.data[0].0, "pii");
        assert_eq!(v.mode, Some(Mode::Monitor));
        let exp = v.expires.expect("expires");
        assert_eq!(exp.0, time::macros::datetime!(2027-01-01 0:00 UTC));
    }

    #[test]
    fn every_bad_rule_of_a_document_is_reported_with_its_place() {
        let e = err(&format!(
            "{HEAD}spec:\n  mode: enforcing\n  allow:\n    - {{cidr: 10.0.0.1/8}}\n    - {{cidr: 10.0.0.0/8, ports: [0]}}\n  vendors:\n    - {{name: ok, destinations: [{{cidr: 1.1.1.1}}]}}\n    - name: BAD\n      destinations: [{{cidr: 1.1.1.1}}]\n    - {{name: x, destinations: [{{cidr: 1.1.1.1}}], processes: [{{exe: rel/path}}]}}\n"
        ));
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 5, "{e}");
        for (place, field) in [
            ("p.yaml:5:9:", "spec.mode"),
            ("p.yaml:7:14:", "spec.allow[0].cidr"),
            ("p.yaml:8:34:", "spec.allow[1].ports[0]"),
            ("p.yaml:11:13:", "spec.vendors[1].name"),
            ("p.yaml:13:68:", "spec.vendors[2].processes[0].exe"),
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(place) && l.contains(&format!("error: {field}: "))),
                "{place} {field}:\n{e}"
            );
        }
    }

    #[test]
    fn an_empty_trailing_document_is_no_error() {
        let docs = parse("p.yaml", &format!("{HEAD}spec: {{}}\n---\n")).expect("parses");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn domains_and_dns_settings_parse_and_bad_ones_are_named() {
        let doc = one(&format!(
            "{HEAD}spec:\n  dns: {{grace: 2m, unlisted: deny, resolvers: [10.0.0.2, \"::ffff:10.0.0.3\"]}}\n  allow:\n    - {{name: mirror, domain: \"*.Debian.org.\"}}\n  vendors:\n    - name: stripe\n      destinations: [{{domain: api.stripe.com}}, {{domain: \"*.bücher.example\"}}, {{cidr: 1.1.1.1}}]\n"
        ));
        let dns = doc.spec.dns.expect("dns");
        assert_eq!(dns.grace, Some(model::Grace(120)));
        assert_eq!(dns.resolvers[1].0.to_string(), "10.0.0.3");
        assert_eq!(doc.spec.allow[0].domain.as_ref().map(ToString::to_string).as_deref(), Some("*.debian.org"));
        let d = &doc.spec.vendors[0].destinations;
        assert_eq!(d[1].domain.as_ref().map(ToString::to_string).as_deref(), Some("*.xn--bcher-kva.example"));
        let v = |dest: &str| format!("{HEAD}spec:\n  vendors:\n    - name: a\n      destinations: [{dest}]\n");
        let e = err(&v("{domain: \"*\"}"));
        assert!(e.starts_with("p.yaml:7:") && e.contains("spec.vendors[0].destinations[0].domain"), "{e}");
        let e = err(&v("{domain: a..com}"));
        assert!(e.contains("empty label"), "{e}");
        let e = err(&v("{domain: 10.0.0.1}"));
        assert!(e.contains("cidr"), "{e}");
        let e = err(&v("{domain: a.com, cidr: 1.1.1.1}"));
        assert!(e.contains("spec.vendors[0].destinations[0]") && e.contains("not both"), "{e}");
        let e = err(&v("{}"));
        assert!(e.contains("needs `cidr`"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  dns: {{grace: 2d}}\n"));
        assert!(e.contains("spec.dns.grace"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  dns: {{unlisted: block}}\n"));
        assert!(e.contains("spec.dns.unlisted"), "{e}");
        let e = err(&format!("{HEAD}spec: {{dns: {{grace: 5s}}}}\n---\n{HEAD}spec: {{dns: {{grace: 6s}}}}\n"));
        assert!(e.contains("dns settings differ"), "{e}");
        let docs = parse("p.yaml", &v("{domain: \"*.com\"}")).expect("parses");
        let (_, warnings) = merge(&docs).expect("merges");
        assert!(warnings.iter().any(|w| w.message.contains("top-level domain")), "{warnings:?}");
    }

    #[test]
    fn missing_spec_is_named() {
        let e = err("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n");
        assert!(e.contains("missing field `spec`"), "{e}");
    }
}
#[cfg(test)]
mod files_tests;
