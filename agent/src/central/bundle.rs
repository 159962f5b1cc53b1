//! The policy bundle: one JSON file that carries a release of the policy (its files, by name),
//! a serial that grows with every release, when it was made, and an Ed25519 signature.
//!
//! ```json
//! {"apiVersion": "egress-agent/v1", "kind": "PolicyBundle", "serial": 42,
//!  "created": "2026-05-01T12:00:00Z",
//!  "files": [{"name": "vendors.yaml", "text": "apiVersion: egress-agent/v1\n..."}],
//!  "signature": {"algorithm": "ed25519", "keyId": "3f2a…", "value": "<base64>"}}
//! ```
//!
//! The signature is over [`signed_bytes`]: a fixed header, the serial, `created` and the policy
//! digest (the same SHA-256 that `status` and the audit trail show), one per line. Everything
//! that changes what is enforced, or which release this is, is covered; the JSON layout is not,
//! so a bundle re-indented by some tool still verifies. Keys are PEM files: PKCS#8 for the
//! private key, SubjectPublicKeyInfo for the public one (what `openssl genpkey -algorithm
//! ed25519` and `openssl pkey -pubout` write).

use std::{collections::BTreeSet, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use base64::Engine as _;
use ed25519_dalek::{
    pkcs8::{spki::DecodePublicKey as _, spki::EncodePublicKey as _, DecodePrivateKey as _, EncodePrivateKey as _},
    Signer as _, SigningKey, VerifyingKey,
};
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "egress-agent/v1";
pub const KIND: &str = "PolicyBundle";
pub const ALGORITHM: &str = "ed25519";
/// First line of what is signed: a signature made for anything else never verifies as a bundle.
const HEADER: &str = "egress-agent policy bundle v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bundle {
    pub api_version: String,
    pub kind: String,
    /// Grows with every release: a bundle with a lower serial than the one running is refused.
    pub serial: u64,
    /// RFC 3339; for people (the serial orders releases).
    pub created: String,
    pub files: Vec<BundleFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Signature {
    pub algorithm: String,
    /// [`key_id`] of the key that signed: says which key, when it is not the one configured.
    pub key_id: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub value: String,
}

/// Why a bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a policy bundle: {0}")]
    Malformed(String),
    #[error("the bundle is not signed, and a public key is configured: only signed bundles are accepted")]
    Unsigned,
    #[error("signature algorithm `{0}`: only ed25519 is supported")]
    Algorithm(String),
    /// The bundle names the configured key (its `keyId`, which is not signed itself).
    #[error("the signature does not verify with public key {expected}: the bundle was changed after signing")]
    BadSignature { expected: String },
    #[error("the signature does not verify: the bundle says it is signed by another key ({signed_by}), not public key {expected}")]
    OtherKey { expected: String, signed_by: String },
    #[error("serial {serial} is older than the running bundle's {running}")]
    Older { serial: u64, running: u64 },
    #[error("serial {serial} is the running bundle's, with other content: a new release needs a higher serial")]
    SameSerial { serial: u64 },
    /// Below the highest serial ever accepted here (`central::floor`), whatever runs now.
    #[error("serial {serial} is older than serial {floor}, the highest this agent has accepted ({kept}): refused as a rollback")]
    Rollback { serial: u64, floor: u64, kept: String },
    #[error("serial {serial} was accepted before with other content ({kept}): a new release needs a higher serial")]
    Reused { serial: u64, kept: String },
    #[error("serial {serial} is below policySource.minSerial {min}")]
    BelowMinimum { serial: u64, min: u64 },
}

/// What a verified bundle means for the one running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A newer release: install it.
    Newer,
    /// The release running now.
    Same,
}

impl Bundle {
    /// A bundle of `files` (not signed yet).
    pub fn new(serial: u64, created: String, files: Vec<BundleFile>) -> Self {
        Bundle { api_version: API_VERSION.into(), kind: KIND.into(), serial, created, files, signature: None }
    }

