//! The development PKI (`portcullis certs`): a CA whose key sits beside
//! the certificates, a server certificate for `localhost`, client
//! certificates with an identity and a role, CRLs signed by that CA, the
//! files written (keys 0600, nothing replaced), and the two commands.
//! Development only: a deployment brings its own PKI.

use super::error::{TlsError, issue_err};
use super::names::{CLIENT_URI_PREFIX, ROLE_URI_PREFIX};
use super::peer::check_name;
use super::pem::{load_certs, read_file};
use crate::gateway::access::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

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
