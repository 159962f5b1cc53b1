//! Policy: the file format, its validation, and its compilation into the kernel's tables.

pub mod compile;
pub mod model;

use std::path::Path;

pub use compile::CompiledPolicy;
pub use model::PolicyDoc;

/// The policy the agent runs when none is given: monitor mode, so it refuses nothing on any host.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../policies/default.yaml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded default policy>";

/// A policy that cannot be used, with the place that makes it so.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A syntax or value error found while parsing.
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid { file: String, line: usize, column: usize, field: String, message: String },
    /// The policy is valid but does not fit the kernel's maps.
    #[error("{file}: policy exceeds a kernel limit: {message}")]
    Limit { file: String, message: String },
}

/// Reads and parses one policy file.
pub fn load_file(path: &Path) -> Result<PolicyDoc, PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { file: file.clone(), source })?;
    parse(&file, &text)
}

/// Parses a policy document, reporting the first problem with file, line, column and field path.
pub fn parse(file: &str, text: &str) -> Result<PolicyDoc, PolicyError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, PolicyDoc>(de).map_err(|err| {
        let field = match err.path().to_string() {
            p if p == "." || p.is_empty() => "(document)".to_owned(),
            p => p,
        };
        let inner = err.into_inner();
        let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
        // serde_yaml_ng appends " at line L column C" to its messages; the prefix says it already.
        let message = strip_location(&inner.to_string());
        PolicyError::Invalid { file: file.to_owned(), line, column, field, message }
    })
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{model::Mode, *};

    fn err(text: &str) -> String {
        match parse("p.yaml", text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const HEAD: &str = "apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n";

    #[test]
    fn embedded_default_is_valid_monitor() {
        let doc = parse(EMBEDDED_NAME, EMBEDDED_DEFAULT).expect("embedded default parses");
        assert_eq!(doc.spec.mode, Mode::Monitor);
    }

    #[test]
    fn example_from_the_issue_parses() {
        let text = format!(
            "{HEAD}spec:\n  mode: enforce\n  default: deny\n  allow:\n    - {{cidr: 10.0.0.0/8, ports: [53], protocols: [udp, tcp]}}\n  vendors:\n    - name: stripe\n      destinations: [{{cidr: 54.187.174.169/32}}, {{cidr: 54.187.216.72/32}}]\n      ports: [443]\n      protocols: [tcp]\n"
        );
        let doc = parse("p.yaml", &text).expect("parses");
        assert_eq!(doc.spec.mode, Mode::Enforce);
        assert_eq!(doc.spec.vendors.0[0].destinations.len(), 2);
        assert_eq!(doc.spec.allow[0].ports[0], model::PortRange { lo: 53, hi: 53 });
    }

    #[test]
    fn bad_cidr_names_line_column_and_field() {
        let text = format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.300/8\n");
        let e = err(&text);
        assert!(e.starts_with("p.yaml:6:"), "{e}");
        assert!(e.contains("spec.allow[0].cidr"), "{e}");
        assert!(e.contains("invalid CIDR `10.0.0.300/8`"), "{e}");
    }

    #[test]
    fn host_bits_are_refused_with_a_suggestion() {
        let e = err(&format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.1/8\n"));
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
    }

    #[test]
    fn ports_and_ranges() {
        let doc = parse("p", &format!("{HEAD}spec:\n  allow:\n    - {{cidr: \"::1\", ports: [443, \"8000-8100\"]}}\n")).expect("parses");
        let r = &doc.spec.allow[0];
        assert_eq!(r.ports, vec![model::PortRange { lo: 443, hi: 443 }, model::PortRange { lo: 8000, hi: 8100 }]);
        assert_eq!(r.cidr.0.prefix_len(), 128);
        for bad in ["0", "65536", "\"9-3\"", "\"x\""] {
            let e = err(&format!("{HEAD}spec:\n  allow:\n    - {{cidr: 1.1.1.1, ports: [{bad}]}}\n"));
            assert!(e.contains("spec.allow[0].ports[0]"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_fields_and_enums_are_named() {
        let e = err(&format!("{HEAD}spec:\n  mode: enforcing\n"));
        assert!(e.contains("spec.mode") && e.contains("p.yaml:5:"), "{e}");
        let e = err(&format!("{HEAD}spec:\n  vendors:\n    - name: a\n      destinations: []\n      port: [1]\n"));
        assert!(e.contains("unknown field `port`"), "{e}");
        let e = err("apiVersion: v2\nkind: EgressPolicy\nmetadata: {name: t}\nspec: {}\n");
        assert!(e.contains("apiVersion") && e.starts_with("p.yaml:1:"), "{e}");
    }

    #[test]
    fn duplicate_vendor_is_refused() {
        let e = err(&format!(
            "{HEAD}spec:\n  vendors:\n    - {{name: a, destinations: [{{cidr: 1.1.1.1}}]}}\n    - {{name: a, destinations: [{{cidr: 2.2.2.2}}]}}\n"
        ));
        assert!(e.contains("vendor `a` is defined twice"), "{e}");
        assert!(e.contains("spec.vendors"), "{e}");
    }

    #[test]
    fn missing_spec_is_named() {
        let e = err("apiVersion: egress-agent/v1\nkind: EgressPolicy\nmetadata: {name: t}\n");
        assert!(e.contains("missing field `spec`"), "{e}");
    }
}
