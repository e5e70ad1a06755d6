//! Mutual TLS for the QUIC service (`portcullis serve`): the development PKI
//! (`portcullis certs`), the rustls server and client configurations, and the
//! role and identity a client certificate carries. `proto/tls.md` is the
//! written contract; this header is its summary.
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

pub use crate::gateway::access::{Peer, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The one ALPN protocol the service speaks. A new wire version gets a new
/// ALPN, so an old client is refused in the handshake rather than misread.
pub const ALPN: &[u8] = b"portcullis/1";

/// URI SAN prefix of a client's identity: `portcullis:client:<name>`.
pub const CLIENT_URI_PREFIX: &str = "portcullis:client:";

/// URI SAN prefix of a client's role: `portcullis:role:<role>`.
pub const ROLE_URI_PREFIX: &str = "portcullis:role:";

/// Longest client name, in characters. Names become ids' scope and file
/// names, so they are short and plain.
pub const NAME_CHARS_MAX: usize = 64;

/// The files `portcullis certs dev` writes, in order.
pub const DEV_FILES: [&str; 10] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
    "analyst.pem",
    "analyst.key",
    "admin.pem",
    "admin.key",
];

/// The development clients: file stem (which is also the client's name) and
/// role.
const DEV_CLIENTS: [(&str, Role); 3] = [
    ("client", Role::Caller),
    ("analyst", Role::Analyst),
    ("admin", Role::Admin),
];

/// Validity of the development CA, in days (ten years).
const CA_DAYS: i64 = 3650;
/// Validity of a server or client certificate, in days (one year).
const LEAF_DAYS: i64 = 365;
/// How far back validity starts, so a clock a little behind still accepts
/// a certificate made just now.
const BACKDATE: Duration = Duration::days(1);
/// A CRL made by [`crl`] promises its next update this many days ahead.
const CRL_DAYS: i64 = 30;

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

impl FromStr for Role {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Role, TlsError> {
        Role::parse(s).ok_or_else(|| TlsError::BadRole {
            given: s.to_string(),
        })
    }
}

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

fn issue_err(e: rcgen::Error) -> TlsError {
    TlsError::Issue {
        detail: e.to_string(),
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

// ---------------------------------------------------------------------------
// Reading a peer's certificate
// ---------------------------------------------------------------------------

/// Reads the identity and role from a client certificate (see the module
/// docs for the rule). The certificate has already passed the handshake's
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

/// [`peer_of`] the end-entity certificate of an established quinn
/// connection. A connection made with [`quinn_server_config`] always has one;
/// its absence is still an error here rather than a panic.
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

pub fn peer_of_connection(conn: &quinn::Connection) -> Result<Peer, TlsError> {
    let leaf = leaf_of_connection(conn).ok_or_else(|| TlsError::Peer {
        detail: "the connection has no client certificate".to_string(),
    })?;
    peer_of(&leaf)
}

// ---------------------------------------------------------------------------
// Reading PEM files
// ---------------------------------------------------------------------------

/// The largest PEM file read (a certificate chain, a key or a CRL), in
/// bytes: far above any of them, so that only a wrong path meets it.
pub const PEM_FILE_BYTES_MAX: usize = 64 << 20;

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
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

/// Every CRL in a PEM file; at least one.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    load_all(path, "CRLs", "X509 CRL")
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            path: path.to_path_buf(),
            detail: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

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

/// The serial numbers the configured CRLs list. The handshake checks a
/// new connection against the CRLs; this closes the connections opened
/// before a reload's CRL listed their certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked(std::collections::HashSet<Vec<u8>>);

impl Revoked {
    /// Whether a CRL lists the certificate with `serial` ([`serial_of`]):
    /// serials are unique per CA, and the CRLs are the client CA's.
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

/// Load-time checks of the CRLs, so a mistake is named at startup rather
/// than seen as every client refused: each CRL must be issued by one of
/// the client CAs and not be past its `nextUpdate`. Returns the serials
/// they list, read in the same pass.
fn check_crls(
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

// ---------------------------------------------------------------------------
// The development PKI
// ---------------------------------------------------------------------------

/// A certificate and its private key, in PEM. `Debug` leaves the key out.
pub struct Issued {
    /// The client's name: files are written as `NAME.pem` and `NAME.key`.
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("name", &self.name)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Issued {
    /// The certificate, as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| TlsError::Issue {
            detail: format!("issued certificate is not PEM: {e}"),
        })
    }

    /// Writes `DIR/NAME.pem` (0644) and `DIR/NAME.key` (0600), creating DIR
    /// if needed and replacing neither file. Returns the two paths.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
        check_name(&self.name)?;
        create_dir(dir)?;
        let cert = dir.join(format!("{}.pem", self.name));
        let key = dir.join(format!("{}.key", self.name));
        for path in [&cert, &key] {
            refuse_existing(path)?;
        }
        write_new(&key, self.key_pem.as_bytes(), KEY_MODE)?;
        write_new(&cert, self.cert_pem.as_bytes(), CERT_MODE)?;
        Ok((cert, key))
    }
}

/// A CA loaded (or made) for signing: rcgen needs the issuer as a
/// `Certificate`, so it is rebuilt from `ca.pem`'s parameters with the same
/// key and distinguished name (and subject key identifier).
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn new_key() -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err)
}

