//! The network edge. `frame` is the wire contract's framing, `wire` its
//! request and response bodies, and `service` the decision step (roles, id
//! scopes, the service's clock) from a request body to a response body, all
//! sans-IO (`proto/wire.md`), so that the QUIC service only moves bytes and
//! every rule of the contract is tested without a socket.

pub mod frame;
pub mod service;
pub mod wire;
