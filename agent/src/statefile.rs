//! Files the agent keeps in its state directory (`--state DIR`): baselines, the inventory.
//!
//! Each is JSON in an envelope naming what it is and its format version. It is written
//! atomically (a temporary file in the same directory, synced, then renamed over the old one), so
//! a crash or a full disk leaves the previous version, never half of one. A file that cannot be
//! read back (corrupt, another tool's, another version) is moved aside with a timestamp, reported,
//! and the agent starts that state afresh: state is advisory and must never stop enforcement.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest state file read back: a bounded state never comes near it, so anything larger is not
/// ours and would only cost memory to parse.
pub const MAX_STATE_BYTES: u64 = 256 << 20;

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    kind: &'a str,
    version: u32,
    data: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    kind: String,
    version: u32,
    data: T,
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded<T> {
    /// No file yet.
    Absent,
    Read(T),
    /// The file was unusable and was moved to `moved_to`; `reason` says why.
    SetAside {
        reason: String,
        moved_to: PathBuf,
    },
}

/// Writes `data` to `path` atomically, owner-only (state names processes and destinations).
pub fn save<T: Serialize>(path: &Path, kind: &str, version: u32, data: &T) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("state path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let bytes = serde_json::to_vec(&EnvelopeOut { kind, version, data }).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a file written by [`save`] with the same `kind` and `version`; anything else is set
/// aside (see the module documentation). Errors only when the file exists but can be neither read
/// nor moved (permissions): the caller reports it and starts afresh without overwriting it.
pub fn load<T: DeserializeOwned>(path: &Path, kind: &str, version: u32) -> io::Result<Loaded<T>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Absent),
        Err(e) => return Err(e),
    };
    let reason = if meta.len() > MAX_STATE_BYTES {
        format!("{} bytes, more than the {MAX_STATE_BYTES} a state file can have", meta.len())
    } else {
        let bytes = fs::read(path)?;
        match serde_json::from_slice::<EnvelopeIn<serde_json::Value>>(&bytes) {
            Err(e) => format!("not a state file: {e}"),
            Ok(env) if env.kind != kind => format!("holds `{}`, not `{kind}`", env.kind),
            Ok(env) if env.version != version => {
                format!("format version {}, this agent reads version {version}", env.version)
            }
            Ok(env) => match serde_json::from_value::<T>(env.data) {
                Ok(v) => return Ok(Loaded::Read(v)),
                Err(e) => format!("corrupt: {e}"),
            },
        }
    };
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let moved_to = path.with_file_name(format!(
        "{}.bad-{stamp}",
        path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    fs::rename(path, &moved_to)?;
    Ok(Loaded::SetAside { reason, moved_to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ea-statefile-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn round_trips_and_sets_aside() {
        let d = dir();
        let p = d.join("thing.json");
        assert!(matches!(load::<Vec<u32>>(&p, "thing", 1).expect("load"), Loaded::Absent));
        save(&p, "thing", 1, &vec![1u32, 2, 3]).expect("save");
        match load::<Vec<u32>>(&p, "thing", 1).expect("load") {
            Loaded::Read(v) => assert_eq!(v, vec![1, 2, 3]),
            other => panic!("expected the saved value, got {other:?}"),
        }
        // Another version: set aside, not read, not fatal.
        match load::<Vec<u32>>(&p, "thing", 2).expect("load") {
            Loaded::SetAside { reason, moved_to } => {
                assert!(reason.contains("version 1"), "{reason}");
                assert!(moved_to.exists() && !p.exists());
            }
            other => panic!("expected set aside, got {other:?}"),
        }
        fs::write(&p, b"{\"kind\":\"thing\",\"version\":1,\"data\":[1,").expect("write");
        assert!(matches!(load::<Vec<u32>>(&p, "thing", 1).expect("load"), Loaded::SetAside { .. }));
        fs::write(&p, b"{\"kind\":\"other\",\"version\":1,\"data\":[1]}").expect("write");
        match load::<Vec<u32>>(&p, "thing", 1).expect("load") {
            Loaded::SetAside { reason, .. } => assert!(reason.contains("`other`"), "{reason}"),
            other => panic!("expected set aside, got {other:?}"),
        }
        let _ = fs::remove_dir_all(&d);
    }
}
