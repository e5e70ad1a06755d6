//! Reading PEM files: certificate chains, private keys and CRLs, each read
//! whole within [`PEM_FILE_BYTES_MAX`], and the root store a CA file makes.
//! Errors name the file and never quote a key.

use super::error::TlsError;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::Path;

/// The largest PEM file read (a certificate chain, a key or a CRL), in
/// bytes: far above any of them, so that only a wrong path meets it.
pub const PEM_FILE_BYTES_MAX: usize = 64 << 20;

pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_bytes_bounded(path, PEM_FILE_BYTES_MAX).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_all(path, "certificates", "CERTIFICATE")
}

/// Every PEM section of one type in a file; at least one. `what` and
/// `section` name them in errors.
fn load_all<T: PemObject>(
    path: &Path,
    what: &'static str,
    section: &str,
) -> Result<Vec<T>, TlsError> {
    let bytes = read_file(path)?;
    let pem = |detail: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
        detail,
    };
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if items.is_empty() {
        return Err(pem(format!("no {section} section found")));
    }
    Ok(items)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1). The error never
/// quotes the file's contents.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "a private key",
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY section found".to_string()
            }
            other => other.to_string(),
        },
    })
}

/// Refuses a private key file that group or others may read or write
/// (`mode & 0o077 != 0`), as the keys directory refuses one: the server's
/// key proves who the gateway is to every back office.
pub fn check_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyShared {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Every CRL in a PEM file; at least one.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    load_all(path, "CRLs", "X509 CRL")
}

pub(super) fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            path: path.to_path_buf(),
            detail: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
