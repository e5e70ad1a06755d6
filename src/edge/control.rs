//! The service's control socket, `DATA/control.sock`: `portcullis backup`
//! asks a running service for a snapshot through it (the service holds the
//! store's file lock, so no other process can open it). It lives in the
//! data directory (mode 0700) and is itself mode 0600: only the service's
//! user reaches it. One request line (at most `CONTROL_LINE_BYTES_MAX`
//! bytes), one answer line; see `store::backup`.

use crate::store::Store;
use crate::store::backup::{CONTROL_SOCKET, control_answer};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

/// The longest request line, in bytes (a path and a word).
pub const CONTROL_LINE_BYTES_MAX: u64 = 4096;

/// Why the control socket could not be bound, or a request on it not
/// answered. Each variant carries the socket's path where there is one.
#[derive(Debug)]
pub enum ControlError {
    /// A live service already answers on the socket: two services must not
    /// share a data directory.
    InUse { path: PathBuf },
    /// The socket a dead service left could not be removed.
    RemoveStale { path: PathBuf, source: io::Error },
    /// The socket could not be bound.
    Bind { path: PathBuf, source: io::Error },
    /// The socket could not be made mode 0600.
    Permissions { path: PathBuf, source: io::Error },
    /// The task answering a request panicked or was cancelled; the client
    /// gets `error` and this message.
    Request(tokio::task::JoinError),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::InUse { path } => {
                write!(f, "a service already answers on {}", path.display())
            }
            ControlError::RemoveStale { path, source }
            | ControlError::Bind { path, source }
            | ControlError::Permissions { path, source } => {
                write!(f, "{}: {source}", path.display())
            }
            ControlError::Request(e) => write!(f, "the request failed: {e}"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::InUse { .. } => None,
            ControlError::RemoveStale { source, .. }
            | ControlError::Bind { source, .. }
            | ControlError::Permissions { source, .. } => Some(source),
            ControlError::Request(e) => Some(e),
        }
    }
}

/// Binds the control socket in `data`: a socket left by a service that
/// died is replaced; one a live service answers on is refused.
pub fn bind(data: &Path) -> Result<(UnixListener, PathBuf), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let path = data.join(CONTROL_SOCKET);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(ControlError::InUse { path });
        }
        if let Err(source) = std::fs::remove_file(&path) {
            return Err(ControlError::RemoveStale { path, source });
        }
    }
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(source) => return Err(ControlError::Bind { path, source }),
    };
    if let Err(source) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        return Err(ControlError::Permissions { path, source });
    }
    Ok((listener, path))
}

/// Answers control requests until shutdown, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(answer(stream, store.clone()));
            }
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: tokio::net::UnixStream, store: Arc<dyn Store>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(CONTROL_LINE_BYTES_MAX));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let line = line.trim_end().to_string();
    tracing::info!(request = %line.split(' ').next().unwrap_or(""), "control request");
    let reply = tokio::task::spawn_blocking(move || control_answer(store.as_ref(), &line))
        .await
        .unwrap_or_else(|e| format!("error {}", ControlError::Request(e)));
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket a live service answers on is refused, naming the socket;
    /// the `String` form for `server` has the same text.
    #[test]
    fn a_socket_a_service_answers_on_is_refused() {
        let data = std::env::temp_dir().join(format!("portcullis-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("a scratch directory");
        let path = data.join(CONTROL_SOCKET);
        let _live = std::os::unix::net::UnixListener::bind(&path).expect("bound");
        let err = bind(&data).expect_err("in use");
        assert!(
            matches!(&err, ControlError::InUse { path: p } if *p == path),
            "{err:?}"
        );
        let want = format!("a service already answers on {}", path.display());
        assert_eq!(err.to_string(), want);
    }
}
