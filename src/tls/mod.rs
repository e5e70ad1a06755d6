//! Mutual TLS for the QUIC service (`portcullis serve`): the development PKI
//! (`portcullis certs`), the rustls server and client configurations, and the
//! role and identity a client certificate carries. `proto/tls.md` is the
//! written contract; this header is its summary.
//!
//! This file is the facade: it declares the files below and re-exports
//! their public items, so that the public API is `crate::tls::X`. It holds
//! no code.
//!
//! # Handshake rules
//!
//! - QUIC v1 over TLS 1.3 only, with rustls' *ring* provider passed
//!   explicitly to every builder (no process-wide default, no aws-lc).
//! - ALPN is exactly [`ALPN`] (`portcullis/1`); a client offering anything
//!   else, or nothing, is refused.
//! - A client certificate is required and must chain to the configured client
//!   CA (`ca.pem`), be inside its validity period, carry the client-auth
//!   extended key usage, and not be listed in the configured CRL (`--crl
//!   FILE`). A CRL past its `nextUpdate` refuses every client (revocation
//!   status unknown: fail closed), and is refused when the server starts.
//! - 0-RTT is refused: `max_early_data_size = 0`, so session tickets never
//!   allow early data. Early data can be replayed by anyone on the path, and a
//!   replayed `list_remove` or `verification` is not harmless.
//! - No session resumption on the server: every connection runs the full
//!   certificate check, so a certificate that expired or was revoked since an
//!   earlier connection cannot come back in on a resumed session.
//! - We never use quinn's `ServerConfig::with_single_cert`: it enables 0-RTT
//!   and asks for no client certificate.
//!
//! # Roles and identities
//!
//! A client certificate carries two URI subject alternative names:
//!
//! - `portcullis:client:<name>` — the client's identity. Request ids are
//!   scoped to it. `<name>` is 1 to [`NAME_CHARS_MAX`] characters of
//!   `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. Certificates issued
//!   here also put the name in the subject CN, for people reading them, but
//!   the CN is never consulted: the URI SAN is the one rule.
//! - `portcullis:role:<role>` — one of `caller`, `analyst`, `admin`
//!   ([`Role`]).
//!
//! [`peer_of`] reads both. Exactly one of each is required. A certificate
//! without a role ([`TlsError::NoRole`]) gets no default role: the service
//! answers `forbidden` to everything on that connection (fail closed). Two
//! identities or two roles, an unknown role or a malformed name are refused
//! the same way, as is a certificate with no identity.
//!
//! # Files
//!
//! `portcullis certs dev --out DIR` writes [`DEV_FILES`]; keys are created
//! with mode 0600 (never widened then narrowed), certificates with 0644, and
//! nothing is ever overwritten. Keys are ECDSA P-256. Serial numbers are 16
//! random bytes from the system's generator (unique per CA, so CRLs name one
//! certificate each). Key material is never logged or printed.
//!
//! # Layout
//!
//! Each file owns one part:
//!
//! - `error.rs`: [`TlsError`], what can go wrong anywhere here.
//! - `names.rs`: what a client certificate's names look like
//!   ([`CLIENT_URI_PREFIX`], [`ROLE_URI_PREFIX`], [`NAME_CHARS_MAX`]).
//! - `pem.rs`: reading certificates, keys and CRLs from PEM files
//!   ([`load_certs`], [`load_key`], [`load_crls`]), within
//!   [`PEM_FILE_BYTES_MAX`].
//! - `crl.rs`: the load-time checks of the configured CRLs, and the serials
//!   they list ([`Revoked`]).
//! - `config.rs`: the rustls and quinn server and client configurations
//!   ([`ServerFiles`], [`ClientFiles`], [`server_config`],
//!   [`client_config`], ...), built by hand under the handshake rules above.
//! - `peer.rs`: the identity and role a client certificate carries
//!   ([`peer_of`], [`check_name`], [`peer_of_connection`]).
//! - `pki.rs`: the development PKI ([`dev_pki`], [`issue`], [`crl()`],
//!   [`Issued`]) and the `certs` commands.
//!
//! No file imports another in a loop, and none imports this one: each
//! names the files it uses directly (`super::error::TlsError`). `names.rs`
//! names no other file and `error.rs` only `names.rs`, so the messages can
//! quote the name rules that `peer.rs`, which returns the error, checks.
//! `pem.rs` and `crl.rs` name only `error.rs`; `peer.rs` names `error.rs`
//! and `names.rs`; `config.rs` names `crl.rs`, `error.rs`, `pem.rs` and
//! `peer.rs`; `pki.rs` names `error.rs`, `names.rs`, `pem.rs` and
//! `peer.rs`. Issuing a CRL is in `pki.rs`, beside the CA that signs it, so
//! `crl.rs` needs no CA. `Peer` and `Role` are the gateway's
//! (`crate::gateway::access`), re-exported here.

mod config;
mod crl;
mod error;
mod names;
mod peer;
mod pem;
mod pki;

pub use crate::gateway::access::{Peer, Role};
pub use config::{
    ALPN, ClientFiles, ServerFiles, client_config, client_config_from, quinn_client_config,
    quinn_client_config_with, quinn_server_config, quinn_server_config_and_revoked,
    quinn_server_config_with, server_config, server_config_and_revoked, server_config_from,
};
pub use crl::Revoked;
pub use error::TlsError;
pub use names::{CLIENT_URI_PREFIX, NAME_CHARS_MAX, ROLE_URI_PREFIX};
pub use peer::{check_name, leaf_of_connection, peer_of, peer_of_connection, serial_of};
pub use pem::{PEM_FILE_BYTES_MAX, load_certs, load_crls, load_key};
pub use pki::{
    DEV_FILES, Issued, certs_dev_command, certs_issue_command, crl, dev_pki, issue, issue_with,
};
