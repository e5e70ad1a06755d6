//! The names a client certificate carries: the URI SAN prefixes of a
//! client's identity and role, and the longest name. `peer.rs` reads them,
//! `pki.rs` writes them and `error.rs` quotes them in its messages, so they
//! live here, in a file that names no other: the error cannot import
//! `peer.rs`, which returns it.

/// URI SAN prefix of a client's identity: `portcullis:client:<name>`.
pub const CLIENT_URI_PREFIX: &str = "portcullis:client:";

/// URI SAN prefix of a client's role: `portcullis:role:<role>`.
pub const ROLE_URI_PREFIX: &str = "portcullis:role:";

/// Longest client name, in characters. Names become ids' scope and file
/// names, so they are short and plain.
pub const NAME_CHARS_MAX: usize = 64;
