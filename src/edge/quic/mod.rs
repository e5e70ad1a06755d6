//! The wire contract over QUIC (`proto/wire.md`): `endpoint` binds the
//! socket, sets the transport limits and accepts connections; `frame` is the sans-IO
//! length-prefixed codec, `wire` parses request bodies into the gateway's
//! typed requests (and keeps the bound a decision body must fit), and
//! `connection` accepts connections, reads the peer from its certificate
//! once, and runs one task per stream: frames in, answers out in order.

pub mod connection;
pub mod endpoint;
pub mod frame;
pub mod wire;
