//! The Rust client of the QUIC service (`proto/wire.md`): connect with a
//! client certificate, send requests as frames on bidirectional streams,
//! read the answers. `portcullis call`, the load generator and the tests
//! use it.
//!
//! One [`Client`] is one QUIC connection on an endpoint of its own. A
//! request is sent on a stream of its own ([`Client::call`]), or several on
//! one stream ([`Client::pipeline`]); either way the client finishes its
//! side after the last request and reads exactly one answer frame per
//! request, then the server's end of the stream. Every answer is read
//! through [`FrameDecoder`] under `frame_bytes_max`, so what a server sends
//! cannot make the client buffer more than one maximal frame per stream.
//! Nothing that arrives from the network is unwrapped: each failure is a
//! [`ClientError`] naming what broke.

use crate::edge::quic::frame::{FRAME_BYTES_MAX_DEFAULT, FrameDecoder, FrameError, LENGTH_BYTES};
use crate::tls::{self, ClientFiles, Peer, TlsError};
use bytes::{Buf, Bytes};
use clap::Args;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `portcullis call`: send events and print the answers as JSON lines.
#[derive(Args, Debug, Clone)]
pub struct CallOptions {
    /// The service's QUIC address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The directory of `portcullis certs dev` (`ca.pem` and the client's
    /// certificate and key).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Which certificate of the TLS directory to present: client (the
    /// caller role), analyst or admin.
    #[arg(long = "as", default_value = "client")]
    pub as_: String,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Events file (JSON lines), or - for standard input.
    #[arg(default_value = "-")]
    pub events: String,
}

/// How often an otherwise quiet connection sends a QUIC PING. The server
/// closes a connection idle for `idle_timeout_ms` (30 s by default), and a
/// `portcullis call` reading a terminal, or a load generator between runs,
/// may be quiet longer than that.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long a handshake may take. A server that is not there sends
/// nothing back (UDP), and quinn would wait out its idle timeout (30 s)
/// before saying so.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The application error code of a stream the server refused whole while
/// shutting down (`proto/wire.md` section 2): none of its requests applied.
pub const SHUTTING_DOWN: quinn::VarInt = quinn::VarInt::from_u32(2);

/// How long [`Client::close`] waits for the close to reach the server.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The largest chunk read from a stream at once: one maximal frame, so a
/// stream's pending input never exceeds what its decoder may hold.
const READ_CHUNK_BYTES: usize = LENGTH_BYTES + FRAME_BYTES_MAX_DEFAULT;

