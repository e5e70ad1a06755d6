//! The network edge. `frame` is the wire contract's framing, sans-IO.

pub mod frame;
