//! The rustls server and client configurations, built by hand (ring
//! provider, TLS 1.3 only, ALPN [`ALPN`], a client certificate required and
//! checked against the CRLs, no 0-RTT, no resumption), and their quinn
//! wrappers, from the files named by [`ServerFiles`] and [`ClientFiles`].

use super::crl::{Revoked, check_crls};
use super::error::TlsError;
use super::peer::check_name;
use super::pem::{check_private, load_certs, load_crls, load_key, root_store};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// The one ALPN protocol the service speaks. A new wire version gets a new
/// ALPN, so an old client is refused in the handshake rather than misread.
pub const ALPN: &[u8] = b"portcullis/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Maps rustls' key/certificate mismatch to an error naming both files.
fn cert_key_err(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => TlsError::Config {
            detail: format!("{} with {}: {other}", cert.display(), key.display()),
        },
    }
}

// ---------------------------------------------------------------------------
// Server configuration
// ---------------------------------------------------------------------------

/// The files a server reads. [`ServerFiles::in_dir`] names the ones
/// `certs dev` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The CA that client certificates must chain to (PEM, one or more).
    pub client_ca: PathBuf,
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// Revoked client certificates (PEM CRLs from the client CA), if any.
    pub crl: Option<PathBuf>,
}

impl ServerFiles {
    /// `DIR/ca.pem`, `DIR/server.pem`, `DIR/server.key`, and the CRL given.
    pub fn in_dir(dir: &Path, crl: Option<&Path>) -> ServerFiles {
        ServerFiles {
            client_ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            crl: crl.map(Path::to_path_buf),
        }
    }
}

/// [`server_config_from`] the files of a `certs dev` directory.
pub fn server_config(tls_dir: &Path, crl: Option<&Path>) -> Result<ServerConfig, TlsError> {
    server_config_from(&ServerFiles::in_dir(tls_dir, crl))
}

/// The rustls server configuration, built by hand: ring provider, TLS 1.3
/// only, ALPN `portcullis/1`, a client certificate required (chaining to
/// `client_ca`, checked against the CRL), no early data, no half-RTT data,
/// no resumption (so every connection's certificate is checked in full).
pub fn server_config_from(files: &ServerFiles) -> Result<ServerConfig, TlsError> {
    server_config_and_revoked(files).map(|(config, _)| config)
}

/// [`server_config_from`], and the serials its CRLs list, from one reading
/// of the files.
pub fn server_config_and_revoked(files: &ServerFiles) -> Result<(ServerConfig, Revoked), TlsError> {
    let provider = provider();
    let roots = root_store(&files.client_ca)?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let mut revoked = Revoked::default();
    if let Some(crl_path) = &files.crl {
        let crls = load_crls(crl_path)?;
        let ca_certs = load_certs(&files.client_ca)?;
        revoked = check_crls(crl_path, &crls, &ca_certs, OffsetDateTime::now_utc())?;
        // A stale CRL means revocation status is unknown: refuse rather
        // than accept (the load-time check above says so at startup).
        verifier = verifier.with_crls(crls).enforce_revocation_expiration();
    }
    let verifier = verifier.build().map_err(|e| match &files.crl {
        Some(path) => TlsError::Crl {
            path: path.clone(),
            detail: format!("client verifier: {e}"),
        },
        None => TlsError::Config {
            detail: format!("client verifier for {}: {e}", files.client_ca.display()),
        },
    })?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    check_private(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config {
            detail: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| cert_key_err(e, &files.cert, &files.key))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No 0-RTT: tickets never carry early_data, so no client can send
    // replayable data before the handshake proves who it is.
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    // No resumption: a resumed session would skip the certificate (expiry,
    // CRL) checks that a full handshake makes.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((config, revoked))
}
/// The quinn server configuration around [`server_config_from`]. Built with
/// `QuicServerConfig::try_from`, which keeps the rustls settings as they
/// are (quinn's `with_single_cert` would turn 0-RTT on and client
/// certificates off).
pub fn quinn_server_config(files: &ServerFiles) -> Result<quinn::ServerConfig, TlsError> {
    quinn_server_config_with(server_config_from(files)?)
}

/// [`quinn_server_config`], and the serials its CRLs list.
pub fn quinn_server_config_and_revoked(
    files: &ServerFiles,
) -> Result<(quinn::ServerConfig, Revoked), TlsError> {
    let (config, revoked) = server_config_and_revoked(files)?;
    Ok((quinn_server_config_with(config)?, revoked))
}

/// Wraps a rustls server configuration for quinn, unchanged.
pub fn quinn_server_config_with(config: ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(|e| {
        TlsError::Config {
            detail: format!("for QUIC: {e}"),
        }
    })?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

// ---------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------

/// The files a client reads. [`ClientFiles::in_dir`] names the ones
/// `certs dev` and `certs issue` write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// The CA the server's certificate must chain to.
    pub server_ca: PathBuf,
    /// The client's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The client's private key (PEM).
    pub key: PathBuf,
}

impl ClientFiles {
    /// `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key`, after checking NAME
    /// (so it cannot point outside the directory).
    pub fn in_dir(dir: &Path, name: &str) -> Result<ClientFiles, TlsError> {
        check_name(name)?;
        Ok(ClientFiles {
            server_ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        })
    }
}

/// [`client_config_from`] the files of a `certs dev` directory, presenting
/// `NAME.pem` (`client`, `analyst`, `admin`, or a name `certs issue` made).
pub fn client_config(tls_dir: &Path, name: &str) -> Result<ClientConfig, TlsError> {
    client_config_from(&ClientFiles::in_dir(tls_dir, name)?)
}

/// The rustls client configuration: ring provider, TLS 1.3 only, trusts
/// only `server_ca`, presents the client certificate, ALPN `portcullis/1`,
/// early data off.
pub fn client_config_from(files: &ClientFiles) -> Result<ClientConfig, TlsError> {
    let roots = root_store(&files.server_ca)?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config {
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| cert_key_err(e, &files.cert, &files.key))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// The quinn client configuration around [`client_config_from`].
pub fn quinn_client_config(files: &ClientFiles) -> Result<quinn::ClientConfig, TlsError> {
    quinn_client_config_with(client_config_from(files)?)
}

/// Wraps a rustls client configuration for quinn, unchanged.
pub fn quinn_client_config_with(config: ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(|e| {
        TlsError::Config {
            detail: format!("for QUIC: {e}"),
        }
    })?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}
