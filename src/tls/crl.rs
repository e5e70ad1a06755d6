//! Revocation: the load-time checks of the configured CRLs (issued by the
//! client CA, not stale), and the serials they list ([`Revoked`]), which
//! close connections opened before a reload's CRL listed their
//! certificate. The handshake's own CRL check is rustls' (see `config.rs`);
//! issuing a CRL is the development CA's work (`pki.rs`).

use super::error::TlsError;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use std::path::Path;
use time::OffsetDateTime;

/// The serial numbers the configured CRLs list. The handshake checks a
/// new connection against the CRLs; this closes the connections opened
/// before a reload's CRL listed their certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked(std::collections::HashSet<Vec<u8>>);

impl Revoked {
    /// Whether a CRL lists the certificate with `serial`
    /// ([`serial_of`](crate::tls::serial_of)): serials are unique per CA,
    /// and the CRLs are the client CA's.
    pub fn lists(&self, serial: &[u8]) -> bool {
        self.0.contains(serial)
    }

    /// How many serials the CRLs list.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Load-time checks of the CRLs, so a mistake is named at startup rather
/// than seen as every client refused: each CRL must be issued by one of
/// the client CAs and not be past its `nextUpdate`. Returns the serials
/// they list, read in the same pass.
pub(super) fn check_crls(
    path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
    ca_certs: &[CertificateDer<'_>],
    now: OffsetDateTime,
) -> Result<Revoked, TlsError> {
    let crl_err = |detail: String| TlsError::Crl {
        path: path.to_path_buf(),
        detail,
    };
    use x509_parser::extensions::ParsedExtension;
    // Each CA's subject and subject key identifier (if it has one).
    let mut cas: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for ca in ca_certs {
        // The CA file already went into the root store, so it parses; a
        // failure here is still reported, not assumed away.
        let (_, x) = x509_parser::parse_x509_certificate(ca.as_ref())
            .map_err(|e| crl_err(format!("cannot parse the client CA: {e}")))?;
        let ski = x
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        cas.push((x.subject().as_raw().to_vec(), ski));
    }
    let mut revoked = std::collections::HashSet::new();
    for (i, crl) in crls.iter().enumerate() {
        let (_, c) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| crl_err(format!("CRL #{}: cannot parse: {e}", i + 1)))?;
        let aki = c
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        // Same name and, where both say, the same key: a CRL from another
        // CA with the same name is caught here, not only at handshake time
        // (where its signature would not verify and every client would be
        // refused).
        let issued_by_ca = cas.iter().any(|(subject, ski)| {
            subject.as_slice() == c.issuer().as_raw()
                && match (&aki, ski) {
                    (Some(a), Some(s)) => a == s,
                    _ => true,
                }
        });
        if !issued_by_ca {
            return Err(crl_err(format!(
                "CRL #{} is issued by {}, which is not the client CA",
                i + 1,
                c.issuer()
            )));
        }
        match c.next_update() {
            Some(next) if next.timestamp() <= now.unix_timestamp() => {
                return Err(crl_err(format!(
                    "CRL #{} is stale: its next update was due {next}; publish a fresh one",
                    i + 1
                )));
            }
            _ => {}
        }
        revoked.extend(
            c.iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec()),
        );
    }
    Ok(Revoked(revoked))
}
