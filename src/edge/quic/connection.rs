//! Connections and streams: bytes in, frames to the engine thread, answers
//! out, in order.
//!
//! A connection's peer (name and role) is read once from its client
//! certificate after the handshake; a certificate without a Portcullis
//! identity closes the connection. Each bidirectional stream is one task: it
//! reads frames ([`FrameDecoder`], bounded by `frame_bytes_max`), has the
//! [`Decider`] decide each body in the order read, and writes the answers
//! in the same order. When the client finishes its side and the last answer is
//! written, the task finishes the stream. A bad length prefix is answered
//! `bad_frame`, then the stream is finished and reading stops; the
//! connection goes on.

use crate::edge::quic::frame::{self, FrameDecoder};
use crate::edge::quic::wire::{self, WireCode, WireError};
use crate::gateway::Reply;
use crate::gateway::decider::{Decider, Response, overloaded, refusal, store_failed};
use crate::tls::{Peer, Revoked};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Application error codes on connections and streams (QUIC
/// `CONNECTION_CLOSE` and `RESET_STREAM`/`STOP_SENDING`), as `proto/wire.md`
/// documents them.
pub mod codes {
    /// The connection or stream closed normally.
    pub const DONE: u32 = 0;
    /// The client certificate carries no usable Portcullis identity.
    pub const NO_IDENTITY: u32 = 1;
    /// The service is shutting down: the stream was not read.
    pub const SHUTTING_DOWN: u32 = 2;
    /// A reload's CRL lists the connection's client certificate.
    pub const REVOKED: u32 = 3;
}

/// What every connection and stream task shares.
pub struct Shared {
    pub decider: Arc<Decider>,
    pub frame_bytes_max: usize,
    /// The longest a stream task waits for an await's answer before
    /// answering `deadline` itself: the longest await, plus a margin. Only
    /// a lost timer would hit it.
    pub answer_wait_max: Duration,
    pub connections: AtomicUsize,
    pub connections_max: usize,
    /// The serials the current CRL lists; a reload sends a new set, and
    /// each connection whose certificate it lists closes.
    pub revoked: watch::Receiver<Arc<Revoked>>,
}

/// Held by every stream task: the server waits, at shutdown, until every
/// clone is dropped (tokio's mini-redis pattern).
pub type InFlight = mpsc::Sender<()>;

/// Counts a connection for `connections_max` while it lives.
pub struct ConnectionSlot(Arc<Shared>);

impl ConnectionSlot {
    /// A slot, or `None` when `connections_max` are open.
    pub fn take(shared: &Arc<Shared>) -> Option<ConnectionSlot> {
        let taken = shared
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.connections_max).then_some(n + 1)
            });
        taken.ok().map(|_| ConnectionSlot(shared.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one connection: the handshake, the peer, then its streams until
/// the connection closes or the service shuts down.
pub async fn serve_connection(
    incoming: quinn::Incoming,
    slot: ConnectionSlot,
    in_flight: InFlight,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = slot.0.clone();
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "handshake refused");
            return;
        }
    };
    let peer = match crate::tls::peer_of_connection(&conn) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::info!(%remote, error = %e, "connection closed: no usable identity");
            conn.close(codes::NO_IDENTITY.into(), b"no portcullis identity");
            return;
        }
    };
    tracing::debug!(%remote, client = %peer.name, role = peer.role.as_str(), "connected");
    // Parsed once: the handshake checked the certificate, so it parses.
    let serial = crate::tls::leaf_of_connection(&conn).and_then(|c| crate::tls::serial_of(&c));
    let mut revoked = shared.revoked.clone();
    let mut crl_reloads = serial.is_some();
    // A handshake checked against the CRL just before a reload replaced it.
    if listed(&mut revoked, serial.as_deref()) {
        close_revoked(&conn, remote, &peer);
        return;
    }
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (shared, peer, in_flight) = (shared.clone(), peer.clone(), in_flight.clone());
                    let admitted = shared.decider.admit();
                    tokio::spawn(async move {
                        match admitted {
                            Some(admitted) => {
                                serve_stream(send, recv, &shared, &peer).await;
                                drop(admitted);
                            }
                            None => refuse_overloaded(send, recv, shared.frame_bytes_max).await,
                        }
                        drop(in_flight);
                    });
                }
                Err(e) => {
                    tracing::debug!(%remote, client = %peer.name, reason = %e, "connection closed");
                    break;
                }
            },
            changed = revoked.changed(), if crl_reloads => match changed {
                Ok(()) if listed(&mut revoked, serial.as_deref()) => {
                    close_revoked(&conn, remote, &peer);
                    break;
                }
                Ok(()) => {}
                // The server is gone: shutdown comes next.
                Err(_) => crl_reloads = false,
            },
            () = shutting_down(&mut shutdown) => {
                // No new streams: grant none, and refuse the ones already
                // opened but not yet read. Streams in flight finish.
                conn.set_max_concurrent_bi_streams(0u32.into());
                // Only stream tasks count as in flight from here.
                drop(in_flight);
                refuse_streams(&conn).await;
                break;
            }
        }
    }
    drop(slot);
}

