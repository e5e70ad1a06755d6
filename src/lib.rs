//! Portcullis: a subscriber-identity protection gateway.
//!
//! Module map (see `ARCHITECTURE.md` for the invariants):
//! - [`contract`]: contract v1 events, identifiers, RFC 3339 times, error codes.
//!   Everything past it holds typed, valid values.
//! - [`rules`]: the rules language: lexer, parser, type checker, compiler to
//!   condition trees plus the history plan they need (sans-IO).
//! - [`history`]: per-entity history the compiled rules ask for, the
//!   expected-IMSI state of each line, lists (sans-IO).
//! - [`engine`]: decisions, holds and verification, idempotent retries
//!   (sans-IO: time is a parameter, no I/O, no randomness, no tasks).
//! - [`replay`]: `portcullis replay`, the engine over a file of events.
//! - [`backtest`]: `portcullis backtest`, a new ruleset beside a baseline
//!   over one pass of recorded events, with its report.
//! - [`explain`]: `portcullis explain`, one request's run log.
//! - [`tls`]: mutual TLS for the QUIC service: the development PKI
//!   (`portcullis certs`), rustls server and client configurations built by
//!   hand (ring provider, TLS 1.3, client certificates required, no 0-RTT),
//!   and the role and identity a client certificate carries.
//! - [`keys`]: the keys directory (`--keys DIR`): HKDF-derived keys per
//!   purpose, identifier pseudonyms (HMAC-SHA256) and sealed values
//!   (AES-256-GCM, key id on each), sealing-key rotation.
//! - [`store`]: the durable store's narrow interface (`Store`, `Batch`,
//!   `Table`), its redb and in-memory backends, and the group-commit writer
//!   that acknowledges a batch only once it and every earlier one are on
//!   disk.
//! - [`transport`]: the wire contract's framing (sans-IO codec).
//! - [`server`]: `portcullis serve`, the QUIC runtime around
//!   [`transport::service`]: endpoint, streams, the engine thread, limits,
//!   reload and graceful shutdown.
//! - [`client`]: the Rust client of the service, and `portcullis call`.
//! - [`loadgen`]: `portcullis loadgen`, open-loop load against the service
//!   and a bare QUIC echo server.
//! - [`traffic`]: deterministic synthetic carrier traffic and labels
//!   (`portcullis gen`).
//! - [`cli`]: the command line, and the bounded readers of the files an
//!   operator names (rules, lists, config, PEM).
#![forbid(unsafe_code)]

pub mod answer;
pub mod backtest;
pub mod cli;
pub mod client;
pub mod contract;
pub mod engine;
pub mod explain;
pub mod files;
pub mod history;
pub mod keys;
pub mod loadgen;
pub mod replay;
pub mod rules;
pub mod server;
pub mod store;
pub mod tls;
pub mod traffic;
pub mod transport;
