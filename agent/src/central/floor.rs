//! The serial floor: the lowest release of the policy source this agent still accepts.
//!
//! Comparing with the running bundle is not enough: at boot nothing runs yet, and the cache that
//! holds the last release can be lost (deleted, corrupt, an empty state directory). Whoever can
//! serve the source could then replay an older bundle — validly signed, but replaced since, say
//! one that still allowed a vendor revoked after — and have it accepted: a rollback. So the
//! highest serial ever accepted, with its digest, is kept in a small file of its own
//! (`STATE/policy-serial.json`, written atomically like every state file, see `statefile`),
//! raised with every bundle accepted and never lowered. At start the floor is the highest of that
//! file, the cached bundle (once it verifies: [`Floor::accepted`] runs for it as for any) and
//! `policySource.minSerial`. A file that cannot be used is reported, never read as 0; the cache
//! then gives the floor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::bundle::{Bundle, BundleError};
use crate::statefile;

/// The floor's file in the state directory.
pub const FLOOR_FILE: &str = "policy-serial.json";
const FLOOR_KIND: &str = "policy-serial";
const FLOOR_VERSION: u32 = 1;

/// The file's content. `source` and `accepted` are for people: the floor holds whatever the
/// source, since one signing key's serials are one sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    serial: u64,
    sha256: String,
    source: String,
    accepted: String,
}

/// What sets the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing yet: no release accepted, no `minSerial`.
    None,
    /// The highest release accepted: its digest (the same serial with other content is refused).
    Accepted { sha256: String },
    /// `policySource.minSerial`, above every release accepted.
    Minimum,
}

#[derive(Debug)]
pub struct Floor {
    serial: u64,
    origin: Origin,
    /// `STATE/policy-serial.json`; `None` without a state directory (the floor lasts this run).
    file: Option<PathBuf>,
    /// False when the file exists but cannot be read: it is left as it is, not overwritten with
    /// a floor that may be lower than what it holds.
    writable: bool,
}

impl Floor {
    /// The floor at start: the file in `state_dir` (if any) and `min_serial`. The cached bundle
    /// raises it once it is accepted.
    pub fn load(state_dir: Option<&Path>, min_serial: Option<u64>) -> Self {
        let mut f = Floor { serial: 0, origin: Origin::None, file: None, writable: true };
        if let Some(dir) = state_dir {
            let path = dir.join(FLOOR_FILE);
            match statefile::load::<Stored>(&path, FLOOR_KIND, FLOOR_VERSION) {
                Ok(statefile::Loaded::Read(s)) => {
                    (f.serial, f.origin) = (s.serial, Origin::Accepted { sha256: s.sha256 })
                }
                Ok(statefile::Loaded::Absent) => {}
                Ok(statefile::Loaded::SetAside { reason, moved_to }) => {
                    error!(file = %path.display(), reason, moved_to = %moved_to.display(), "the policy serial floor is unusable; set aside: the floor is the cached bundle's serial (with no cache, an older signed bundle would be accepted) until a bundle is accepted");
                }
                Err(e) => {
                    error!(file = %path.display(), error = %e, "the policy serial floor is unreadable; left as it is and not updated: the floor is the cached bundle's serial (with no cache, an older signed bundle would be accepted)");
                    f.writable = false;
                }
            }
            f.file = Some(path);
        }
        if let Some(min) = min_serial.filter(|m| *m > f.serial) {
            (f.serial, f.origin) = (min, Origin::Minimum);
        }
        f
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// `accepted`, `minSerial` or `None`, for `status`.
    pub fn origin(&self) -> Option<&'static str> {
        match self.origin {
            Origin::None => None,
            Origin::Accepted { .. } => Some("accepted"),
            Origin::Minimum => Some("minSerial"),
        }
    }

    /// Refuses a bundle below the floor, or at it with other content.
    pub fn admit(&self, b: &Bundle) -> Result<(), BundleError> {
        let kept =
            || self.file.as_ref().map_or_else(|| "in memory: no state directory".into(), |p| p.display().to_string());
        match &self.origin {
            Origin::None => Ok(()),
            Origin::Minimum if b.serial < self.serial => {
                Err(BundleError::BelowMinimum { serial: b.serial, min: self.serial })
            }
            Origin::Minimum => Ok(()),
            Origin::Accepted { .. } if b.serial < self.serial => {
                Err(BundleError::Rollback { serial: b.serial, floor: self.serial, kept: kept() })
            }
            Origin::Accepted { sha256 } if b.serial == self.serial && b.digest() != *sha256 => {
                Err(BundleError::Reused { serial: b.serial, kept: kept() })
            }
            Origin::Accepted { .. } => Ok(()),
        }
    }

