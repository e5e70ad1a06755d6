//! The service's control socket, `DATA/control.sock`: `portcullis backup`
//! asks a running service for a snapshot through it (the service holds the
//! store's file lock, so no other process can open it). It lives in the
//! data directory (mode 0700) and is itself mode 0600: only the service's
//! user reaches it. One request line (at most `CONTROL_LINE_BYTES_MAX`
//! bytes), one answer line; see `store::backup`.

use crate::store::Store;
use crate::store::backup::{CONTROL_SOCKET, control_answer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

/// The longest request line, in bytes (a path and a word).
pub const CONTROL_LINE_BYTES_MAX: u64 = 4096;

/// Binds the control socket in `data`: a socket left by a service that
/// died is replaced; one a live service answers on is refused.
pub fn bind(data: &Path) -> Result<(UnixListener, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = data.join(CONTROL_SOCKET);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!("a service already answers on {}", path.display()));
        }
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
        .unwrap_or_else(|e| format!("error the request failed: {e}"));
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}
