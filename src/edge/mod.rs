//! The edges: where bytes from outside become typed requests for the
//! gateway, and its answers become bytes again. Each edge owns its codec
//! and its limits; none decides anything.
//!
//! - [`quic`]: the wire contract over QUIC (`proto/wire.md`).
//! - [`control`]: the local control socket (`portcullis backup`).

pub mod control;
pub mod quic;
