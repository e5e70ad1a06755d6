//! [`TlsError`]: everything that can go wrong in TLS, shared by every file
//! of `tls`. It names no other file but `names.rs` (for the limits its
//! messages quote), so that each file can import it without a loop.

use super::names::{NAME_CHARS_MAX, ROLE_URI_PREFIX};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong here, each naming the file (or the
/// certificate) and what was wrong with it. No variant holds key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// A file or directory could not be written.
    Write { path: PathBuf, source: io::Error },
    /// A file that would be replaced already exists.
    Exists { path: PathBuf },
    /// A file is not PEM, or holds no section of the kind wanted.
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    /// A certificate could not be used (unparseable, not accepted as a
    /// trust anchor).
    Certificate { path: PathBuf, detail: String },
    /// A private key does not belong to the certificate beside it.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The CRL could not be used.
    Crl { path: PathBuf, detail: String },
    /// rustls or quinn refused the configuration.
    Config { detail: String },
    /// Making a key, certificate or CRL failed.
    Issue { detail: String },
    /// Not `caller`, `analyst` or `admin`.
    BadRole { given: String },
    /// Not a valid client name.
    BadName { given: String },
    /// A peer certificate without a usable identity (unparseable, no or two
    /// `portcullis:client:` names, a bad name, two roles, an unknown role).
    Peer { detail: String },
    /// A peer certificate with an identity but no role: refused everything.
    NoRole { name: String },
    /// The server's private key is readable or writable by group or others.
    KeyShared { path: PathBuf, mode: u32 },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            TlsError::Exists { path } => write!(
                f,
                "{} already exists; refusing to replace it (move it away or choose another directory)",
                path.display()
            ),
            TlsError::Pem { path, what, detail } => {
                write!(f, "{}: expected PEM {what}: {detail}", path.display())
            }
            TlsError::Certificate { path, detail } => write!(f, "{}: {detail}", path.display()),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "{} is not the private key of the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Crl { path, detail } => write!(f, "CRL {}: {detail}", path.display()),
            TlsError::Config { detail } => write!(f, "TLS configuration refused: {detail}"),
            TlsError::Issue { detail } => write!(f, "cannot issue: {detail}"),
            TlsError::BadRole { given } => write!(
                f,
                "unknown role {given:?}: expected caller, analyst or admin"
            ),
            TlsError::BadName { given } => write!(
                f,
                "bad client name {given:?}: 1 to {NAME_CHARS_MAX} characters of A-Z a-z 0-9 . _ -, not starting with . or -"
            ),
            TlsError::Peer { detail } => write!(f, "client certificate refused: {detail}"),
            TlsError::NoRole { name } => write!(
                f,
                "client certificate of {name:?} carries no {ROLE_URI_PREFIX}<role> URI SAN: it may do nothing"
            ),
            TlsError::KeyShared { path, mode } => write!(
                f,
                "{} has mode {mode:o}: group or others may read it, so it may already be copied; chmod 600 it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } | TlsError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(super) fn issue_err(e: rcgen::Error) -> TlsError {
    TlsError::Issue {
        detail: e.to_string(),
    }
}
