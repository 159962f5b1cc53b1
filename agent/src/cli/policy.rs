//! `egress-agent policy keygen|sign|verify`: the signed bundles of central policy (see
//! `central`), and the `run` flags of a policy source.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};

use crate::{
    central::{
        bundle::{self, Bundle, BundleFile},
        SourceOptions,
    },
    policy, EXIT_USAGE,
};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Make an Ed25519 key pair: PREFIX.key (private, PKCS#8 PEM, owner-only) and PREFIX.pub
    /// (public, PEM) for the agents' `policySource.publicKey`.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Check policy files (as `check` does), then write them as one bundle signed with KEY.
    Sign {
        /// The private key (PKCS#8 PEM, as `keygen` or `openssl genpkey -algorithm ed25519` writes).
        #[arg(long)]
        key: PathBuf,
        /// The release number: higher than every bundle signed before (agents refuse a lower one).
        #[arg(long)]
        serial: u64,
        /// When the release was made, RFC 3339 (default: now).
        #[arg(long)]
        created: Option<String>,
        /// Where the bundle is written (`-`: stdout).
        #[arg(long)]
        out: PathBuf,
        /// Policy files or directories of `*.yaml` files, merged into one policy.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check a bundle's signature with a public key, and its policy; print its serial, date and
    /// digest. Exits 0 when it is valid, 1 otherwise.
    Verify {
        /// The public key (PEM).
        #[arg(long)]
        pubkey: PathBuf,
        bundle: PathBuf,
    },
}

/// The `run` flags of a policy source (`--policy https://…`); each overrides `policySource:`.
#[derive(Args, Clone, Default)]
pub struct PolicySourceArgs {
    /// With a policy bundle URL: the Ed25519 public key (PEM) bundles must be signed with.
    #[arg(long, value_name = "FILE")]
    pub policy_key: Option<PathBuf>,
    /// How often the policy bundle URL is polled (default 60s).
    #[arg(long, value_parser = super::duration)]
    pub policy_interval: Option<Duration>,
    /// Longest a fetch of the bundle may take, body included (default 10s).
    #[arg(long, value_parser = super::duration)]
    pub policy_timeout: Option<Duration>,
    /// Largest bundle read (default 8388608 bytes).
    #[arg(long)]
    pub policy_max_bytes: Option<u64>,
    /// Refuse every bundle with a lower serial, whatever the state directory remembers.
    #[arg(long, value_name = "N")]
    pub policy_min_serial: Option<u64>,
}

impl PolicySourceArgs {
    pub fn options(&self) -> SourceOptions {
        SourceOptions {
            public_key: self.policy_key.clone(),
            interval: self.policy_interval,
            timeout: self.policy_timeout,
            max_bytes: self.policy_max_bytes,
            min_serial: self.policy_min_serial,
        }
    }
}

pub fn policy_command(cmd: &PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Keygen { out } => keygen(out),
        PolicyCommand::Sign { key, serial, created, out, paths } => sign(key, *serial, created.as_deref(), out, paths),
        PolicyCommand::Verify { pubkey, bundle } => verify(pubkey, bundle),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    match bundle::generate(out) {
        Ok((private, public, key)) => {
            println!("private key: {} (keep it off the agents' hosts)", private.display());
            println!(
                "public key:  {} (id {}): policySource.publicKey on every agent",
                public.display(),
                bundle::key_id(&key)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn sign(
    key: &std::path::Path,
    serial: u64,
    created: Option<&str>,
    out: &std::path::Path,
    paths: &[PathBuf],
) -> ExitCode {
    let key = match bundle::read_signing_key(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let created = match created {
        Some(c) => c.to_owned(),
        None => crate::events::rfc3339(
            time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000_000 * 1_000_000_000,
        ),
    };
    let files = match policy::expand(paths) {
        Ok((files, skipped)) => {
            skipped.iter().for_each(|w| eprintln!("{w}"));
            files
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Named by file name alone: where the files were on the signing host is no business of the
    // agents'.
    let mut entries = Vec::new();
    for f in &files {
        let name = f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned());
        match policy::files::read_text(f, policy::files::max_bytes()) {
            Ok(text) => entries.push(BundleFile { name, text }),
            Err(e) => {
                eprintln!("{}", e.into_policy(f));
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let mut b = Bundle::new(serial, created, entries);
    // What the agents will do with it: parse the envelope as they do, and load the policy.
    if let Err(e) = Bundle::parse(b.to_json().as_bytes()) {
        eprintln!("{e}");
        return ExitCode::from(EXIT_USAGE);
    }
    match policy::load_texts(&b.texts(), time::OffsetDateTime::now_utc(), &policy::resolve::HostResolver::new()) {
        Ok((_, _, warnings)) => warnings.iter().for_each(|w| eprintln!("{w}")),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("not signed: the policy does not load");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    b.sign(&key);
    let json = b.to_json();
    let written = if out.as_os_str() == "-" {
        print!("{json}");
        Ok(())
    } else {
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, out))
    };
    if let Err(e) = written {
        eprintln!("{}: cannot write: {e}", out.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "signed: serial {}, created {}, sha256 {}, key {}, {} file(s)",
        b.serial,
        b.created,
        b.digest(),
        bundle::key_id(&key.verifying_key()),
        b.files.len()
    );
    ExitCode::SUCCESS
}

fn verify(pubkey: &std::path::Path, path: &std::path::Path) -> ExitCode {
    let key = match bundle::read_verifying_key(pubkey) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let b = match Bundle::parse(&bytes).and_then(|b| b.verify(&key).map(|()| b)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    println!("signature: ok (key {})", bundle::key_id(&key));
    println!("serial:    {}", b.serial);
    println!("created:   {}", b.created);
    println!("sha256:    {}", b.digest());
    println!("files:     {}", b.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));
    match policy::load_texts(&b.texts(), time::OffsetDateTime::now_utc(), &policy::resolve::HostResolver::new()) {
        Ok((merged, _, warnings)) => {
            warnings.iter().for_each(|w| eprintln!("{w}"));
            println!("policy:    `{}`: ok; mode {:?}, default {:?}", merged.name, merged.mode, merged.default);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            println!("policy:    does not load: agents refuse this bundle");
            ExitCode::FAILURE
        }
    }
}
