//! Portcullis: a subscriber-identity protection gateway.
//!
//! Module map (see `ARCHITECTURE.md` for the invariants). A request runs
//! one way: edge (bytes) -> gateway (typed request, decision, durable
//! commit) -> edge (bytes); no module imports another in a loop.
//!
//! The core, sans-IO (time is a parameter; no I/O, no randomness, no
//! tasks), importing only itself:
//! - [`contract`]: contract v1 events, identifiers, RFC 3339 times, error
//!   codes, the JSON string writer. Everything past it holds typed, valid
//!   values.
//! - [`rules`]: the rules language: lexer, parser, type checker, compiler to
//!   condition trees plus the history plan they need.
//! - [`history`]: per-entity history the compiled rules ask for, the
//!   expected-IMSI state of each line, lists.
//! - [`engine`]: decisions, holds and verification, idempotent retries.
//!
//! Around it:
//! - [`answer`]: the one writer of answers: replay's lines and the
//!   service's response bodies (decisions, alerts, errors with their codes).
//! - [`files`]: the files an operator names, read within bounds, and
//!   private files created once.
//! - [`keys`]: the keys directory (`--keys DIR`): HKDF-derived keys per
//!   purpose, identifier pseudonyms (HMAC-SHA256) and sealed values
//!   (AES-256-GCM, key id on each), sealing-key rotation.
//! - [`store`]: the durable store's narrow interface (`Store`, `Batch`,
//!   `Table`), its redb and in-memory backends, and the group-commit writer
//!   that acknowledges a batch only once it and every earlier one are on
//!   disk.
//! - [`gateway`]: the decision service with no listener: who may send what
//!   ([`gateway::access`]), the sans-IO service step from a typed request
//!   to a typed [`gateway::Reply`], the decider (one lock, one order,
//!   durable answers, awaits, upkeep), the store opened, the cache, alerts,
//!   the clock, and its typed errors.
//! - [`edge`]: where bytes meet the gateway, each edge with its own codec:
//!   the QUIC wire ([`edge::quic`]: endpoint, frames, request bodies,
//!   connections) and the control socket.
//! - [`tls`]: mutual TLS: the development PKI (`portcullis certs`), rustls
//!   server and client configurations built by hand (ring provider, TLS 1.3,
//!   client certificates required, no 0-RTT), CRLs, and the peer a client
//!   certificate names.
//! - [`server`]: `portcullis serve`, the process: configuration, opening the
//!   gateway, starting the edges, signals, reload and graceful shutdown.
//!
//! Commands (each the library behind one subcommand):
//! - [`replay`]: `portcullis replay`, the engine over a file of events.
//! - [`backtest`]: `portcullis backtest`, a new ruleset beside a baseline
//!   over one pass of recorded events, with its report.
//! - [`explain`]: `portcullis explain`, one request's run log.
//! - [`traffic`]: deterministic synthetic carrier traffic and labels
//!   (`portcullis gen`).
//! - [`client`]: the Rust client of the service, and `portcullis call`.
//! - [`loadgen`]: `portcullis loadgen`, open-loop load against the service
//!   and a bare QUIC echo server.
//! - [`cli`]: the command line: arguments and dispatch; nothing imports it.

pub mod answer;
pub mod backtest;
pub mod cli;
pub mod client;
pub mod contract;
pub mod edge;
pub mod engine;
pub mod explain;
pub mod files;
pub mod gateway;
pub mod history;
pub mod keys;
pub mod loadgen;
pub mod replay;
pub mod rules;
pub mod server;
pub mod store;
pub mod tls;
pub mod traffic;