    /// Parses and checks the envelope (not the signature, not the policy).
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let bad = |m: String| Err(BundleError::Malformed(m));
        if b.api_version != API_VERSION {
            return bad(format!("apiVersion `{}`, expected `{API_VERSION}`", b.api_version));
        }
        if b.kind != KIND {
            return bad(format!("kind `{}`, expected `{KIND}`", b.kind));
        }
        if time::OffsetDateTime::parse(&b.created, &time::format_description::well_known::Rfc3339).is_err() {
            return bad(format!("created `{}` is not an RFC 3339 time", b.created));
        }
        if b.files.is_empty() {
            return bad("no policy files".into());
        }
        let mut names = BTreeSet::new();
        for f in &b.files {
            // The digest separates names and texts with NUL bytes: neither may contain one, or
            // two different bundles could have the same digest.
            if f.name.is_empty() || f.name.contains(['\0', '\n']) || f.text.contains('\0') {
                return bad(format!("file name `{}`: empty, or a NUL byte in a name or text", f.name.escape_debug()));
            }
            if !names.insert(f.name.as_str()) {
                return bad(format!("file `{}` twice", f.name));
            }
        }
        Ok(b)
    }

    /// The files as (name, text) pairs, for `policy::load_texts`.
    pub fn texts(&self) -> Vec<(String, String)> {
        self.files.iter().map(|f| (f.name.clone(), f.text.clone())).collect()
    }

    /// The policy's SHA-256, as `status` and the audit trail show it once installed.
    pub fn digest(&self) -> String {
        crate::policy::digest_texts(&self.texts())
    }

    pub fn sign(&mut self, key: &SigningKey) {
        let sig = key.sign(&signed_bytes(self.serial, &self.created, &self.digest()));
        self.signature = Some(Signature {
            algorithm: ALGORITHM.into(),
            key_id: key_id(&key.verifying_key()),
            value: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        });
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BundleError> {
        let sig = self.signature.as_ref().ok_or(BundleError::Unsigned)?;
        if sig.algorithm != ALGORITHM {
            return Err(BundleError::Algorithm(sig.algorithm.clone()));
        }
        let expected = key_id(key);
        let bad = || {
            if sig.key_id == expected {
                BundleError::BadSignature { expected: expected.clone() }
            } else {
                BundleError::OtherKey { expected: expected.clone(), signed_by: sig.key_id.clone() }
            }
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(&sig.value).map_err(|_| bad())?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        // Strict: no malleable signatures or small-order keys.
        key.verify_strict(&signed_bytes(self.serial, &self.created, &self.digest()), &signature).map_err(|_| bad())
    }

    /// Compares with the release running (`running`: its serial and digest).
    pub fn admit(&self, running: Option<(u64, &str)>) -> Result<Admit, BundleError> {
        let Some((serial, digest)) = running else { return Ok(Admit::Newer) };
        match self.serial.cmp(&serial) {
            std::cmp::Ordering::Less => Err(BundleError::Older { serial: self.serial, running: serial }),
            std::cmp::Ordering::Equal if self.digest() == digest => Ok(Admit::Same),
            std::cmp::Ordering::Equal => Err(BundleError::SameSerial { serial: self.serial }),
            std::cmp::Ordering::Greater => Ok(Admit::Newer),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// What is signed: the header, serial, created and policy digest, a line each.
pub fn signed_bytes(serial: u64, created: &str, digest: &str) -> Vec<u8> {
    format!("{HEADER}\nserial {serial}\ncreated {created}\nsha256 {digest}\n").into_bytes()
}

/// A short name for a public key: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    crate::control::audit::sha256_hex(key.as_bytes())[..16].to_owned()
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not {what} PEM file: {message}")]
    Format { path: String, what: &'static str, message: String },
    #[error("{path}: cannot write: {source}")]
    Write { path: String, source: std::io::Error },
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.display().to_string(), source })
}

/// An Ed25519 private key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(&read_text(path)?).map_err(|e| KeyError::Format {
        path: path.display().to_string(),
        what: "an Ed25519 private key (PKCS#8)",
        message: e.to_string(),
    })
}

/// An Ed25519 public key from a PEM file (`-----BEGIN PUBLIC KEY-----`).
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(&read_text(path)?).map_err(|e| KeyError::Format {
        path: path.display().to_string(),
        what: "an Ed25519 public key",
        message: e.to_string(),
    })
}

