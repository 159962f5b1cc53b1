//! The audit trail: what the agent did that changes what is allowed (agent start and stop,
//! every policy installed with its SHA-256, every reload refused, automated blocks), as JSON
//! lines in `<state>/audit.jsonl`, each carrying the hash of the one before it. Editing, deleting,
//! inserting or reordering a record breaks the chain at that record, which `audit verify`
//! names; a record cut short at the end (a crash mid-write) is reported as a truncated tail.
//!
//! A record's hash is the SHA-256 of its own JSON line without the `hash` field (the fields in
//! the order written: `seq`, `ts`, `kind`, `detail`, `prev`), hex-encoded. The first record's
//! `prev` is 64 zeros. The chain continues across restarts: a new agent reads the last record.

use std::{
    fs::OpenOptions,
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The file in the state directory.
pub const FILE: &str = "audit.jsonl";
/// `prev` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says, in the order it is hashed.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    seq: u64,
    ts: String,
    kind: String,
    detail: serde_json::Value,
    prev: String,
}

#[derive(Debug, Deserialize)]
struct Line {
    #[serde(flatten)]
    body: Body,
    hash: String,
}

fn hash_of(body: &Body) -> io::Result<String> {
    let bytes = serde_json::to_vec(body).map_err(io::Error::other)?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of some bytes, hex-encoded (policies' digests in records).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The writer: appends records to the chain.
pub struct AuditLog {
    path: PathBuf,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens `dir/audit.jsonl`, continuing the chain from its last complete record.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(FILE);
        let (mut seq, mut prev) = (0, GENESIS.to_owned());
        match std::fs::File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line?;
                    // A line cut short by a crash is left as it is (verify reports it); the chain
                    // continues from the last record that reads.
                    if let Ok(l) = serde_json::from_str::<Line>(&line) {
                        seq = l.body.seq;
                        prev = l.hash;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // A torn last line must not glue itself to the next record.
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.last().is_some_and(|&b| b != b'\n') {
                OpenOptions::new().append(true).open(&path)?.write_all(b"\n")?;
            }
        }
        Ok(AuditLog { path, seq, prev })
    }

    /// Appends one record; written and synced before this returns.
    /// Appends a record; returns its sequence number and hash (sent with the sinks' copies, so
    /// an off-host copy anchors the chain's end: see [`verify_to`]).
    pub fn append(&mut self, kind: &str, detail: serde_json::Value) -> io::Result<(u64, String)> {
        let ts =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let body = Body { seq: self.seq + 1, ts, kind: kind.to_owned(), detail, prev: self.prev.clone() };
        let hash = hash_of(&body)?;
        let mut line = serde_json::to_value(&body).map_err(io::Error::other)?;
        if let Some(o) = line.as_object_mut() {
            o.insert("hash".to_owned(), serde_json::Value::String(hash.clone()));
        }
        let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
        text.push(b'\n');
        // Owner-only: the trail names policies, vendors and processes.
        let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        f.write_all(&text)?;
        f.sync_data()?;
        self.seq = body.seq;
        self.prev = hash.clone();
        Ok((body.seq, hash))
    }
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record is intact and chained.
    Intact { records: u64 },
    /// The chain holds up to `line` (1-based), where `problem` says what is wrong.
    Broken { line: usize, problem: String },
    /// The chain holds, but the last line is cut short (a crash mid-write).
    TruncatedTail { records: u64, line: usize },
    /// The chain holds, but the record an off-host copy says was written (`hash`) is not in it:
    /// records were deleted from the end.
    MissingTail { records: u64, hash: String },
}

/// [`verify`], and, given the hash of a record known to have been written (the last one a sink
/// received), checks that the file still has it: deleting the newest records leaves a chain
/// that is intact on its own.
pub fn verify_to(text: &str, last: Option<&str>) -> Verdict {
    let v = verify(text);
    let (Verdict::Intact { records }, Some(want)) = (&v, last) else { return v };
    let present = text.lines().filter_map(|l| serde_json::from_str::<Line>(l).ok()).any(|l| l.hash == want);
    if present {
        v
    } else {
        Verdict::MissingTail { records: *records, hash: want.to_owned() }
    }
}

/// Checks a trail: each record's hash, its link to the one before, and its sequence number.
pub fn verify(text: &str) -> Verdict {
    let (mut prev, mut seq) = (GENESIS.to_owned(), 0u64);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let last = n == lines.len();
        let complete = raw.ends_with('\n');
        let line = raw.trim_end_matches('\n');
        if line.is_empty() {
            continue;
        }
        let parsed: Line = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(_) if last && !complete => return Verdict::TruncatedTail { records: seq, line: n },
            Err(e) => return Verdict::Broken { line: n, problem: format!("not an audit record ({e})") },
        };
        match hash_of(&parsed.body) {
            Ok(h) if h == parsed.hash => {}
            _ => return Verdict::Broken { line: n, problem: "edited: its hash does not match its contents".into() },
        }
        if parsed.body.prev != prev || parsed.body.seq != seq + 1 {
            let problem = if parsed.body.seq > seq + 1 {
                format!("record {} follows record {seq}: records deleted before it", parsed.body.seq)
            } else if parsed.body.seq <= seq {
                format!("record {} after record {seq}: records reordered or inserted", parsed.body.seq)
            } else {
                format!("record {} does not chain to the one before it: a record inserted or replaced", parsed.body.seq)
            };
            return Verdict::Broken { line: n, problem };
        }
        prev = parsed.hash;
        seq = parsed.body.seq;
    }
    Verdict::Intact { records: seq }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn trail(n: u64) -> (PathBuf, String) {
        let dir =
            std::env::temp_dir().join(format!("ea-audit-{}-{:?}-{n}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut log = AuditLog::open(&dir).expect("open");
        for i in 0..n {
            log.append("policy_installed", json!({"generation": i, "sha256": "ab"})).expect("append");
        }
        let text = std::fs::read_to_string(dir.join(FILE)).expect("read");
        (dir, text)
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn join(l: &[String]) -> String {
        l.iter().map(|s| format!("{s}\n")).collect()
    }

    #[test]
    fn an_intact_trail_verifies_and_continues_across_restarts() {
        let (dir, text) = trail(3);
        assert_eq!(verify(&text), Verdict::Intact { records: 3 });
        let mut log = AuditLog::open(&dir).expect("reopen");
        log.append("agent_stop", json!({})).expect("append");
        let text = std::fs::read_to_string(dir.join(FILE)).expect("read");
        assert_eq!(verify(&text), Verdict::Intact { records: 4 });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_its_line() {
        let (dir, text) = trail(5);
        let l = lines(&text);
        let edited = join(&[l[0].clone(), l[1].replace("\"generation\":1", "\"generation\":7"), l[2].clone()]);
        assert!(matches!(verify(&edited), Verdict::Broken { line: 2, ref problem } if problem.contains("edited")));
        let deleted = join(&[l[0].clone(), l[2].clone(), l[3].clone()]);
        assert!(matches!(verify(&deleted), Verdict::Broken { line: 2, ref problem } if problem.contains("deleted")));
        let reordered = join(&[l[0].clone(), l[2].clone(), l[1].clone()]);
        assert!(matches!(verify(&reordered), Verdict::Broken { line: 2, .. }));
        let swapped = join(&[l[0].clone(), l[1].clone(), l[3].clone(), l[2].clone()]);
        assert!(matches!(verify(&swapped), Verdict::Broken { line: 3, ref problem } if problem.contains("deleted")));
        let inserted = join(&[l[0].clone(), l[1].clone(), l[1].clone(), l[2].clone()]);
        assert!(
            matches!(verify(&inserted), Verdict::Broken { line: 3, ref problem } if problem.contains("inserted")),
            "{:?}",
            verify(&inserted)
        );
        // A forged record with a correct hash of its own still does not chain.
        let mut forged: serde_json::Value = serde_json::from_str(&l[2]).expect("json");
        forged["prev"] = json!(GENESIS);
        let body: Body = serde_json::from_value(forged.clone()).expect("body");
        forged["hash"] = json!(hash_of(&body).expect("hash"));
        let with_forged = join(&[l[0].clone(), l[1].clone(), forged.to_string()]);
        assert!(matches!(verify(&with_forged), Verdict::Broken { line: 3, ref problem } if problem.contains("chain")));
        // Deleting the newest records leaves an intact chain: only an off-host copy of the last
        // hash shows it.
        let last: serde_json::Value = serde_json::from_str(&l[4]).expect("json");
        let cut = join(&l[..3]);
        assert_eq!(verify(&cut), Verdict::Intact { records: 3 });
        let hash = last["hash"].as_str().expect("hash");
        assert_eq!(verify_to(&cut, Some(hash)), Verdict::MissingTail { records: 3, hash: hash.to_owned() });
        assert_eq!(verify_to(&text, Some(hash)), Verdict::Intact { records: 5 });
        let truncated = format!("{}{}", join(&l[..4]), &l[4][..l[4].len() / 2]);
        assert_eq!(verify(&truncated), Verdict::TruncatedTail { records: 4, line: 5 });
        let _ = std::fs::remove_dir_all(dir);
    }
}