/// Why a request got no answer. Each variant says which step failed, so a
/// caller can tell a refused certificate from a lost connection from a
/// server that broke the framing.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS files could not be read or used.
    Tls(TlsError),
    /// No UDP socket could be opened for the endpoint.
    Bind(io::Error),
    /// quinn refused to start the connection (a bad server name or address,
    /// a configuration it cannot use): no packet was sent.
    Connect(quinn::ConnectError),
    /// The handshake failed (the server refused the certificate, nothing
    /// answered) or the connection was lost while opening a stream.
    Connection(quinn::ConnectionError),
    /// Writing a request on a stream failed.
    Write(quinn::WriteError),
    /// The stream was already closed when the client finished its side.
    Finish(quinn::ClosedStream),
    /// Reading an answer failed (the stream was reset, the connection lost).
    Read(quinn::ReadError),
    /// An answer broke the framing: a length of 0 or over
    /// `frame_bytes_max`, or the stream ended inside a frame.
    Frame(FrameError),
    /// A request body is longer than `frame_bytes_max`; it was not sent.
    TooLong { len: usize, max: usize },
    /// A request body is empty; a frame holds one JSON object.
    Empty,
    /// The server ended the stream after `got` of the `expected` answers.
    MissingAnswers { expected: usize, got: usize },
    /// The server sent more answer frames than there were requests.
    ExtraAnswer { expected: usize },
    /// An answer is not JSON.
    NotJson(serde_json::Error),
    /// No answer within the client's timeout.
    Timeout(Duration),
    /// No handshake within [`CONNECT_TIMEOUT`]: nothing answers there.
    ConnectTimeout(Duration),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Tls(e) => write!(f, "TLS: {e}"),
            ClientError::Bind(e) => write!(f, "cannot open a UDP socket: {e}"),
            ClientError::Connect(e) => write!(f, "cannot start the connection: {e}"),
            ClientError::Connection(e) => write!(f, "connection failed: {e}"),
            ClientError::Write(quinn::WriteError::ConnectionLost(e)) => {
                write!(f, "cannot send the request: connection lost: {e}")
            }
            ClientError::Write(e) => write!(f, "cannot send the request: {e}"),
            ClientError::Finish(e) => write!(f, "cannot finish the stream: {e}"),
            ClientError::Read(quinn::ReadError::ConnectionLost(e)) => {
                write!(f, "cannot read the answer: connection lost: {e}")
            }
            ClientError::Read(quinn::ReadError::Reset(code)) if *code == SHUTTING_DOWN => write!(
                f,
                "the server is shutting down and did not read the request (stream reset, code {code}); retry it later or elsewhere"
            ),
            ClientError::Read(e) => write!(f, "cannot read the answer: {e}"),
            ClientError::Frame(e) => write!(f, "the server broke the framing: {e}"),
            ClientError::TooLong { len, max } => write!(
                f,
                "the request is {len} bytes, over frame_bytes_max ({max}); not sent"
            ),
            ClientError::Empty => f.write_str("the request is empty; not sent"),
            ClientError::MissingAnswers { expected, got } => write!(
                f,
                "the server ended the stream after {got} of {expected} answers"
            ),
            ClientError::ExtraAnswer { expected } => write!(
                f,
                "the server sent more than the {expected} answers asked for"
            ),
            ClientError::NotJson(e) => write!(f, "the answer is not JSON: {e}"),
            ClientError::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
            ClientError::ConnectTimeout(d) => write!(
                f,
                "no answer to the handshake within {} s (is the service listening there?)",
                d.as_secs()
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Tls(e) => Some(e),
            ClientError::Bind(e) => Some(e),
            ClientError::Connect(e) => Some(e),
            ClientError::Connection(e) => Some(e),
            ClientError::Write(e) => Some(e),
            ClientError::Finish(e) => Some(e),
            ClientError::Read(e) => Some(e),
            ClientError::Frame(e) => Some(e),
            ClientError::NotJson(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Tls(e)
    }
}

impl From<quinn::ConnectionError> for ClientError {
    fn from(e: quinn::ConnectionError) -> Self {
        ClientError::Connection(e)
    }
}

impl From<quinn::WriteError> for ClientError {
    fn from(e: quinn::WriteError) -> Self {
        ClientError::Write(e)
    }
}

