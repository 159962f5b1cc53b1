//! systemd's service notification protocol (`sd_notify(3)`): one datagram of `KEY=VALUE` lines
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with
//! `@`). Without the variable (not started by systemd as `Type=notify`) every call does nothing.
//!
//! The unit (`deploy/systemd/egress-agent.service`) is `Type=notify`: `systemctl start` returns
//! once `READY=1` says the programs are attached and the policy enforcing, and a unit ordered
//! after it starts with egress already controlled. Reloads are framed by `RELOADING=1` (with
//! `MONOTONIC_USEC`, which systemd 253 and later require beside it) and `READY=1`. A failure to
//! notify is logged and never stops the agent: enforcement matters more than the unit's state.

use std::{
    ffi::OsStr,
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
};

use tracing::warn;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// One state change told to the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Ready,
    /// Reloading, at this `CLOCK_MONOTONIC` time in microseconds.
    Reloading {
        monotonic_usec: u64,
    },
    Stopping,
    /// A line `systemctl status` shows.
    Status(String),
}

/// The datagram for `states`: one `KEY=VALUE` line each. A status with a newline would end its
/// line early and be read as another assignment, so newlines become spaces.
pub fn message(states: &[State]) -> String {
    let mut msg = String::new();
    for s in states {
        match s {
            State::Ready => msg.push_str("READY=1\n"),
            State::Reloading { monotonic_usec } => {
                msg.push_str("RELOADING=1\n");
                msg.push_str(&format!("MONOTONIC_USEC={monotonic_usec}\n"));
            }
            State::Stopping => msg.push_str("STOPPING=1\n"),
            State::Status(text) => {
                msg.push_str("STATUS=");
                msg.push_str(&text.replace(['\n', '\r'], " "));
                msg.push('\n');
            }
        }
    }
    msg
}

/// The socket address `$NOTIFY_SOCKET` names: `@name` is in the abstract namespace (the `@`
/// stands for its leading NUL byte), anything else a path.
fn address(value: &OsStr) -> io::Result<SocketAddr> {
    match value.as_bytes() {
        [] => Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is empty")),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        _ => SocketAddr::from_pathname(value),
    }
}

/// Sends `states`; `Ok(false)` when no service manager asked for them.
pub fn send(states: &[State]) -> io::Result<bool> {
    let Some(value) = std::env::var_os(NOTIFY_SOCKET) else { return Ok(false) };
    let addr = address(&value)?;
    let msg = message(states);
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(msg.as_bytes(), &addr)?;
    if sent != msg.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "notification sent in part"));
    }
    Ok(true)
}

fn tell(states: &[State]) {
    if let Err(e) = send(states) {
        let socket = std::env::var_os(NOTIFY_SOCKET).unwrap_or_default();
        warn!(socket = %socket.to_string_lossy(), error = %e, "could not notify the service manager");
    }
}

/// `CLOCK_MONOTONIC` now, in microseconds (what `MONOTONIC_USEC` is compared with).
pub fn monotonic_usec() -> u64 {
    // SAFETY: zeroed timespec is a valid out-buffer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the duration of the call; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The programs are attached and the policy enforcing.
pub fn ready(status: &str) {
    tell(&[State::Ready, State::Status(status.to_owned())]);
}

/// A reload starts; [`ready`] ends it.
pub fn reloading() {
    tell(&[State::Reloading { monotonic_usec: monotonic_usec() }]);
}

/// The agent is stopping (SIGTERM, SIGINT, or the end of `learn`).
pub fn stopping() {
    tell(&[State::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_line_per_assignment() {
        assert_eq!(message(&[State::Ready, State::Status("enforcing p".into())]), "READY=1\nSTATUS=enforcing p\n");
        assert_eq!(
            message(&[State::Reloading { monotonic_usec: 12_345_678 }]),
            "RELOADING=1\nMONOTONIC_USEC=12345678\n"
        );
        assert_eq!(message(&[State::Stopping]), "STOPPING=1\n");
        assert_eq!(message(&[]), "");
    }

    #[test]
    fn a_status_cannot_inject_an_assignment() {
        let m = message(&[State::Status("policy x\nREADY=1\r".into())]);
        assert_eq!(m, "STATUS=policy x READY=1 \n");
        assert_eq!(m.lines().count(), 1);
    }

    #[test]
    fn at_names_an_abstract_socket_and_anything_else_a_path() {
        let a = address(OsStr::new("@egress/notify")).expect("abstract");
        assert_eq!(a.as_abstract_name(), Some(&b"egress/notify"[..]));
        let p = address(OsStr::new("/run/systemd/notify")).expect("path");
        assert_eq!(p.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        assert!(address(OsStr::new("")).is_err());
    }

    #[test]
    fn datagrams_reach_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("ea-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        let name = format!("ea-notify-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name"))
            .expect("bind abstract");
        for (value, sock) in [(path.as_os_str().to_owned(), &rx), (format!("@{name}").into(), &abs)] {
            let addr = address(&value).expect("address");
            let msg = message(&[State::Stopping]);
            UnixDatagram::unbound().expect("socket").send_to_addr(msg.as_bytes(), &addr).expect("send");
            let mut buf = [0u8; 64];
            let n = sock.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..n], b"STOPPING=1\n");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn monotonic_time_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 2_000);
    }
}