/// Whether the CRL as the last reload left it lists `serial`.
fn listed(revoked: &mut watch::Receiver<Arc<Revoked>>, serial: Option<&[u8]>) -> bool {
    serial.is_some_and(|s| revoked.borrow_and_update().lists(s))
}

/// Closes a connection whose certificate a reload's CRL lists. Streams in
/// flight are cut: the certificate that opened them is no longer trusted.
fn close_revoked(conn: &quinn::Connection, remote: std::net::SocketAddr, peer: &Peer) {
    tracing::info!(%remote, client = %peer.name, "connection closed: its certificate is revoked");
    conn.close(codes::REVOKED.into(), b"certificate revoked");
}

/// Completes when the service starts shutting down (or is gone).
pub async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// After shutdown: refuses streams the client opened before it learned of
/// the shutdown, until the connection closes.
async fn refuse_streams(conn: &quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let _ = recv.stop(codes::SHUTTING_DOWN.into());
        let _ = send.reset(codes::SHUTTING_DOWN.into());
    }
}

/// A stream over `queue_requests_max`: one `overloaded` answer, unread,
/// then the server finishes its side and stops reading (as after a framing
/// error). Nothing on it was applied.
async fn refuse_overloaded(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    frame_bytes_max: usize,
) {
    let mut out = Vec::with_capacity(128);
    let mut body = Vec::with_capacity(192);
    wire::reply_body(&overloaded(), &mut body);
    push_frame(&body, frame_bytes_max, &mut out);
    let _ = recv.stop(codes::DONE.into());
    if send.write_all(&out).await.is_ok() {
        finish(send);
    }
}

/// The most a stream task reads at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: &Shared,
    peer: &Arc<Peer>,
) {
    // Invariant: `ServiceLimits::check` keeps frame_bytes_max within 1..=65536.
    let mut decoder = FrameDecoder::new(shared.frame_bytes_max).expect("a checked frame limit");
    let mut answers = Vec::new();
    let mut out = Vec::new();
    loop {
        let chunk = match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(chunk) => chunk.map(|c| c.bytes),
            // The client reset the stream or the connection is gone:
            // nobody is left to answer.
            Err(_) => return,
        };
        let Some(chunk) = chunk else {
            if let Err(e) = decoder.end() {
                answers.push(Response::Now(bad_frame(e)));
            }
            let _ = write_answers(&mut send, &mut answers, &mut out, shared).await;
            finish(send);
            return;
        };
        let mut rest = &chunk[..];
        loop {
            let used = decoder.push(rest);
            rest = &rest[used..];
            let fatal = read_frames(&mut decoder, peer, shared, &mut answers);
            if write_answers(&mut send, &mut answers, &mut out, shared)
                .await
                .is_err()
            {
                return;
            }
            if fatal {
                // Reading stops; what was answered is delivered.
                let _ = recv.stop(codes::DONE.into());
                finish(send);
                return;
            }
            if rest.is_empty() {
                break;
            }
        }
    }
}

