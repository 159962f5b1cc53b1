//! The event stream, to stdout or a file: JSON lines, or a compact line per event for a person
//! at a terminal (`text`).
//!
//! Records are gathered into whole lines and written a batch at a time (after each batch of
//! events, or when 64 KiB are waiting), one `write` for the lot. A file never keeps part of a
//! line: when a write stops short (the disk is full, a quota, the file size limit), the file is
//! cut back to the end of the last whole line written, the records that did not make it are
//! counted as lost, and the next batch starts on a line of its own once there is room again.
//!
//! A file is reopened when it has been renamed or removed (logrotate's default `create` mode):
//! the check runs after each batch is written out, so every line is whole in the old file or the
//! new one, and none is lost. A file path that is a symbolic link is refused unless the sink was
//! told to follow it: the agent runs as root, and a link planted where its log goes would make it
//! append to any file on the host.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::text;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Text,
}

/// Lines waiting past this many bytes are written at once, without waiting for the batch's end.
const BATCH_BYTES: usize = 64 * 1024;

/// Where a sink's lines go.
pub trait Target: Send {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// The length of the file now; None when it is not a file that can be cut back (stdout, a
    /// pipe, a device).
    fn len(&mut self) -> Option<u64>;
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

struct Stdout;

impl Target for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        let n = out.write(buf)?;
        out.flush()?;
        Ok(n)
    }
    fn len(&mut self) -> Option<u64> {
        None
    }
    fn truncate(&mut self, _len: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Target for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }
    fn len(&mut self) -> Option<u64> {
        self.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// What writing out did: records written whole, records lost, and the error that lost them.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: u64,
    pub lost: u64,
    pub error: Option<io::Error>,
}

pub struct Sink {
    out: Box<dyn Target>,
    /// Whole lines waiting to be written, and how many records they are.
    buf: Vec<u8>,
    pending: u64,
    format: Format,
    /// The file written to, the identity (device, inode) of the one open, and whether a symlink
    /// at its path is followed.
    file: Option<(PathBuf, (u64, u64), bool)>,
    /// A failed write could not be cut back: the file may end inside a line, so the next batch
    /// first tries again, and else starts with a newline.
    torn: Option<u64>,
}

/// Opens `path` for appending; a symlink is refused unless `follow`.
fn open_file(path: &Path, follow: bool) -> io::Result<(File, (u64, u64))> {
    let mut o = OpenOptions::new();
    // Owner-only: events name processes and may carry command lines.
    o.create(true).append(true).mode(0o600);
    if !follow {
        o.custom_flags(libc::O_NOFOLLOW);
    }
    let f = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) && path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link, not followed (give the file's own path, or allow it: --events-follow-symlinks, or `followSymlinks: true` on a file sink)",
            )
        } else {
            e
        }
    })?;
    let m = f.metadata()?;
    Ok((f, (m.dev(), m.ino())))
}

impl Sink {
    /// `-` is stdout; anything else a file, appended to (so a restart does not erase history).
    /// `follow`: a symlink at `target` is followed rather than refused.
    pub fn open(target: &Path, format: Format, follow: bool) -> io::Result<Self> {
        if target == Path::new("-") {
            return Ok(Self::with_target(Box::new(Stdout), format));
        }
        let (f, id) = open_file(target, follow)?;
        let mut s = Self::with_target(Box::new(f), format);
        s.file = Some((target.to_owned(), id, follow));
        Ok(s)
    }

    pub fn with_target(out: Box<dyn Target>, format: Format) -> Self {
        Self { out, buf: Vec::with_capacity(BATCH_BYTES), pending: 0, format, file: None, torn: None }
    }

    /// Writes JSON text as a line, whatever the format: for [`super::fanout`]'s fast path,
    /// taken only when no sink needs more than the JSON text.
    pub fn write_json(&mut self, json: &str) -> Outcome {
        self.push_line(json.as_bytes())
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// One record: `json` is `v` as JSON text (the fan-out serializes a record once for all).
    pub fn write_value(&mut self, v: &Value, json: &str) -> Outcome {
        match self.format {
            Format::Json => self.push_line(json.as_bytes()),
            Format::Text => self.push_line(text::line(v).as_bytes()),
        }
    }

    fn push_line(&mut self, line: &[u8]) -> Outcome {
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.pending += 1;
        if self.buf.len() >= BATCH_BYTES {
            return self.write_out();
        }
        Outcome::default()
    }

    /// Writes the waiting lines with as few writes as the target takes. On an error, a file is
    /// cut back to the last whole line written; a target that cannot be cut keeps the rest of the
    /// line it was in to finish it first next time. Records not written whole are lost.
    fn write_out(&mut self) -> Outcome {
        if self.buf.is_empty() {
            return Outcome::default();
        }
        // A newline put before the records (not one of them).
        let mut lead = 0;
        if let Some(len) = self.torn {
            if self.out.truncate(len).is_ok() {
                self.torn = None;
            } else {
                // Still not cut: end the broken line, so what follows is whole lines.
                self.buf.insert(0, b'\n');
                lead = 1;
            }
        }
        let mut done = 0;
        let error = loop {
            if done == self.buf.len() {
                break None;
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let Some(error) = error else {
            let written = self.pending;
            self.buf.clear();
            self.pending = 0;
            self.torn = None;
            return Outcome { written, lost: 0, error: None };
        };
        // Up to the end of the last whole line written.
        let whole = self.buf[..done].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let newlines = self.buf[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
        let written = newlines.saturating_sub(lead).min(self.pending);
        if lead == 1 && whole > 0 {
            // The broken line is ended now.
            self.torn = None;
        }
        let partial = done - whole;
        if partial > 0 {
            match self.out.len() {
                Some(len) => {
                    let cut = len.saturating_sub(partial as u64);
                    if self.out.truncate(cut).is_err() {
                        self.torn = Some(cut);
                    }
                }
                None => {
                    // Not a file: the line is finished next time, and counts as written then.
                    let end =
                        self.buf[done..].iter().position(|&b| b == b'\n').map_or(self.buf.len(), |i| done + i + 1);
                    let rest = self.buf[done..end].to_vec();
                    let lost = self.pending - written - 1;
                    self.buf = rest;
                    self.pending = 1;
                    return Outcome { written, lost, error: Some(error) };
                }
            }
        }
        let lost = self.pending - written;
        self.buf.clear();
        self.pending = 0;
        Outcome { written, lost, error: Some(error) }
    }

    /// Called after each batch read from the ring buffer, so readers see events promptly; then
    /// reopens the file if it was rotated away.
    pub fn flush(&mut self) -> Outcome {
        let mut outcome = self.write_out();
        if outcome.error.is_some() {
            return outcome;
        }
        if let Err(e) = self.reopen_if_moved() {
            outcome.error = Some(e);
        }
        outcome
    }

    fn reopen_if_moved(&mut self) -> io::Result<()> {
        let Some((path, id, follow)) = &self.file else { return Ok(()) };
        let moved = match std::fs::symlink_metadata(path) {
            // A link in its place is a change too (followed, it names another file, or is refused).
            Ok(m) if m.is_symlink() && *follow => std::fs::metadata(path).map_or(true, |m| (m.dev(), m.ino()) != *id),
            Ok(m) => (m.dev(), m.ino()) != *id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if moved {
            let (path, follow) = (path.clone(), *follow);
            let (f, id) = open_file(&path, follow)?;
            self.out = Box::new(f);
            self.torn = None;
            self.file = Some((path, id, follow));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
