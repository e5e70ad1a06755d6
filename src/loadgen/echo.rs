//! A bare quinn echo server: the baseline the gateway is measured against.
//!
//! It has the gateway's TLS ([`tls::quinn_server_config`] on the files of a
//! `certs dev` directory, client certificates required) and its QUIC
//! transport ([`quic_transport`] of the same limits), and speaks the wire
//! contract's framing, but decides nothing: each request frame is answered
//! with a frame holding the same bytes, in order, and each stream is
//! finished once the client has finished its side. The difference between
//! the two is then what the gateway's own work costs.
//!
//! The server runs on a runtime of its own, on its own threads, so a test
//! or the load generator can start it from inside or outside an async
//! context, and stopping it never drops a runtime inside another.

use crate::client::AnswerReader;
use crate::edge::quic::frame::encode_max;
use crate::server::{ServiceLimits, quic_transport};
use crate::tls::{self, ServerFiles, TlsError};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a stopping server waits for its connections to close.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Why the echo server did not start.
#[derive(Debug)]
pub enum EchoError {
    Tls(TlsError),
    /// The runtime, thread or socket could not be made.
    Io(std::io::Error),
    /// The server's thread ended before it said where it listens.
    Died,
}

impl fmt::Display for EchoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EchoError::Tls(e) => write!(f, "echo server TLS: {e}"),
            EchoError::Io(e) => write!(f, "echo server: {e}"),
            EchoError::Died => f.write_str("echo server: its thread ended while starting"),
        }
    }
}

impl std::error::Error for EchoError {}

/// A running echo server. Dropping it asks the server to stop;
/// [`EchoHandle::stop`] also waits until it has.
#[derive(Debug)]
pub struct EchoHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoHandle {
    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread. Blocks briefly: call it
    /// outside an async context, or accept a short block.
    pub fn stop(mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        self.signal();
    }
}

/// Starts an echo server on `127.0.0.1:0` with the TLS files of `tls_dir`
/// and the default limits, and returns its address.
pub fn start(tls_dir: &Path) -> Result<(SocketAddr, EchoHandle), EchoError> {
    start_with(tls_dir, &ServiceLimits::default())
}

/// [`start`] with other limits (a test may want one stream per
/// connection), on a runtime with one worker per core.
pub fn start_with(
    tls_dir: &Path,
    limits: &ServiceLimits,
) -> Result<(SocketAddr, EchoHandle), EchoError> {
    let mut config =
        tls::quinn_server_config(&ServerFiles::in_dir(tls_dir, None)).map_err(EchoError::Tls)?;
    config.transport_config(Arc::new(quic_transport(limits)));
    let frame_bytes_max = limits.frame_bytes_max;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .thread_name("echo-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(EchoError::Io(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                let bound = quinn::Endpoint::server(config, listen)
                    .and_then(|ep| ep.local_addr().map(|a| (ep, a)));
                match bound {
                    Ok((endpoint, addr)) => {
                        let _ = ready_tx.send(Ok(addr));
                        serve(endpoint, stop_rx, frame_bytes_max).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(EchoError::Io(e)));
                    }
                }
            });
        })
        .map_err(EchoError::Io)?;
    let addr = ready_rx.recv().map_err(|_| EchoError::Died)??;
    Ok((
        addr,
        EchoHandle {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    ))
}

/// Accepts connections until told to stop, then closes the endpoint.
async fn serve(endpoint: quinn::Endpoint, mut stop: oneshot::Receiver<()>, frame_bytes_max: usize) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    tokio::spawn(connection(incoming, frame_bytes_max));
                }
                None => break,
            },
        }
    }
    endpoint.close(0u32.into(), b"stopping");
    let _ = tokio::time::timeout(STOP_WAIT, endpoint.wait_idle()).await;
}

/// Serves one connection's streams, each in a task of its own, until the
/// connection ends. A failed handshake just ends here.
async fn connection(incoming: quinn::Incoming, frame_bytes_max: usize) {
    let Ok(conn) = incoming.await else {
        return;
    };
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(echo_stream(send, recv, frame_bytes_max));
    }
}

/// Answers each frame of one stream with the same body, in order, then
/// finishes the stream once the client has finished its side. A framing
/// error ends the stream as the gateway would (its answer aside): finish
/// and stop reading.
async fn echo_stream(mut send: quinn::SendStream, recv: quinn::RecvStream, frame_bytes_max: usize) {
    let mut reader = AnswerReader::new(recv, frame_bytes_max);
    let mut out = Vec::with_capacity(512);
    while let Ok(Some(body)) = reader.next_frame().await {
        out.clear();
        // The body came through a decoder with the same limit, so it fits.
        if encode_max(&body, frame_bytes_max, &mut out).is_err() {
            break;
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
