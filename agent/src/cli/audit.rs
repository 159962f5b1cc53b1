//! `egress-agent audit verify FILE`: checks an audit trail's hash chain (see `control::audit`).

use std::{path::Path, process::ExitCode};

use crate::control::audit::{verify_to, Verdict};

pub fn audit_verify(file: &Path, last: Option<&str>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    match verify_to(&text, last) {
        Verdict::Intact { records } => {
            println!("{}: {records} records, chain intact", file.display());
            ExitCode::SUCCESS
        }
        Verdict::Broken { line, problem } => {
            println!("{}:{line}: {problem}; the records before it are intact", file.display());
            ExitCode::FAILURE
        }
        Verdict::MissingTail { records, hash } => {
            println!(
                "{}: the record {hash} is not in the file: records were deleted from its end (the {records} records in it are intact)",
                file.display()
            );
            ExitCode::FAILURE
        }
        Verdict::TruncatedTail { records, line } => {
            println!(
                "{}:{line}: truncated tail (a record cut short, as by a crash while writing); the {records} records before it are intact",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}
