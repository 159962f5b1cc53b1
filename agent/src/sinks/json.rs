//! The event stream, to stdout or a file: JSON lines, or a compact line per event for a person
//! at a terminal (`text`).
//!
//! A file is reopened when it has been renamed or removed (logrotate's default `create` mode):
//! the check runs after each batch is written out, when the buffer ends on a line boundary, so
//! every line is whole in the old file or the new one, and none is lost.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
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

pub struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    format: Format,
    /// The file written to, and the identity (device, inode) of the one open.
    file: Option<(PathBuf, (u64, u64))>,
}

fn open_file(path: &Path) -> io::Result<(File, (u64, u64))> {
    // Owner-only: events name processes and may carry command lines.
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let m = f.metadata()?;
    Ok((f, (m.dev(), m.ino())))
}

impl Sink {
    /// `-` is stdout; anything else a file, appended to (so a restart does not erase history).
    pub fn open(target: &Path, format: Format) -> io::Result<Self> {
        if target == Path::new("-") {
            let w: Box<dyn Write + Send> = Box::new(io::stdout());
            return Ok(Self { out: BufWriter::with_capacity(64 * 1024, w), format, file: None });
        }
        let (f, id) = open_file(target)?;
        Ok(Self { out: BufWriter::with_capacity(64 * 1024, Box::new(f)), format, file: Some((target.to_owned(), id)) })
    }

    /// Writes JSON text as a line, whatever the format: for [`super::fanout`]'s fast path,
    /// taken only when no sink needs more than the JSON text.
    pub fn write_json(&mut self, json: &str) -> io::Result<()> {
        self.out.write_all(json.as_bytes())?;
        self.out.write_all(b"\n")
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// One record: `json` is `v` as JSON text (the fan-out serializes a record once for all).
    pub fn write_value(&mut self, v: &Value, json: &str) -> io::Result<()> {
        match self.format {
            Format::Json => self.out.write_all(json.as_bytes())?,
            Format::Text => self.out.write_all(text::line(v).as_bytes())?,
        }
        self.out.write_all(b"\n")
    }

    /// Called after each batch read from the ring buffer, so readers see events promptly; then
    /// reopens the file if it was rotated away.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let Some((path, id)) = &self.file else { return Ok(()) };
        let moved = match std::fs::metadata(path) {
            Ok(m) => (m.dev(), m.ino()) != *id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if moved {
            let path = path.clone();
            let (f, id) = open_file(&path)?;
            self.out = BufWriter::with_capacity(64 * 1024, Box::new(f));
            self.file = Some((path, id));
        }
        Ok(())
    }
}