impl From<quinn::ReadError> for ClientError {
    fn from(e: quinn::ReadError) -> Self {
        ClientError::Read(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

/// The QUIC transport a client uses: PINGs every [`KEEP_ALIVE`] so quiet
/// periods do not close the connection, and no streams accepted from the
/// server, which opens none (`proto/wire.md` section 2).
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// The quinn client configuration for presenting `who`'s certificate from
/// a `certs dev` directory, with [`client_transport`]. Split from
/// [`Client::connect`] so the load generator reads the files once for all
/// its connections.
pub fn client_config(tls_dir: &Path, who: &str) -> Result<quinn::ClientConfig, ClientError> {
    let files = ClientFiles::in_dir(tls_dir, who)?;
    let mut config = tls::quinn_client_config(&files)?;
    config.transport_config(Arc::new(client_transport()));
    Ok(config)
}

/// The identity and role `who`'s certificate in `tls_dir` carries, read
/// the way the server reads it ([`tls::peer_of`]): a client needs its own
/// name to write a verification's `ref` (`CLIENT:ID`, `proto/wire.md`
/// section 6).
pub fn identity(tls_dir: &Path, who: &str) -> Result<Peer, ClientError> {
    let files = ClientFiles::in_dir(tls_dir, who)?;
    let chain = tls::load_certs(&files.cert)?;
    // `load_certs` returns at least one certificate; an empty chain is
    // still an error here rather than a panic.
    let leaf = chain.first().ok_or_else(|| TlsError::Peer {
        detail: format!("{} holds no certificate", files.cert.display()),
    })?;
    Ok(tls::peer_of(leaf)?)
}

/// The unspecified address of `addr`'s family, port 0: the endpoint must
/// speak the server's family, and the system picks the port.
fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// One connection to the service, on an endpoint of its own (so several
/// clients spread their packets over several sockets, and dropping one
/// closes nothing else).
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    frame_bytes_max: usize,
    timeout: Option<Duration>,
}

impl Client {
    /// Connects to `addr`, presenting `who`'s certificate from `tls_dir`
    /// (`client`, `analyst`, `admin`, or a name `certs issue` made) and
    /// checking that the server's certificate names `server_name` and
    /// chains to `tls_dir/ca.pem`. The role the server grants is the one in
    /// the certificate, so `who` decides which requests may be sent.
    pub async fn connect(
        addr: SocketAddr,
        tls_dir: &Path,
        who: &str,
        server_name: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_with(addr, client_config(tls_dir, who)?, server_name).await
    }

    /// Connects with a quinn configuration made elsewhere (a custom rustls
    /// configuration in a test, say), used as given: add
    /// [`client_transport`] for the keep-alive.
    pub async fn connect_with(
        addr: SocketAddr,
        config: quinn::ClientConfig,
        server_name: &str,
    ) -> Result<Client, ClientError> {
        let endpoint =
            quinn::Endpoint::client(unspecified_like(addr)).map_err(ClientError::Bind)?;
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(ClientError::Connect)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ClientError::ConnectTimeout(CONNECT_TIMEOUT))??;
        Ok(Client {
            endpoint,
            conn,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            timeout: None,
        })
    }

    /// Uses a smaller `frame_bytes_max` than the contract's 65536, to match
    /// a server configured with less: a longer request is then refused here
    /// ([`ClientError::TooLong`]) rather than sent to be answered
    /// `bad_frame` and end its stream. Values outside 1 to 65536 are
    /// clamped into it.
    pub fn with_frame_bytes_max(mut self, frame_bytes_max: usize) -> Client {
        self.frame_bytes_max = frame_bytes_max.clamp(1, FRAME_BYTES_MAX_DEFAULT);
        self
    }

    /// Gives up on an answer after `timeout` (an `await` gets its own
    /// `timeout_ms` on top). Without one, a request waits until it is
    /// answered or the connection is lost: the server answers within
    /// `request_deadline_ms`, and its idle timeout ends a dead connection.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// The underlying connection, for what this type does not wrap (stats,
    /// the peer's certificate, opening streams by hand in tests).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The largest request or answer body this client sends or accepts.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Sends one request body on a stream of its own and returns the one
    /// answer body. A stream per request keeps a slow answer (an `await`)
    /// from delaying others (`proto/wire.md` section 2).
    pub async fn call(&self, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut answers = self.pipeline(&[body]).await?;
        // `pipeline` returns one answer per body or an error.
        answers.pop().ok_or(ClientError::MissingAnswers {
            expected: 1,
            got: 0,
        })
    }

    /// Sends every body as a frame on one stream, finishes it, and returns
    /// the answers in the order of the requests, as the server sends them.
    /// Every body is checked before anything is sent, so a refused body
    /// sends none of them.
    pub async fn pipeline(&self, bodies: &[&[u8]]) -> Result<Vec<Vec<u8>>, ClientError> {
        let answers = self.bounded(None, self.exchange(bodies)).await?;
        Ok(answers.into_iter().map(|b| b.to_vec()).collect())
    }

    /// One stream: the bodies as frames, the client's side finished, then
    /// exactly one answer per body and the server's end. Writing and
    /// reading run together, so a long pipeline cannot stall with both
    /// sides' flow-control windows full; the first to fail ends both.
    async fn exchange(&self, bodies: &[&[u8]]) -> Result<Vec<Bytes>, ClientError> {
        let mut wire = Vec::new();
        for body in bodies {
            frame_into(body, self.frame_bytes_max, &mut wire)?;
        }
        let (mut send, recv) = self.conn.open_bi().await?;
        let mut reader = AnswerReader::new(recv, self.frame_bytes_max);
        let write = async {
            send.write_all(&wire).await?;
            send.finish().map_err(ClientError::Finish)
        };
        let ((), answers) = tokio::try_join!(write, reader.answers(bodies.len()))?;
        Ok(answers)
    }

    /// Sends a decision request (one contract v1 event, `at` optional) and
    /// returns the answer parsed: a decision, or an error body (`{"error":
    /// {...}}`), which is the server's answer, not a failure of the call.
    pub async fn decide(&self, event_json: &str) -> Result<serde_json::Value, ClientError> {
        self.call_json(event_json.as_bytes()).await
    }

    /// Sends a signal (`device_seen`, `auth_failure`, `fraud_report`) and
    /// returns the answer parsed (`{"ok":true,"alerts":[...]}` or an error
    /// body). The same transport as [`Client::decide`]: the separate name
    /// says what the caller expects back.
    pub async fn signal(&self, event_json: &str) -> Result<serde_json::Value, ClientError> {
        self.call_json(event_json.as_bytes()).await
    }

    /// Waits up to `timeout_ms` for the held request `id` to be resolved,
    /// on a stream of its own (so the wait delays no other answer), and
    /// returns the decision (`hold` if it is still pending at the timeout)
    /// or an error body (`unknown_ref`). `id` is this client's own id; an
    /// analyst or admin may name another client's request as `CLIENT:ID`
    /// (`proto/wire.md` section 6). The client's timeout, if set, counts on
    /// top of `timeout_ms`.
    pub async fn await_hold(
        &self,
        id: &str,
        timeout_ms: u64,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({"kind": "await", "ref": id, "timeout_ms": timeout_ms});
        let body = body.to_string();
        let extra = Duration::from_millis(timeout_ms);
        let mut answers = self
            .bounded(Some(extra), self.exchange(&[body.as_bytes()]))
            .await?;
        // `exchange` returns one answer per body or an error.
        let answer = answers.pop().ok_or(ClientError::MissingAnswers {
            expected: 1,
            got: 0,
        })?;
        parse_json(&answer)
    }

    /// Closes the connection (application code 0) and waits, briefly, for
    /// the close to reach the server, so it frees the connection at once
    /// rather than at its idle timeout.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }

    async fn call_json(&self, body: &[u8]) -> Result<serde_json::Value, ClientError> {
        parse_json(&self.call(body).await?)
    }

    /// Runs `work` under the client's timeout plus `extra`, if the client
    /// has one.
    async fn bounded<T>(
        &self,
        extra: Option<Duration>,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match self.timeout {
            None => work.await,
            Some(t) => {
                let limit = t.saturating_add(extra.unwrap_or_default());
                tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| ClientError::Timeout(limit))?
            }
        }
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(body).map_err(ClientError::NotJson)
}

/// Appends `body` as a frame, refusing an empty body or one over
/// `frame_bytes_max` before anything is sent.
pub fn frame_into(
    body: &[u8],
    frame_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), ClientError> {
    if body.is_empty() {
        return Err(ClientError::Empty);
    }
    if body.len() > frame_bytes_max {
        return Err(ClientError::TooLong {
            len: body.len(),
            max: frame_bytes_max,
        });
    }
    crate::edge::quic::frame::encode_max(body, frame_bytes_max, out)?;
    Ok(())
}

/// Reads answer frames from the receiving side of one stream, through a
/// [`FrameDecoder`] bounded by `frame_bytes_max`. Used by [`Client`] and by
/// the load generator, which notes the moment the first frame is whole.
#[derive(Debug)]
pub struct AnswerReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// Bytes read from the stream and not yet taken by the decoder.
    pending: Bytes,
}

