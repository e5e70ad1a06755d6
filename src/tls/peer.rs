//! Reading a client's identity and role from its certificate: the
//! `portcullis:client:` and `portcullis:role:` URI SANs ([`peer_of`]), the
//! rule a client name keeps ([`check_name`]), the role's spelling, and the
//! certificate a quinn connection's handshake checked. The handshake has
//! already checked the chain, validity and CRL; this reads what the
//! certificate says, and fails closed.

use super::error::TlsError;
use super::names::{CLIENT_URI_PREFIX, NAME_CHARS_MAX, ROLE_URI_PREFIX};
use crate::gateway::access::{Peer, Role};
use rustls::pki_types::CertificateDer;
use std::str::FromStr;

impl FromStr for Role {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Role, TlsError> {
        Role::parse(s).ok_or_else(|| TlsError::BadRole {
            given: s.to_string(),
        })
    }
}

/// Checks a client name: 1 to [`NAME_CHARS_MAX`] characters of
/// `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. The name becomes a file
/// name (`NAME.pem`) and the scope of ids, so it admits no path separator,
/// no hidden file, nothing an option parser or a URI would read otherwise.
pub fn check_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_CHARS_MAX
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadName {
            given: name.to_string(),
        })
    }
}

/// Reads the identity and role from a client certificate (see the
/// [module docs](crate::tls#roles-and-identities) for the rule). The certificate has already passed the handshake's
/// chain, validity and CRL checks; this reads what it says. Fails closed:
/// no role, two roles, two identities or an unknown role is an error, never
/// a default.
pub fn peer_of(cert: &CertificateDer<'_>) -> Result<Peer, TlsError> {
    let peer_err = |detail: String| TlsError::Peer { detail };
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| peer_err(format!("cannot parse the certificate: {e}")))?;
    let san = x
        .subject_alternative_name()
        .map_err(|e| peer_err(format!("bad subject alternative name extension: {e}")))?;
    let mut names = Vec::new();
    let mut roles = Vec::new();
    if let Some(san) = san {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = gn {
                if let Some(n) = uri.strip_prefix(CLIENT_URI_PREFIX) {
                    names.push(n);
                } else if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    roles.push(r);
                }
            }
        }
    }
    let name = match names.as_slice() {
        [n] => *n,
        [] => {
            return Err(peer_err(format!(
                "no {CLIENT_URI_PREFIX}<name> URI SAN (the client's identity)"
            )));
        }
        _ => {
            return Err(peer_err(format!(
                "{} {CLIENT_URI_PREFIX}<name> URI SANs; exactly one is allowed",
                names.len()
            )));
        }
    };
    check_name(name).map_err(|e| peer_err(e.to_string()))?;
    let role = match roles.as_slice() {
        [r] => Role::parse(r).ok_or_else(|| {
            peer_err(format!(
                "unknown role {r:?} in {ROLE_URI_PREFIX}<role> (expected caller, analyst or admin)"
            ))
        })?,
        [] => {
            return Err(TlsError::NoRole {
                name: name.to_string(),
            });
        }
        _ => {
            return Err(peer_err(format!(
                "{} {ROLE_URI_PREFIX}<role> URI SANs; exactly one is allowed",
                roles.len()
            )));
        }
    };
    Ok(Peer {
        name: name.to_string(),
        role,
    })
}

/// A certificate's serial number, as its DER integer's bytes (as CRLs
/// list it); `None` if it does not parse.
pub fn serial_of(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .map(|(_, c)| c.raw_serial().to_vec())
}

/// The client certificate a connection's handshake checked, if any.
pub fn leaf_of_connection(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned())
}

/// [`peer_of`] the end-entity certificate of an established quinn
/// connection. A connection made with
/// [`quinn_server_config`](crate::tls::quinn_server_config) always has one;
/// its absence is still an error here rather than a panic.
pub fn peer_of_connection(conn: &quinn::Connection) -> Result<Peer, TlsError> {
    let leaf = leaf_of_connection(conn).ok_or_else(|| TlsError::Peer {
        detail: "the connection has no client certificate".to_string(),
    })?;
    peer_of(&leaf)
}
