//! The QUIC endpoint: the UDP socket bound with the hand-built server
//! configuration (`crate::tls`: mutual TLS, no 0-RTT), the transport
//! settings every connection gets, and the accept loop that holds
//! connections to `connections_max`.

use super::connection::{self, ConnectionSlot, Shared, shutting_down};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The limits QUIC enforces for the service, each with its unit; read from
/// the service's configuration, where each is documented and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// Bidirectional streams a client may have open at once on one
    /// connection.
    pub streams_per_connection_max: u32,
    /// A connection with no traffic for this long is closed. At most an
    /// hour (checked by the configuration).
    pub idle_timeout_ms: u64,
    /// The longest frame body, which sizes the flow-control windows.
    pub frame_bytes_max: usize,
}

/// The transport settings of every connection, the echo baseline's too.
pub fn transport(limits: &QuicLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.streams_per_connection_max.into());
    t.max_concurrent_uni_streams(0u32.into());
    // The wire contract has no datagrams: none are accepted, so no peer
    // can make the server buffer them (quinn's default keeps 1.25 MB a
    // connection for them).
    t.datagram_receive_buffer_size(None);
    // Invariant: the configuration keeps idle_timeout_ms far below QUIC's
    // 2^62 limit.
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
            .expect("idle_timeout_ms is checked to at most an hour"),
    ));
    // One stream may hold a whole largest frame and the next one's length.
    let stream_window = 2 * (limits.frame_bytes_max as u32 + 4);
    t.stream_receive_window(stream_window.into());
    // A connection's streams together: two largest frames, or 256 KiB, so
    // that what `connections_max` connections may make the server buffer
    // is bounded (256 MiB at the defaults).
    let conn_window = (stream_window * 2).max(256 << 10);
    t.receive_window(conn_window.into());
    t.send_window(u64::from(conn_window));
    t
}

/// Why the endpoint could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// The address is in use, not local, or not permitted.
    Socket {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// Not called inside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Socket { addr, error } => write!(f, "cannot bind quic={addr}: {error}"),
            BindError::NoRuntime => f.write_str("no async runtime for QUIC"),
        }
    }
}

impl std::error::Error for BindError {}

/// Binds the endpoint at `addr` with `server_config`.
pub fn bind(
    addr: SocketAddr,
    server_config: quinn::ServerConfig,
) -> Result<quinn::Endpoint, BindError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|error| BindError::Socket { addr, error })?;
    let runtime = quinn::default_runtime().ok_or(BindError::NoRuntime)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config.max_udp_payload_size(1452).ok();
    quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
        .map_err(|error| BindError::Socket { addr, error })
}

/// Accepts connections until shutdown: over `connections_max` a
/// connection is refused in the handshake (QUIC `CONNECTION_REFUSED`).
pub async fn accept(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    in_flight: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            () = shutting_down(&mut shutdown) => break,
        };
        let Some(slot) = ConnectionSlot::take(&shared) else {
            tracing::debug!(remote = %incoming.remote_address(), "connection refused: connections_max");
            incoming.refuse();
            continue;
        };
        tokio::spawn(connection::serve_connection(
            incoming,
            slot,
            in_flight.clone(),
            shutdown.clone(),
        ));
    }
}