impl AnswerReader {
    /// A reader of `recv` accepting answer bodies up to `frame_bytes_max`
    /// (clamped to 1 to 65536).
    pub fn new(recv: quinn::RecvStream, frame_bytes_max: usize) -> AnswerReader {
        let max = frame_bytes_max.clamp(1, FRAME_BYTES_MAX_DEFAULT);
        // Invariant: `max` was clamped into the range `FrameDecoder::new`
        // accepts; the default decoder is the fallback all the same.
        let decoder = FrameDecoder::new(max).unwrap_or_default();
        AnswerReader {
            recv,
            decoder,
            pending: Bytes::new(),
        }
    }

    /// The next answer body, or `None` when the server finished its side
    /// with nothing left over. A frame error (an announced length of 0 or
    /// too long, or the stream ending inside a frame) is an error.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(frame) = self.decoder.next() {
                return Ok(Some(frame?));
            }
            if !self.pending.is_empty() {
                let used = self.decoder.push(&self.pending);
                self.pending.advance(used);
                if used == 0 {
                    // The decoder takes nothing only with a frame or an
                    // error waiting, which `next` just said there is not.
                    return Err(ClientError::Frame(FrameError::Truncated {
                        buffered: self.decoder.buffered(),
                    }));
                }
                continue;
            }
            match self.recv.read_chunk(READ_CHUNK_BYTES, true).await? {
                Some(chunk) => self.pending = chunk.bytes,
                None => {
                    self.decoder.end()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads to the end of the stream, which must hold no further frame:
    /// the server answers each request once and then finishes its side.
    /// `expected` names the number of answers in the error.
    pub async fn end(&mut self, expected: usize) -> Result<(), ClientError> {
        match self.next_frame().await? {
            None => Ok(()),
            Some(_) => Err(ClientError::ExtraAnswer { expected }),
        }
    }

    /// Exactly `n` answers, then the end of the stream.
    pub async fn answers(&mut self, n: usize) -> Result<Vec<Bytes>, ClientError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_frame().await? {
                Some(body) => out.push(body),
                None => {
                    return Err(ClientError::MissingAnswers {
                        expected: n,
                        got: out.len(),
                    });
                }
            }
        }
        self.end(n).await?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// `portcullis call`
// ---------------------------------------------------------------------------

/// What the reading thread hands the sender, in input order.
#[derive(Debug)]
enum Input {
    /// A non-blank line to send, with its 1-based line number.
    Line { number: u64, body: Vec<u8> },
    /// A line over the frame limit, skipped.
    TooLong { number: u64, len: usize },
    /// The input could not be read.
    Failed(String),
}

/// Lines the reading thread may read ahead of the answers.
const READ_AHEAD_LINES: usize = 64;

/// `portcullis call`: sends each non-blank line of the events file (or
/// standard input) on its own stream, one after another, and prints each
/// answer as one line on standard output. Exit 0 when every line was
/// answered; 1 when the connection fails (the message names the address
/// and the cause), the input cannot be read, or a line was skipped for
/// being longer than a frame.
pub fn call_command(o: &CallOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("call: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let input = match open_input(&o.events) {
        Ok(input) => input,
        Err(msg) => {
            eprintln!("call: {msg}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(call_async(o, input))
}

/// The events file, or standard input for `-`, as a reader the reading
/// thread can own.
/// (A locked standard input, as [`crate::files::open_events`] gives, is
/// not `Send`.)
fn open_input(events: &str) -> Result<Box<dyn BufRead + Send>, crate::files::FileError> {
    if events == "-" {
        return Ok(Box::new(io::BufReader::new(io::stdin())));
    }
    let f = std::fs::File::open(events).map_err(|source| crate::files::FileError::Events {
        file: events.to_string(),
        source,
    })?;
    Ok(Box::new(io::BufReader::with_capacity(1 << 16, f)))
}

async fn call_async(o: &CallOptions, input: Box<dyn BufRead + Send>) -> ExitCode {
    let client = match Client::connect(o.addr, &o.tls_dir, &o.as_, &o.server_name).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("call: cannot connect to {} as {}: {e}", o.addr, o.as_);
            return ExitCode::FAILURE;
        }
    };
    // A thread reads the input, so the connection keeps being driven (its
    // PINGs and acknowledgements) while a terminal waits for a line.
    let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD_LINES);
    let frame_bytes_max = client.frame_bytes_max();
    std::thread::spawn(move || read_lines(input, frame_bytes_max, &tx));
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut skipped = 0u64;
    while let Some(item) = rx.recv().await {
        match item {
            Input::Line { number, body } => match client.call(&body).await {
                Ok(answer) => {
                    if let Err(e) = print_answer(&mut out, &answer) {
                        if e.kind() == io::ErrorKind::BrokenPipe {
                            break;
                        }
                        eprintln!("call: cannot write the answer to line {number}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                Err(e) => {
                    eprintln!("call: line {number}: no answer from {}: {e}", o.addr);
                    return ExitCode::FAILURE;
                }
            },
            Input::TooLong { number, len } => {
                skipped += 1;
                eprintln!(
                    "call: line {number}: {len} bytes, longer than the {frame_bytes_max} a frame may hold; skipped"
                );
            }
            Input::Failed(msg) => {
                eprintln!("call: cannot read {}: {msg}", o.events);
                return ExitCode::FAILURE;
            }
        }
    }
    client.close().await;
    if skipped > 0 {
        eprintln!("call: {skipped} line(s) skipped; every other line was answered");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes one answer as one line. A JSON body's raw line breaks can only
/// be whitespace between tokens (inside strings they are escaped), so they
/// become spaces and the answer stays on its line.
fn print_answer(out: &mut impl Write, answer: &[u8]) -> io::Result<()> {
    if answer.iter().any(|&b| b == b'\n' || b == b'\r') {
        let flat: Vec<u8> = answer
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect();
        out.write_all(&flat)?;
    } else {
        out.write_all(answer)?;
    }
    out.write_all(b"\n")?;
    // Each answer is shown as it comes: a person may be typing the input.
    out.flush()
}

/// The reading thread: sends each non-blank line, in order, until the
/// input ends, fails, or the sender is gone.
fn read_lines(
    mut input: Box<dyn BufRead + Send>,
    max: usize,
    tx: &tokio::sync::mpsc::Sender<Input>,
) {
    let mut number = 0u64;
    let mut line = Vec::new();
    loop {
        number += 1;
        let item = match read_bounded_line(&mut input, max, &mut line) {
            Ok(None) => return,
            Ok(Some(Line::Fits)) if is_blank(&line) => continue,
            Ok(Some(Line::Fits)) => Input::Line {
                number,
                body: std::mem::take(&mut line),
            },
            Ok(Some(Line::TooLong { len })) => Input::TooLong { number, len },
            Err(e) => Input::Failed(e.to_string()),
        };
        let failed = matches!(item, Input::Failed(_));
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// What [`read_bounded_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The line is in the buffer, without its line end.
    Fits,
    /// The line is longer than the limit; at least `len` bytes were seen
    /// and the rest was skipped, up to and including its line end.
    TooLong { len: usize },
}

/// Reads one line (ended by `\n`, a `\r` before it dropped too, or by the
/// end of input) into `line`, holding at most `max` bytes of it: a longer
/// line is read past without being kept, so one huge line costs no memory.
/// `Ok(None)` at the end of input.
pub fn read_bounded_line(
    input: &mut impl BufRead,
    max: usize,
    line: &mut Vec<u8>,
) -> io::Result<Option<Line>> {
    line.clear();
    let mut seen = 0usize;
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        seen = seen.saturating_add(part.len());
        // Keep one byte past the limit, so a `\r` that ends a line of
        // exactly `max` bytes can still be dropped below.
        let room = (max + 1).saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        let used = done.unwrap_or(part.len());
        input.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') && seen <= max + 1 {
        line.pop();
        seen -= 1;
    }
    if seen > max {
        line.clear();
        return Ok(Some(Line::TooLong { len: seen }));
    }
    Ok(Some(Line::Fits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<String, usize>> {
        let mut r = input;
        let mut line = Vec::new();
        let mut out = Vec::new();
        while let Some(l) = read_bounded_line(&mut r, max, &mut line).unwrap() {
            out.push(match l {
                Line::Fits => Ok(String::from_utf8(line.clone()).unwrap()),
                Line::TooLong { len } => Err(len),
            });
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_skipped_past() {
        assert_eq!(
            lines(b"ab\n\ncdef\r\nxyzzy\nlast", 4),
            vec![
                Ok("ab".into()),
                Ok("".into()),
                Ok("cdef".into()),
                Err(5),
                Ok("last".into())
            ]
        );
        assert_eq!(lines(b"abcd\r", 4), vec![Ok("abcd".into())]);
        assert_eq!(lines(b"abcde\r\n", 4), vec![Err(6)]);
        assert!(lines(b"", 4).is_empty());
        // A buffered reader with a tiny buffer sees a line in pieces.
        let big = [b'x'; 100];
        let mut r = io::BufReader::with_capacity(3, &big[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut line).unwrap(),
            Some(Line::TooLong { len: 100 })
        );
        assert!(line.capacity() < 100);
    }

    #[test]
    fn answers_stay_on_one_line() {
        let mut out = Vec::new();
        print_answer(&mut out, b"{\"a\":\r\n1}").unwrap();
        assert_eq!(out, b"{\"a\":  1}\n");
    }

    #[test]
    fn bodies_are_checked_before_sending() {
        let mut out = Vec::new();
        assert!(matches!(
            frame_into(b"", 10, &mut out),
            Err(ClientError::Empty)
        ));
        assert!(matches!(
            frame_into(&[b'x'; 11], 10, &mut out),
            Err(ClientError::TooLong { len: 11, max: 10 })
        ));
        assert!(out.is_empty());
        frame_into(b"{}", 10, &mut out).unwrap();
        assert_eq!(out, b"\0\0\0\x02{}");
    }

    #[test]
    fn the_endpoint_speaks_the_servers_family() {
        let v6: SocketAddr = "[::1]:4433".parse().unwrap();
        assert!(unspecified_like(v6).is_ipv6());
        let v4: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(unspecified_like(v4), "0.0.0.0:0".parse().unwrap());
    }
}
