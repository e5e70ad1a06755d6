//! The network edge. `frame` is the wire contract's framing and `wire` its
//! request and response bodies, both sans-IO (`proto/wire.md`), so that the
//! QUIC service only moves bytes and every rule of the contract is tested
//! without a socket.

pub mod frame;
pub mod wire;
