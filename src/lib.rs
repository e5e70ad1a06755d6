//! Portcullis: a subscriber-identity protection gateway.
//!
//! Module map (see `ARCHITECTURE.md` for the invariants):
//! - [`contract`]: contract v1 events, identifiers, RFC 3339 times, error codes.
//! - [`rules`]: the rules language and its compiler (sans-IO).
//! - [`history`]: per-entity history the compiled rules ask for (sans-IO).
//! - [`engine`]: decisions, holds, idempotency (sans-IO: time is a parameter).
//! - [`replay`]: `portcullis replay`, the engine over a file of events.
//! - [`gen`]: deterministic synthetic carrier traffic.
#![forbid(unsafe_code)]

pub mod contract;
pub mod rules;
