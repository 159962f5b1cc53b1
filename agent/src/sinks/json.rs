//! JSON lines, to stdout or a file: one object per event.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use serde::Serialize;

pub struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    /// `-` is stdout; anything else a file, appended to (so a restart does not erase history).
    pub fn open(target: &Path) -> io::Result<Self> {
        let w: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(io::stdout())
        } else {
            // Owner-only: events name processes and may carry command lines.
            Box::new(OpenOptions::new().create(true).append(true).mode(0o600).open(target)?)
        };
        Ok(Self { out: BufWriter::with_capacity(64 * 1024, w) })
    }

    pub fn write<T: Serialize>(&mut self, rec: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, rec).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Called after each batch read from the ring buffer, so readers see events promptly.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