/// 16 random bytes, first bit clear (a positive DER integer) and first byte
/// non-zero (so the encoding is exactly these bytes). 2^120 values: unique
/// per CA for any number of certificates a deployment will issue.
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Issue {
            detail: "the system random generator failed".to_string(),
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn make_ca(now: OffsetDateTime) -> Result<Ca, TlsError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // A random tag in the name, so two development CAs never share a
    // name (a CRL or a root hint is matched by name first).
    let tag = random_serial()?.to_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Portcullis development CA {tag}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis (development only)");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(issue_err)?;
    Ok(Ca { cert, key })
}

/// Loads `ca.pem` and `ca.key` from a directory, checking that the key is
/// the certificate's.
fn load_ca(ca_dir: &Path) -> Result<Ca, TlsError> {
    let cert_path = ca_dir.join("ca.pem");
    let key_path = ca_dir.join("ca.key");
    let cert_der = load_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificates",
            detail: "no CERTIFICATE section found".to_string(),
        })?;
    let key_bytes = read_file(&key_path)?;
    let key_pem = std::str::from_utf8(&key_bytes).map_err(|_| TlsError::Pem {
        path: key_path.clone(),
        what: "a private key",
        detail: "not text".to_string(),
    })?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: "a private key",
        detail: e.to_string(),
    })?;
    let (_, x) = x509_parser::parse_x509_certificate(cert_der.as_ref()).map_err(|e| {
        TlsError::Certificate {
            path: cert_path.clone(),
            detail: format!("cannot parse: {e}"),
        }
    })?;
    if x.public_key().raw != key.public_key_der().as_slice() {
        return Err(TlsError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    if !x.is_ca() {
        return Err(TlsError::Certificate {
            path: cert_path,
            detail: "not a CA certificate (basic constraints cA is not set)".to_string(),
        });
    }
    let params =
        CertificateParams::from_ca_cert_der(&cert_der).map_err(|e| TlsError::Certificate {
            path: cert_path.clone(),
            detail: format!("cannot read as a CA: {e}"),
        })?;
    let cert = params.self_signed(&key).map_err(issue_err)?;
    Ok(Ca { cert, key })
}

fn make_server(ca: &Ca, now: OffsetDateTime) -> Result<Issued, TlsError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(issue_err)?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(LEAF_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(issue_err)?;
    Ok(Issued {
        name: "server".to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn make_client(
    ca: &Ca,
    role: Option<Role>,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, TlsError> {
    check_name(name)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let uri = |s: String| -> Result<SanType, TlsError> {
        Ok(SanType::URI(s.try_into().map_err(issue_err)?))
    };
    params.subject_alt_names = vec![uri(format!("{CLIENT_URI_PREFIX}{name}"))?];
    if let Some(role) = role {
        params
            .subject_alt_names
            .push(uri(format!("{ROLE_URI_PREFIX}{}", role.as_str()))?);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(issue_err)?;
    Ok(Issued {
        name: name.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn refuse_existing(path: &Path) -> Result<(), TlsError> {
    // symlink_metadata: a dangling link counts as existing too.
    if path.symlink_metadata().is_ok() {
        return Err(TlsError::Exists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::files::create_new_file(path, bytes, mode).map_err(|source| {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::AlreadyExists => TlsError::Exists { path },
            _ => TlsError::Write { path, source },
        }
    })
}

/// Writes a development PKI into `out` (created if needed): the ten
/// [`DEV_FILES`]. A CA for development only (its key sits beside the
/// certificates); a server certificate for `localhost`, 127.0.0.1 and ::1;
/// client certificates `client` (caller), `analyst` and `admin`. Fails,
/// writing nothing, if any of the ten files already exists, so a PKI is
/// never silently replaced.
pub fn dev_pki(out: &Path) -> Result<Vec<PathBuf>, TlsError> {
    for f in DEV_FILES {
        refuse_existing(&out.join(f))?;
    }
    let now = OffsetDateTime::now_utc();
    let ca = make_ca(now)?;
    let mut issued = vec![make_server(&ca, now)?];
    for (name, role) in DEV_CLIENTS {
        issued.push(make_client(
            &ca,
            Some(role),
            name,
            now - BACKDATE,
            now + Duration::days(LEAF_DAYS),
        )?);
    }
    create_dir(out)?;
    let mut written = Vec::with_capacity(DEV_FILES.len());
    let ca_cert = out.join("ca.pem");
    let ca_key = out.join("ca.key");
    write_new(&ca_key, ca.key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_new(&ca_cert, ca.cert.pem().as_bytes(), CERT_MODE)?;
    written.push(ca_cert);
    written.push(ca_key);
    for i in &issued {
        let (cert, key) = i.write_to(out)?;
        written.push(cert);
        written.push(key);
    }
    Ok(written)
}

/// Issues a client certificate from the CA in `ca_dir` (`ca.pem`, `ca.key`)
/// for `name` with `role`, valid from a day ago for a year, and writes
/// `out/NAME.pem` and `out/NAME.key` (never replacing either). Returns the
/// two paths.
pub fn issue(
    ca_dir: &Path,
    role: Role,
    name: &str,
    out: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let now = OffsetDateTime::now_utc();
    issue_with(
        ca_dir,
        Some(role),
        name,
        now - BACKDATE,
        now + Duration::days(LEAF_DAYS),
    )?
    .write_to(out)
}

/// Issues a client certificate in memory with the validity given and, with
/// `None`, no role SAN at all: tests use it for expired, not-yet-valid and
/// role-less certificates.
pub fn issue_with(
    ca_dir: &Path,
    role: Option<Role>,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, TlsError> {
    check_name(name)?;
    let ca = load_ca(ca_dir)?;
    make_client(&ca, role, name, not_before, not_after)
}

/// A CRL (PEM) signed by the CA in `ca_dir`, revoking `revoked` (matched by
/// serial number), valid from now for 30 days; its CRL number is the
/// current Unix time, so a later CRL has a larger number. Pass it to the
/// server as `--crl FILE`.
pub fn crl(ca_dir: &Path, revoked: &[CertificateDer<'_>]) -> Result<String, TlsError> {
    let ca = load_ca(ca_dir)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for (i, cert) in revoked.iter().enumerate() {
        let (_, x) =
            x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| TlsError::Issue {
                detail: format!("revoked certificate #{}: cannot parse: {e}", i + 1),
            })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&x.serial.to_bytes_be()),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let crl_number = now.unix_timestamp().max(1).to_be_bytes();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from_slice(&crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: ca.cert.params().key_identifier_method.clone(),
    };
    let list = params.signed_by(&ca.cert, &ca.key).map_err(issue_err)?;
    list.pem().map_err(issue_err)
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// `portcullis certs dev --out DIR`: prints each file written, or the
/// error (exit 1).
pub fn certs_dev_command(out: &Path) -> ExitCode {
    match dev_pki(out) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            println!(
                "development PKI for localhost, 127.0.0.1 and ::1: client = caller, analyst, admin (keys are mode 0600; never use it in production)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certs dev: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portcullis certs issue --ca DIR --role ROLE --name NAME --out DIR`:
/// prints the two files written. A bad role or name exits 2 (a usage
/// error), anything else 1.
pub fn certs_issue_command(ca: &Path, role: &str, name: &str, out: &Path) -> ExitCode {
    let role = match Role::from_str(role) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certs issue: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_name(name) {
        eprintln!("certs issue: {e}");
        return ExitCode::from(2);
    }
    match issue(ca, role, name, out) {
        Ok((cert, key)) => {
            println!("wrote {}", cert.display());
            println!("wrote {}", key.display());
            println!("client {name:?} with role {role}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certs issue: {e}");
            ExitCode::FAILURE
        }
    }
}
