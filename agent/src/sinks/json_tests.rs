use std::{
    io,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::*;

/// A file on a disk with `room` bytes left: a write takes what fits (a short write), then
/// fails with ENOSPC, as a full filesystem does. `cuttable: false` acts as a pipe.
#[derive(Default)]
struct Disk {
    data: Vec<u8>,
    room: usize,
    cuttable: bool,
    truncate_fails: bool,
    writes: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Disk>>);

impl Fake {
    fn new(room: usize, cuttable: bool) -> Self {
        Fake(Arc::new(Mutex::new(Disk { room, cuttable, ..Disk::default() })))
    }
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().expect("lock")
    }
    fn text(&self) -> String {
        String::from_utf8(self.disk().data.clone()).expect("utf-8")
    }
}

impl Target for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.disk();
        d.writes += 1;
        if d.room == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = buf.len().min(d.room);
        d.room -= n;
        d.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn len(&mut self) -> Option<u64> {
        let d = self.disk();
        d.cuttable.then_some(d.data.len() as u64)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut d = self.disk();
        if d.truncate_fails {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let len = len as usize;
        let freed = d.data.len().saturating_sub(len);
        d.data.truncate(len);
        d.room += freed;
        Ok(())
    }
}

fn record(i: usize) -> String {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40))
}

/// Every line whole (JSON), and the file ends with a newline.
fn whole_lines(text: &str) -> Vec<u64> {
    assert!(text.is_empty() || text.ends_with('\n'), "ends inside a line: {text:?}");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole line ({e}): {l:?}"));
            v["n"].as_u64().unwrap_or_else(|| panic!("no n: {l}"))
        })
        .collect()
}

#[test]
fn a_full_disk_never_leaves_part_of_a_line_and_the_lost_records_are_counted() {
    let line = record(0).len() + 1;
    let fake = Fake::new(2 * line + line / 2, true);
    let mut s = Sink::with_target(Box::new(fake.clone()), Format::Json);
    for i in 0..5 {
        assert!(s.write_json(&record(i)).error.is_none(), "buffered");
    }
    let o = s.flush();
    assert_eq!((o.written, o.lost), (2, 3));
    assert_eq!(o.error.as_ref().and_then(io::Error::raw_os_error), Some(libc::ENOSPC));
    assert_eq!(whole_lines(&fake.text()), [0, 1]);
    // Still full: nothing written, nothing half-written.
    s.write_json(&record(5));
    let o = s.flush();
    assert_eq!((o.written, o.lost), (0, 1));
    assert_eq!(whole_lines(&fake.text()), [0, 1]);
    // Room again: whole lines resume.
    fake.disk().room = 10 * line;
    s.write_json(&record(6));
    s.write_json(&record(7));
    let o = s.flush();
    assert_eq!((o.written, o.lost, o.error.is_none()), (2, 0, true));
    assert_eq!(whole_lines(&fake.text()), [0, 1, 6, 7]);
}

#[test]
fn a_batch_is_one_write_and_a_large_one_goes_out_before_the_batch_ends() {
    let fake = Fake::new(usize::MAX, true);
    let mut s = Sink::with_target(Box::new(fake.clone()), Format::Json);
    for i in 0..10 {
        s.write_json(&record(i));
    }
    assert_eq!(fake.disk().writes, 0, "nothing before the batch ends");
    assert_eq!(s.flush().written, 10);
    assert_eq!(fake.disk().writes, 1);
    let mut written = 0;
    for i in 0..2000 {
        written += s.write_json(&record(i)).written;
    }
    assert!(written > 0 && fake.disk().writes > 1, "past 64 KiB the lines go out");
    written += s.flush().written;
    assert_eq!(written, 2000);
    assert_eq!(whole_lines(&fake.text()).len(), 2010);
}

#[test]
fn a_target_that_cannot_be_cut_finishes_the_line_it_was_in() {
    let line = record(0).len() + 1;
    let fake = Fake::new(line + 5, false);
    let mut s = Sink::with_target(Box::new(fake.clone()), Format::Json);
    for i in 0..3 {
        s.write_json(&record(i));
    }
    let o = s.flush();
    // Record 1 is begun: it is kept to be finished; record 2 is lost.
    assert_eq!((o.written, o.lost), (1, 1));
    fake.disk().room = 10 * line;
    s.write_json(&record(3));
    let o = s.flush();
    assert_eq!((o.written, o.lost), (2, 0));
    assert_eq!(whole_lines(&fake.text()), [0, 1, 3]);
}

#[test]
fn a_cut_that_fails_is_tried_again_and_else_the_broken_line_is_ended() {
    let line = record(0).len() + 1;
    let fake = Fake::new(line + 5, true);
    fake.disk().truncate_fails = true;
    let mut s = Sink::with_target(Box::new(fake.clone()), Format::Json);
    s.write_json(&record(0));
    s.write_json(&record(1));
    assert_eq!(s.flush().written, 1);
    fake.disk().room = 10 * line;
    s.write_json(&record(2));
    assert_eq!(s.flush().written, 1);
    // The 5 bytes of record 1 stay, on a line of their own; record 2 is whole after them.
    let text = fake.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!((lines[0], lines[2]), (record(0).as_str(), record(2).as_str()));
    // Once it can be cut, it is.
    let fake = Fake::new(line + 5, true);
    fake.disk().truncate_fails = true;
    let mut s = Sink::with_target(Box::new(fake.clone()), Format::Json);
    s.write_json(&record(0));
    s.write_json(&record(1));
    s.flush();
    fake.disk().truncate_fails = false;
    fake.disk().room = 10 * line;
    s.write_json(&record(2));
    s.flush();
    assert_eq!(whole_lines(&fake.text()), [0, 2]);
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ea-json-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn a_symlink_is_refused_unless_it_is_to_be_followed() {
    let d = dir("link");
    let real = d.join("real.jsonl");
    let link = d.join("events.jsonl");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let e = Sink::open(&link, Format::Json, false).err().expect("refused");
    assert!(e.to_string().contains("a symbolic link, not followed"), "{e}");
    assert!(!real.exists(), "nothing created through the link");
    let mut s = Sink::open(&link, Format::Json, true).expect("followed when asked");
    s.write_json(&record(1));
    assert_eq!(s.flush().written, 1);
    assert_eq!(whole_lines(&std::fs::read_to_string(&real).expect("read")), [1]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_link_put_in_place_of_the_file_is_not_followed_on_reopen() {
    let d = dir("swap");
    let path = d.join("events.jsonl");
    let mut s = Sink::open(&path, Format::Json, false).expect("open");
    s.write_json(&record(1));
    assert!(s.flush().error.is_none());
    std::fs::rename(&path, d.join("events.jsonl.1")).expect("rotate");
    let elsewhere = d.join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
    s.write_json(&record(2));
    let o = s.flush();
    assert_eq!(o.written, 1, "written to the file still open");
    assert!(o.error.is_some_and(|e| e.to_string().contains("symbolic link")));
    assert!(!elsewhere.exists());
    let _ = std::fs::remove_dir_all(&d);
}