    /// Raises the floor to an accepted release (from `source`) and keeps it in the file; never
    /// lowers it.
    pub fn accepted(&mut self, serial: u64, sha256: &str, source: &str) {
        let raised = serial > self.serial || (serial == self.serial && !matches!(self.origin, Origin::Accepted { .. }));
        if !raised {
            return;
        }
        (self.serial, self.origin) = (serial, Origin::Accepted { sha256: sha256.to_owned() });
        let Some(path) = self.file.as_ref().filter(|_| self.writable) else { return };
        let stored = Stored { serial, sha256: sha256.to_owned(), source: source.to_owned(), accepted: super::now() };
        if let Err(e) = statefile::save(path, FLOOR_KIND, FLOOR_VERSION, &stored) {
            warn!(file = %path.display(), serial, error = %e, "the policy serial floor could not be saved: were the cache lost too, an older signed bundle would be accepted at the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::bundle::BundleFile;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ea-floor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn bundle(serial: u64, text: &str) -> Bundle {
        Bundle::new(
            serial,
            "2026-05-01T12:00:00Z".into(),
            vec![BundleFile { name: "p.yaml".into(), text: text.into() }],
        )
    }

    #[test]
    fn without_a_file_nothing_is_refused_and_the_first_release_accepted_is_kept() {
        let d = dir("missing");
        let mut f = Floor::load(Some(&d), None);
        assert_eq!((f.serial(), f.origin()), (0, None));
        assert_eq!(f.admit(&bundle(1, "a")), Ok(()));
        f.accepted(5, &bundle(5, "a").digest(), "https://h/b");
        let again = Floor::load(Some(&d), None);
        assert_eq!((again.serial(), again.origin()), (5, Some("accepted")));
        let e = again.admit(&bundle(3, "a")).expect_err("older");
        assert!(matches!(e, BundleError::Rollback { serial: 3, floor: 5, .. }), "{e}");
        assert!(e.to_string().contains(&d.join(FLOOR_FILE).display().to_string()), "names the file: {e}");
        assert_eq!(again.admit(&bundle(5, "a")), Ok(()), "the release accepted");
        assert!(matches!(again.admit(&bundle(5, "b")), Err(BundleError::Reused { serial: 5, .. })));
        assert_eq!(again.admit(&bundle(6, "b")), Ok(()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_floor_is_never_lowered() {
        let d = dir("lower");
        let mut f = Floor::load(Some(&d), None);
        f.accepted(7, "d7", "s");
        f.accepted(4, "d4", "s");
        f.accepted(7, "other", "s");
        assert_eq!(f.origin, Origin::Accepted { sha256: "d7".into() });
        let again = Floor::load(Some(&d), None);
        assert_eq!((again.serial, again.origin), (7, Origin::Accepted { sha256: "d7".into() }));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_not_read_as_zero_and_the_cache_then_sets_the_floor() {
        let d = dir("corrupt");
        let path = d.join(FLOOR_FILE);
        std::fs::write(&path, b"{\"kind\":\"policy-serial\",\"version\":1,\"data\":{\"serial\":").expect("write");
        let mut f = Floor::load(Some(&d), None);
        assert_eq!((f.serial(), f.origin()), (0, None), "nothing known: the cache decides");
        assert!(!path.exists(), "set aside");
        let aside = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("policy-serial.json.bad-"));
        assert!(aside, "kept for a person to look at");
        // The cached bundle (serial 5) is accepted at start: the file is written anew.
        f.accepted(5, "d5", "s");
        assert_eq!(Floor::load(Some(&d), None).serial(), 5);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_above_the_cache_refuses_the_cache() {
        let d = dir("above");
        Floor::load(Some(&d), None).accepted(9, &bundle(9, "new").digest(), "s");
        // The cache held serial 8 (its write failed after 9 was accepted, or it was replaced).
        let mut f = Floor::load(Some(&d), None);
        assert!(matches!(f.admit(&bundle(8, "old")), Err(BundleError::Rollback { serial: 8, floor: 9, .. })));
        // A cache at the floor is accepted and changes nothing.
        assert_eq!(f.admit(&bundle(9, "new")), Ok(()));
        f.accepted(9, &bundle(9, "new").digest(), "s");
        assert_eq!(Floor::load(Some(&d), None).serial(), 9);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn min_serial_refuses_below_it_until_a_release_passes_it() {
        let d = dir("min");
        let mut f = Floor::load(Some(&d), Some(42));
        assert_eq!((f.serial(), f.origin()), (42, Some("minSerial")));
        let e = f.admit(&bundle(41, "a")).expect_err("below");
        assert_eq!(e, BundleError::BelowMinimum { serial: 41, min: 42 });
        assert!(e.to_string().contains("policySource.minSerial 42"), "{e}");
        assert_eq!(f.admit(&bundle(42, "a")), Ok(()), "any content at the minimum");
        f.accepted(42, "d42", "s");
        assert_eq!(f.origin(), Some("accepted"));
        // A minimum below the file's floor changes nothing.
        let f = Floor::load(Some(&d), Some(10));
        assert_eq!((f.serial(), f.origin()), (42, Some("accepted")));
        // Without a state directory the minimum still holds.
        let f = Floor::load(None, Some(3));
        assert!(matches!(f.admit(&bundle(2, "a")), Err(BundleError::BelowMinimum { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unreadable_file_is_left_as_it_is() {
        let d = dir("unreadable");
        // A directory where the file should be: it can be neither read nor set aside over.
        let path = d.join(FLOOR_FILE);
        std::fs::create_dir(&path).expect("dir");
        std::fs::write(path.join("x"), b"x").expect("occupied");
        let mut f = Floor::load(Some(&d), None);
        assert_eq!(f.serial(), 0);
        f.accepted(3, "d3", "s");
        assert_eq!(f.serial(), 3, "the floor in memory still rises");
        assert!(path.is_dir(), "not overwritten");
        let _ = std::fs::remove_dir_all(&d);
    }
}
