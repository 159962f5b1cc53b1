//! Policy files as read from disk: directories expanded to their `*.yaml`/`*.yml` files, and
//! each file read within bounds, so a mistaken or hostile path cannot make the agent read
//! without end. Only regular files are read (a symlink to one is fine): a device (`/dev/zero`)
//! never ends and opening a FIFO waits for a writer. The size is checked before reading, and no
//! more than the cap (and one byte) is read even if the file grows meanwhile.

use std::{
    fmt,
    fs::{self, Metadata, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use super::{locate::Pos, Place, PolicyError, Problem};

/// The largest policy file read, by default (`policyFileMaxBytes`, `--policy-file-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;

/// The cap in force. Set once at start, before any policy is read, from the flag or the
/// configuration; every later read (reloads, `check`, `policy sign`) uses it, so it is not
/// threaded through every caller of `policy::load`.
static MAX_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_BYTES);

pub fn set_max_bytes(n: u64) {
    MAX_BYTES.store(n, Relaxed);
}

pub fn max_bytes() -> u64 {
    MAX_BYTES.load(Relaxed)
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    /// `what`: a FIFO, a character device … (with the link's target when it is a symlink).
    #[error("{what}, not a regular file: only regular files are read")]
    NotRegular { what: String },
    /// `size`: what the file said; None when it grew past the cap while being read.
    #[error("{}", match .size {
        Some(size) => format!("{size} bytes, over the limit of {max}"),
        None => format!("over the limit of {max} bytes (larger than its size said when it was opened)"),
    })]
    TooLarge { size: Option<u64>, max: u64 },
    /// The text is not UTF-8: the place of the first bad byte.
    #[error("not UTF-8: byte 0x{byte:02x} cannot start or continue a character here; the file must be UTF-8 text")]
    NotUtf8 { pos: Pos, byte: u8 },
}

/// What a file that is not a regular one is, for messages.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// `path` names a symlink: ` (a symbolic link to TARGET)`, for messages.
fn link_note(path: &Path) -> String {
    match fs::read_link(path) {
        Ok(t) => format!(" (a symbolic link to {})", t.display()),
        Err(_) => String::new(),
    }
}

fn regular(path: &Path, m: &Metadata) -> Result<(), ReadError> {
    if m.is_file() {
        return Ok(());
    }
    Err(ReadError::NotRegular { what: format!("{}{}", kind(m), link_note(path)) })
}

/// The bytes of the regular file at `path` (symlinks followed), at most `max`.
pub fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // Checked before opening: opening a FIFO waits for a writer.
    regular(path, &fs::metadata(path)?)?;
    // Swapped for a FIFO since: O_NONBLOCK keeps the open from waiting, and the check of what
    // was opened refuses it.
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let m = f.metadata()?;
    regular(path, &m)?;
    if m.len() > max {
        return Err(ReadError::TooLarge { size: Some(m.len()), max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
    // Growing meanwhile (or a file whose size says nothing, as in procfs): one byte past the
    // cap tells, and no more is read.
    f.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { size: None, max });
    }
    Ok(bytes)
}

/// [`read_bytes`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, max)?).map_err(|e| {
        let bytes = e.as_bytes();
        let good = e.utf8_error().valid_up_to();
        ReadError::NotUtf8 { pos: utf8_pos(&bytes[..good]), byte: bytes[good] }
    })
}

/// The line and column (in characters, as the parsers count; both from 1) just after `valid`.
fn utf8_pos(valid: &[u8]) -> Pos {
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
    // `valid` is UTF-8 up to here by construction.
    let column = std::str::from_utf8(&valid[line_start..]).map_or(0, |s| s.chars().count()) + 1;
    Pos { line, column }
}