/// A new key pair from the kernel's random source: `<prefix>.key` (owner-only) and
/// `<prefix>.pub`. Neither may exist already.
pub fn generate(prefix: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf, VerifyingKey), KeyError> {
    let mut secret = [0u8; 32];
    let mut filled = 0;
    while filled < secret.len() {
        // SAFETY: writes at most the rest of `secret`, which is valid for that many bytes.
        let n = unsafe { libc::getrandom(secret[filled..].as_mut_ptr().cast(), secret.len() - filled, 0) };
        if n < 0 {
            let source = std::io::Error::last_os_error();
            if source.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(KeyError::Read { path: "getrandom".into(), source });
        }
        filled += n as usize;
    }
    let key = SigningKey::from_bytes(&secret);
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let fmt = |path: &Path, e: &dyn std::fmt::Display| KeyError::Format {
        path: path.display().to_string(),
        what: "an Ed25519",
        message: e.to_string(),
    };
    // PKCS#8 v1 (the secret alone): what OpenSSL reads and writes for Ed25519.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    let pem = v1.to_pkcs8_pem(Default::default()).map_err(|e| fmt(&private, &e))?;
    let pub_pem = key.verifying_key().to_public_key_pem(Default::default()).map_err(|e| fmt(&public, &e))?;
    for (path, text, mode) in [(&private, pem.as_str(), 0o600), (&public, pub_pem.as_str(), 0o644)] {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|source| KeyError::Write { path: path.display().to_string(), source })?;
    }
    Ok((private, public, key.verifying_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn bundle(serial: u64, text: &str) -> Bundle {
        Bundle::new(
            serial,
            "2026-05-01T12:00:00Z".into(),
            vec![BundleFile { name: "p.yaml".into(), text: text.into() }],
        )
    }

    #[test]
    fn a_signed_bundle_verifies_and_survives_reformatting() {
        let mut b = bundle(7, "x: 1\n");
        b.sign(&key(1));
        b.verify(&key(1).verifying_key()).expect("verifies");
        let compact = serde_json::to_vec(&b).expect("json");
        let back = Bundle::parse(&compact).expect("parses");
        back.verify(&key(1).verifying_key()).expect("verifies after re-encoding");
        assert_eq!(Bundle::parse(b.to_json().as_bytes()).expect("parses"), b);
    }

    #[test]
    fn tampering_another_key_or_no_signature_is_refused() {
        let mut b = bundle(7, "x: 1\n");
        b.sign(&key(1));
        let pk = key(1).verifying_key();
        let changes: [fn(&mut Bundle); 5] = [
            |b: &mut Bundle| b.files[0].text.push('\n'),
            |b: &mut Bundle| b.serial += 1,
            |b: &mut Bundle| b.created = "2026-05-02T12:00:00Z".into(),
            |b: &mut Bundle| b.files[0].name = "q.yaml".into(),
            |b: &mut Bundle| b.files.push(BundleFile { name: "r.yaml".into(), text: String::new() }),
        ];
        for change in changes {
            let mut t = b.clone();
            change(&mut t);
            assert!(matches!(t.verify(&pk), Err(BundleError::BadSignature { .. })), "{t:?}");
        }
        let e = b.verify(&key(2).verifying_key()).expect_err("other key");
        assert!(matches!(e, BundleError::OtherKey { .. }) && e.to_string().contains(&key_id(&pk)), "{e}");
        let mut unsigned = b.clone();
        unsigned.signature = None;
        assert_eq!(unsigned.verify(&pk), Err(BundleError::Unsigned));
        let mut garbled = b.clone();
        if let Some(s) = garbled.signature.as_mut() {
            s.value = "not base64!".into();
        }
        assert!(matches!(garbled.verify(&pk), Err(BundleError::BadSignature { .. })));
    }

    #[test]
    fn signed_bytes_are_fixed() {
        // A change here breaks every bundle signed so far.
        assert_eq!(
            signed_bytes(42, "2026-05-01T12:00:00Z", "ab"),
            b"egress-agent policy bundle v1\nserial 42\ncreated 2026-05-01T12:00:00Z\nsha256 ab\n"
        );
        let b = bundle(1, "t");
        assert_eq!(b.digest(), crate::control::audit::sha256_hex(b"p.yaml\0t\0"));
    }

    #[test]
    fn serials_order_releases() {
        let b = bundle(5, "a");
        let d = b.digest();
        assert_eq!(b.admit(None), Ok(Admit::Newer));
        assert_eq!(b.admit(Some((4, "other"))), Ok(Admit::Newer));
        assert_eq!(b.admit(Some((5, &d))), Ok(Admit::Same));
        assert_eq!(b.admit(Some((5, "other"))), Err(BundleError::SameSerial { serial: 5 }));
        assert_eq!(b.admit(Some((6, &d))), Err(BundleError::Older { serial: 5, running: 6 }));
    }

    #[test]
    fn malformed_envelopes_are_named() {
        let e = |s: &str| Bundle::parse(s.as_bytes()).expect_err(s).to_string();
        assert!(e("{").starts_with("not a policy bundle:"));
        let ok = serde_json::to_value(bundle(1, "a")).expect("json");
        let with = |k: &str, v: serde_json::Value| {
            let mut o = ok.clone();
            o[k] = v;
            o.to_string()
        };
        assert!(e(&with("kind", "EgressPolicy".into())).contains("kind `EgressPolicy`"));
        assert!(e(&with("created", "yesterday".into())).contains("RFC 3339"));
        assert!(e(&with("extra", 1.into())).contains("unknown field `extra`"));
        assert!(e(&with("files", serde_json::json!([]))).contains("no policy files"));
        let twice = serde_json::json!([{"name": "a", "text": ""}, {"name": "a", "text": ""}]);
        assert!(e(&with("files", twice)).contains("twice"));
        assert!(e(&with("files", serde_json::json!([{"name": "a\u{0}", "text": ""}]))).contains("NUL"));
        assert!(e(&with("serial", (-1).into())).contains("serial") || e(&with("serial", (-1).into())).contains("u64"));
    }

    #[test]
    fn generated_keys_round_trip_through_pem_files() {
        let dir = std::env::temp_dir().join(format!("ea-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (private, public, pk) = generate(&dir.join("k")).expect("generate");
        let sk = read_signing_key(&private).expect("private");
        assert_eq!(sk.verifying_key(), pk);
        assert_eq!(read_verifying_key(&public).expect("public"), pk);
        assert!(generate(&dir.join("k")).is_err(), "never overwrites a key");
        let e = read_verifying_key(&private).expect_err("a private key is no public key").to_string();
        assert!(e.contains("not an Ed25519 public key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