/// Decides every whole frame the decoder holds, in order; true after a
/// bad length prefix (the stream is to be finished).
fn read_frames(
    decoder: &mut FrameDecoder,
    peer: &Peer,
    shared: &Shared,
    answers: &mut Vec<Response>,
) -> bool {
    while let Some(frame) = decoder.next() {
        match frame {
            Ok(body) => {
                let read_at = crate::gateway::clock::monotonic();
                // The body is parsed here, by its edge; the gateway sees a
                // typed request. A body that does not parse is answered at
                // once: it read no state and changed nothing.
                let decided =
                    match wire::parse_request(&body, shared.decider.await_timeout_ms_max()) {
                        Ok(request) => shared.decider.decide(peer, request, read_at),
                        Err(e) => Response::Now(Reply::from(e)),
                    };
                answers.push(decided);
            }
            Err(e) => {
                answers.push(Response::Now(bad_frame(e)));
                return true;
            }
        }
    }
    false
}

fn bad_frame(e: frame::FrameError) -> Reply {
    Reply::from(WireError::from_frame(e))
}

/// Writes `answers` in order, each as soon as it and those before it are
/// ready; a run of ready answers goes out in one write.
async fn write_answers(
    send: &mut quinn::SendStream,
    answers: &mut Vec<Response>,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> Result<(), quinn::WriteError> {
    let mut pending = std::mem::take(answers).into_iter().peekable();
    let mut body = Vec::with_capacity(256);
    while let Some(answer) = pending.next() {
        let reply = match answer {
            Response::Now(reply) => reply,
            Response::Later(rx) => match tokio::time::timeout(shared.answer_wait_max, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => refusal(
                    WireCode::Unavailable,
                    "the service stopped before answering; retry after a pause",
                ),
                Err(_) => refusal(
                    WireCode::Deadline,
                    "no answer within the service's deadline; the request may have been applied",
                ),
            },
            // Acknowledged only once durable; a failed commit is never an
            // allow.
            Response::Durable(ticket, reply) => match ticket.await {
                Ok(()) => reply,
                Err(_) => store_failed(),
            },
        };
        body.clear();
        wire::reply_body(&reply, &mut body);
        push_frame(&body, shared.frame_bytes_max, out);
        let next_waits = matches!(
            pending.peek(),
            Some(Response::Later(_) | Response::Durable(..)) | None
        );
        if next_waits {
            send.write_all(out).await?;
            out.clear();
        }
    }
    Ok(())
}

/// Frames an answer; one that cannot fit the frame limit (a service
/// checks its ruleset's largest decision against the limit before serving
/// it, so none should) is replaced by `unavailable`.
fn push_frame(body: &[u8], frame_bytes_max: usize, out: &mut Vec<u8>) {
    if frame::encode_max(body, frame_bytes_max, out).is_err() {
        let refused = refusal(
            WireCode::Unavailable,
            "the answer is longer than frame_bytes_max",
        );
        let mut body = Vec::with_capacity(192);
        wire::reply_body(&refused, &mut body);
        // Invariant: an error body (at most 8,576 bytes) fits any frame
        // limit the service allows... except a limit under it.
        let _ = frame::encode_max(&body, frame_bytes_max, out);
    }
}

/// Finishes our side. quinn goes on sending (and resending) what was
/// written until the client acknowledges it or the connection closes; the
/// task does not wait for that, since a wake-up per request for the
/// acknowledgement costs more than the rest of the stream's own work. A
/// shutdown lingers before it closes connections instead
/// ([`crate::server::SHUTDOWN_LINGER`]).
fn finish(mut send: quinn::SendStream) {
    let _ = send.finish();
}