impl ReadError {
    /// As a policy error: a bad byte is a problem at its place, the rest name the file.
    pub fn into_policy(self, path: &Path) -> PolicyError {
        let name = path.display().to_string();
        match self {
            ReadError::Io(source) => PolicyError::Read { path: name, source },
            ReadError::NotUtf8 { pos, .. } => {
                let message = self.to_string();
                PolicyError::Invalid(vec![Problem::error(
                    Place { file: name, pos, field: "(document)".into() },
                    message,
                )])
            }
            ReadError::TooLarge { .. } => PolicyError::File {
                path: name,
                message: format!("{self} (raise policyFileMaxBytes or --policy-file-max-bytes)"),
            },
            ReadError::NotRegular { .. } => PolicyError::File { path: name, message: self.to_string() },
        }
    }
}

/// A file a directory holds that is not read, named in a warning.
fn skipped(path: &Path, why: impl fmt::Display) -> Problem {
    Problem::warning(
        Place { file: path.display().to_string(), pos: Pos::default(), field: "(file)".into() },
        format!("{why}: not read; the policy is loaded without it"),
    )
}

/// Policy files to read: files as given, directories expanded to their `*.yaml`/`*.yml` files
/// (sorted, hidden ones skipped, so a ConfigMap's `..data` internals are not read twice); and a
/// warning for each entry of a directory that has a policy file's name and cannot be read as
/// one (a broken symlink, a FIFO, a subdirectory …).
///
/// Warnings, not errors: the other files load, and the one that cannot be read would not be
/// read either way; refusing would only leave the previous policy in force (on reload) or none
/// at all (at start), and would break a Kubernetes ConfigMap update, whose removed keys stay
/// behind as broken links for a moment. The cost: a missing file that reserved a vendor's
/// destinations to its processes leaves them to the `default` verdict; `check` and the log
/// name it.
pub fn expand(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<Problem>), PolicyError> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let meta = fs::metadata(p).map_err(|source| PolicyError::Read { path: name.clone(), source })?;
        if !meta.is_dir() {
            // A FIFO or a device named on its own is refused when read (read_all).
            out.push(p.clone());
            continue;
        }
        let rd = fs::read_dir(p).map_err(|source| PolicyError::Read { path: name.clone(), source })?;
        let mut files = Vec::new();
        let mut not_read = Vec::new();
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    not_read.push(skipped(p, format_args!("an entry of this directory cannot be listed ({e})")));
                    continue;
                }
            };
            let f = entry.path();
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name.starts_with('.') || !(file_name.ends_with(".yaml") || file_name.ends_with(".yml")) {
                continue;
            }
            match fs::metadata(&f) {
                Ok(m) if m.is_file() => files.push(f),
                Ok(m) => not_read.push(skipped(&f, format_args!("{}{}", kind(&m), link_note(&f)))),
                Err(e) => match fs::read_link(&f) {
                    Ok(target) => not_read
                        .push(skipped(&f, format_args!("a broken symbolic link (to {}: {e})", target.display()))),
                    Err(_) => not_read.push(skipped(&f, format_args!("cannot be read ({e})"))),
                },
            }
        }
        not_read.sort_by(|a, b| a.place.file.cmp(&b.place.file));
        if files.is_empty() {
            let skipped: Vec<String> = not_read.iter().map(|w| format!("{}: {}", w.place.file, w.message)).collect();
            return Err(PolicyError::Empty {
                path: name,
                skipped: if skipped.is_empty() { String::new() } else { format!("; {}", skipped.join("; ")) },
            });
        }
        files.sort();
        out.extend(files);
        warnings.extend(not_read);
    }
    Ok((out, warnings))
}

/// Policy texts: each file's name (its path) and text, in order.
pub type Texts = Vec<(String, String)>;

/// Reads every file `paths` expands to, and the warnings of [`expand`].
pub fn read_all(paths: &[PathBuf], max: u64) -> Result<(Texts, Vec<Problem>), PolicyError> {
    let (names, warnings) = expand(paths)?;
    let mut files = Vec::new();
    for f in names {
        let text = read_text(&f, max).map_err(|e| e.into_policy(&f))?;
        files.push((f.display().to_string(), text));
    }
    Ok((files, warnings))
}
