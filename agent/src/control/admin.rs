//! The admin socket: a Unix stream socket (default `/run/egress-agent/admin.sock`, mode 0600,
//! root-only) that `egress-agent status | reload | block | unblock` talk to. One JSON request
//! line, one JSON answer line.
//!
//! Who may use it is decided twice: the file's mode keeps other users from connecting at all, and
//! the peer's credentials (SO_PEERCRED) are checked on every connection, so a socket whose mode
//! was loosened by hand still refuses them. Requests are bounded in size and time, and are
//! carried out by the agent's event loop, one at a time, between two batches of events.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

pub const DEFAULT_SOCKET: &str = "/run/egress-agent/admin.sock";
/// A request is a short JSON line; anything longer is refused unread.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client that does not finish its request in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the event loop's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty structs rather than unit variants, so that unknown fields are refused for them too.
    Status {},
    Reload {},
    /// `vendor` null and `all` true: everything but the infrastructure `allow` rules.
    Block {
        #[serde(default)]
        vendor: Option<String>,
        #[serde(default)]
        all: bool,
        /// Seconds; null: until lifted.
        #[serde(default)]
        for_s: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    Unblock {
        #[serde(default)]
        vendor: Option<String>,
        #[serde(default)]
        all: bool,
    },
}

/// A request for the event loop, with whom it came from and where the answer goes.
pub struct Command {
    pub request: Request,
    pub uid: u32,
    pub reply: oneshot::Sender<serde_json::Value>,
}

/// The answer to a request the agent could not carry out.
pub fn refusal(error: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": error.to_string()})
}

/// The listening socket; removed when dropped (the agent stops).
pub struct AdminSocket {
    path: PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` and serves it on the runtime; commands arrive on `tx`. Refused when another
/// agent answers on the path (a stale socket file is replaced).
pub fn serve(path: &Path, tx: mpsc::Sender<Command>) -> io::Result<AdminSocket> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another agent serves this admin socket"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let socket = AdminSocket { path: path.to_owned() };
    // Bound with the process umask: tightened before anyone is accepted (the loop runs later).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(client(stream, own_uid, tx.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    info!(socket = %path.display(), "admin socket ready");
    Ok(socket)
}

async fn client(mut stream: UnixStream, own_uid: u32, tx: mpsc::Sender<Command>) {
    let answer = match serve_one(&mut stream, own_uid, &tx).await {
        Ok(v) => v,
        Err(e) => refusal(e),
    };
    let mut line = answer.to_string();
    line.push('\n');
    let _ = tokio::time::timeout(READ_TIMEOUT, stream.write_all(line.as_bytes())).await;
}

async fn serve_one(
    stream: &mut UnixStream,
    own_uid: u32,
    tx: &mpsc::Sender<Command>,
) -> Result<serde_json::Value, String> {
    let cred = stream.peer_cred().map_err(|e| format!("cannot read the client's credentials: {e}"))?;
    let uid = cred.uid();
    if uid != 0 && uid != own_uid {
        warn!(uid, pid = ?cred.pid(), "admin socket: refused a client that is not root");
        return Err(format!("refused: uid {uid} is not root; the admin socket is root-only"));
    }
    let mut line = String::new();
    let mut reader = BufReader::new(&mut *stream).take(MAX_REQUEST);
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err("no request within 5 s".into()),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => {
            return Err(format!("the request must be one line of at most {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => {}
    }
    let request: Request = serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))?;
    let (reply, answer) = oneshot::channel();
    tx.send(Command { request, uid, reply }).await.map_err(|_| "the agent is stopping".to_owned())?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err("the agent is stopping".into()),
        Err(_) => Err("the agent did not answer within 30 s".into()),
    }
}

/// The client side: sends `request` to the agent on `path` and returns its answer.
pub fn ask(path: &Path, request: &Request) -> Result<serde_json::Value, String> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::PermissionDenied => " (the admin socket is root-only)",
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => " (is the agent running? see --admin)",
            _ => "",
        };
        format!("cannot connect to {}: {e}{hint}", path.display())
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| format!("sending to {}: {e}", path.display()))?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer).map_err(|e| format!("reading the answer: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("the agent's answer is not JSON ({e}): {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r = Request::Block {
            vendor: Some("stripe".into()),
            all: false,
            for_s: Some(1800),
            reason: Some("leak".into()),
        };
        let s = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<Request>(&s).expect("back"), r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"verb":"status"}"#).expect("status"), Request::Status {});
        assert!(serde_json::from_str::<Request>(r#"{"verb":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"verb":"format_disk"}"#).is_err());
    }
}
