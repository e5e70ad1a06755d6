//! Mutual TLS: certificates, roles and handshakes over real QUIC.
//!
//! Every handshake test runs a quinn server on 127.0.0.1 with the
//! configuration `portcullis::tls` builds, and a quinn client. A handshake
//! counts as accepted when the server side gets a connection whose
//! certificate [`tls::peer_of_connection`] reads, and the client completes a
//! round trip on a stream; refused when the server never gets a connection.

use crate::support::rt;
use portcullis::contract::Kind;
use portcullis::gateway::access::may_send;
use portcullis::tls::{self, ClientFiles, Peer, Role, ServerFiles, TlsError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// No handshake here takes more than milliseconds; a hang fails fast.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory for one test's files (absent: created by the code
/// under test when it writes).
fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Two development PKIs shared by the tests: `a` (the server's) and `b`
/// (another CA).
fn pki(which: &str) -> &'static Path {
    static A: OnceLock<PathBuf> = OnceLock::new();
    static B: OnceLock<PathBuf> = OnceLock::new();
    let cell = if which == "a" { &A } else { &B };
    cell.get_or_init(|| {
        let dir = scratch(&format!("pki-{which}"));
        tls::dev_pki(&dir).unwrap_or_else(|e| panic!("dev_pki {}: {e}", dir.display()));
        dir
    })
}

fn server(dir: &Path, crl: Option<&Path>) -> quinn::ServerConfig {
    tls::quinn_server_config(&ServerFiles::in_dir(dir, crl)).unwrap_or_else(|e| panic!("{e}"))
}

fn client(files: &ClientFiles) -> quinn::ClientConfig {
    tls::quinn_client_config(files).unwrap_or_else(|e| panic!("{e}"))
}

fn dev_client(dir: &Path, name: &str) -> quinn::ClientConfig {
    client(&ClientFiles::in_dir(dir, name).unwrap_or_else(|e| panic!("{e}")))
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What each side saw of one connection attempt.
#[derive(Debug)]
struct Seen {
    /// The server: the peer read from the certificate, or why it has none.
    server: Result<Peer, String>,
    /// The client: the server's reply on a stream (the peer's name), or the
    /// error.
    client: Result<String, String>,
}

impl Seen {
    fn accepted(&self) -> &Peer {
        match (&self.server, &self.client) {
            (Ok(peer), Ok(reply)) if *reply == peer.name => peer,
            _ => panic!("expected the handshake accepted, saw {self:?}"),
        }
    }

    fn refused(&self) -> &str {
        match (&self.server, &self.client) {
            (Err(e), Err(_)) => e,
            _ => panic!("expected the handshake refused, saw {self:?}"),
        }
    }
}

/// A server endpoint on 127.0.0.1 answering each connection's first stream
/// with the peer's name. Returns the endpoint and its address; each
/// connection's result goes to `tx`.
fn serve(
    config: quinn::ServerConfig,
    tx: tokio::sync::mpsc::UnboundedSender<Result<Peer, String>>,
) -> (quinn::Endpoint, SocketAddr) {
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("an address"))
        .expect("bind a server endpoint");
    let addr = endpoint.local_addr().expect("the server's address");
    let ep = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(format!("handshake: {e}")));
                        return;
                    }
                };
                let peer = match tls::peer_of_connection(&conn) {
                    Ok(p) => p,
                    Err(e) => {
                        conn.close(1u32.into(), b"forbidden");
                        let _ = tx.send(Err(format!("peer: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(peer.clone()));
                if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = recv.read_to_end(64).await;
                    let _ = send.write_all(peer.name.as_bytes()).await;
                    let _ = send.finish();
                }
                conn.closed().await;
            });
        }
    });
    (endpoint, addr)
}

/// The client side of one connection: a stream round trip, then close.
async fn call(conn: quinn::Connection) -> Result<String, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"ping").await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"done");
    String::from_utf8(reply).map_err(|e| e.to_string())
}

/// One connection attempt from `client_config` to a server with
/// `server_config`.
fn attempt(server_config: quinn::ServerConfig, client_config: quinn::ClientConfig) -> Seen {
    rt().block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (server_ep, addr) = serve(server_config, tx);
        let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))
            .expect("bind a client endpoint");
        let client = tokio::time::timeout(TIMEOUT, async {
            let connecting = client_ep
                .connect_with(client_config, addr, "localhost")
                .map_err(|e| e.to_string())?;
            let conn = connecting.await.map_err(|e| e.to_string())?;
            call(conn).await
        })
        .await
        .unwrap_or_else(|_| Err("client timed out".to_string()));
        let server = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| Err("server saw no connection".to_string()));
        server_ep.close(0u32.into(), b"");
        client_ep.close(0u32.into(), b"");
        Seen { server, client }
    })
}

#[test]
fn dev_clients_connect_with_their_roles() {
    let dir = pki("a");
    for (name, role) in [
        ("client", Role::Caller),
        ("analyst", Role::Analyst),
        ("admin", Role::Admin),
    ] {
        let seen = attempt(server(dir, None), dev_client(dir, name));
        assert_eq!(
            *seen.accepted(),
            Peer {
                name: name.to_string(),
                role
            }
        );
    }
}

#[test]
fn a_handshake_without_a_client_certificate_is_refused() {
    let dir = pki("a");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&dir.join("ca.pem"))).expect("the dev CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    let client = tls::quinn_client_config_with(config).expect("a QUIC client config");
    let why = attempt(server(dir, None), client).refused().to_string();
    assert!(why.contains("peer sent no certificates"), "{why}");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let files = ClientFiles {
        server_ca: pki("a").join("ca.pem"),
        cert: pki("b").join("client.pem"),
        key: pki("b").join("client.key"),
    };
    let seen = attempt(server(pki("a"), None), client(&files));
    assert!(seen.refused().contains("UnknownIssuer"), "{seen:?}");
}

#[test]
fn a_certificate_without_client_auth_usage_is_refused() {
    // The server's own certificate chains to the CA but is for server auth.
    let dir = pki("a");
    let files = ClientFiles {
        server_ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let seen = attempt(server(dir, None), client(&files));
    assert!(
        seen.refused()
            .contains("extended key usage for client authentication"),
        "{seen:?}"
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let dir = pki("a");
    let out = scratch("expired");
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    for (name, from, until, why) in [
        ("expired", now - day * 30, now - day, "certificate expired"),
        (
            "future",
            now + day,
            now + day * 30,
            "certificate not valid yet",
        ),
    ] {
        tls::issue_with(dir, Some(Role::Admin), name, from, until)
            .and_then(|i| i.write_to(&out))
            .unwrap_or_else(|e| panic!("{e}"));
        let files = ClientFiles {
            server_ca: dir.join("ca.pem"),
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}.key")),
        };
        let seen = attempt(server(dir, None), client(&files));
        assert!(seen.refused().contains(why), "{name}: {seen:?}");
    }
}

#[test]
fn a_revoked_certificate_is_refused_and_others_still_connect() {
    let dir = pki("a");
    let out = scratch("revoked");
    for name in ["revoked", "kept"] {
        tls::issue(dir, Role::Caller, name, &out).unwrap_or_else(|e| panic!("{e}"));
    }
    let crl = tls::crl(dir, &[der(&out.join("revoked.pem"))]).unwrap_or_else(|e| panic!("{e}"));
    let crl_path = out.join("crl.pem");
    std::fs::write(&crl_path, crl).expect("write the CRL");
    let files = |name: &str| ClientFiles {
        server_ca: dir.join("ca.pem"),
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}.key")),
    };

    let seen = attempt(server(dir, Some(&crl_path)), client(&files("revoked")));
    assert!(seen.refused().contains("Revoked"), "{seen:?}");
    // Without the CRL the same certificate is fine: the CRL refused it.
    let seen = attempt(server(dir, None), client(&files("revoked")));
    assert_eq!(seen.accepted().name, "revoked");

    let seen = attempt(server(dir, Some(&crl_path)), client(&files("kept")));
    assert_eq!(
        *seen.accepted(),
        Peer {
            name: "kept".to_string(),
            role: Role::Caller
        }
    );
    let seen = attempt(server(dir, Some(&crl_path)), dev_client(dir, "analyst"));
    assert_eq!(seen.accepted().role, Role::Analyst);
}

#[test]
fn a_crl_from_another_ca_is_refused_at_startup() {
    let out = scratch("foreign-crl");
    std::fs::create_dir_all(&out).expect("scratch dir");
    let crl_path = out.join("crl.pem");
    let crl = tls::crl(pki("b"), &[]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&crl_path, crl).expect("write the CRL");
    let err = tls::server_config(pki("a"), Some(&crl_path)).expect_err("a foreign CRL");
    assert!(matches!(err, TlsError::Crl { .. }), "{err}");
    assert!(err.to_string().contains("not the client CA"), "{err}");

    std::fs::write(&crl_path, "not a crl\n").expect("write");
    let err = tls::server_config(pki("a"), Some(&crl_path)).expect_err("not PEM");
    assert!(err.to_string().contains("crl.pem"), "{err}");
}

#[test]
fn wrong_or_missing_alpn_is_refused() {
    let dir = pki("a");
    for alpn in [vec![b"portcullis/2".to_vec()], vec![b"h3".to_vec()], vec![]] {
        let mut config = tls::client_config(dir, "client").unwrap_or_else(|e| panic!("{e}"));
        config.alpn_protocols = alpn.clone();
        let client = tls::quinn_client_config_with(config).expect("a QUIC client config");
        let seen = attempt(server(dir, None), client);
        assert!(
            seen.refused()
                .contains("peer doesn't support any known protocol"),
            "ALPN {alpn:?}: {seen:?}"
        );
    }
}

#[test]
fn a_certificate_without_a_role_is_forbidden_everything() {
    let dir = pki("a");
    let out = scratch("no-role");
    let issued = tls::issue_with(
        dir,
        None,
        "anon",
        OffsetDateTime::now_utc() - time::Duration::days(1),
        OffsetDateTime::now_utc() + time::Duration::days(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cert = issued.cert_der().unwrap_or_else(|e| panic!("{e}"));
    match tls::peer_of(&cert) {
        Err(TlsError::NoRole { name }) => assert_eq!(name, "anon"),
        other => panic!("expected NoRole, got {other:?}"),
    }
    issued.write_to(&out).unwrap_or_else(|e| panic!("{e}"));
    let files = ClientFiles {
        server_ca: dir.join("ca.pem"),
        cert: out.join("anon.pem"),
        key: out.join("anon.key"),
    };
    // The handshake itself passes (the chain is good); the application
    // refuses: no role is no permission, never a default role.
    let seen = attempt(server(dir, None), client(&files));
    assert!(seen.refused().contains("no portcullis:role:"), "{seen:?}");
}

#[test]
fn peer_of_reads_only_the_uri_sans() {
    let dir = pki("a");
    assert_eq!(
        tls::peer_of(&der(&dir.join("admin.pem"))).expect("admin"),
        Peer {
            name: "admin".to_string(),
            role: Role::Admin
        }
    );
    // The server's certificate names no client: refused, not guessed from
    // its CN.
    let err = tls::peer_of(&der(&dir.join("server.pem"))).expect_err("server cert");
    assert!(err.to_string().contains("portcullis:client:"), "{err}");
    let err = tls::peer_of(&CertificateDer::from(b"garbage".to_vec())).expect_err("garbage");
    assert!(matches!(err, TlsError::Peer { .. }), "{err}");
}

#[test]
fn zero_rtt_is_refused() {
    let dir = pki("a");
    let base = tls::server_config(dir, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(base.max_early_data_size, 0);
    assert!(!base.send_half_rtt_data);
    assert_eq!(base.alpn_protocols, vec![b"portcullis/1".to_vec()]);
    assert_eq!(base.send_tls13_tickets, 0);
    let ours = tls::client_config(dir, "client").unwrap_or_else(|e| panic!("{e}"));
    assert!(!ours.enable_early_data);

    // A client that wants 0-RTT, against: our server; our server with
    // resumption turned back on (tickets, but none allowing early data);
    // and, as a control that the test can see 0-RTT at all, that server
    // with early data allowed.
    let with_tickets = |early: u32| {
        let mut c = tls::server_config(dir, None).unwrap_or_else(|e| panic!("{e}"));
        c.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        c.send_tls13_tickets = 2;
        c.max_early_data_size = early;
        c
    };
    for (label, config, zero_rtt_expected) in [
        ("ours", base, false),
        ("ours with tickets", with_tickets(0), false),
        ("control", with_tickets(u32::MAX), true),
    ] {
        let got = zero_rtt_attempt(config);
        assert_eq!(got, Ok(zero_rtt_expected), "{label}");
    }
}

/// Connects twice with one early-data-enabled client (so the second can
/// use a ticket from the first) and says whether the second connection
/// sent 0-RTT data the server accepted.
fn zero_rtt_attempt(server_config: rustls::ServerConfig) -> Result<bool, String> {
    let dir = pki("a");
    let mut config = tls::client_config(dir, "client").map_err(|e| e.to_string())?;
    config.enable_early_data = true;
    let client_config = tls::quinn_client_config_with(config).map_err(|e| e.to_string())?;
    let server_config = tls::quinn_server_config_with(server_config).map_err(|e| e.to_string())?;
    rt().block_on(async move {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (server_ep, addr) = serve(server_config, tx);
        let mut client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))
            .expect("bind a client endpoint");
        client_ep.set_default_client_config(client_config);
        let result = tokio::time::timeout(TIMEOUT, async {
            let first = client_ep
                .connect(addr, "localhost")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(call(first).await?, "client");
            let connecting = client_ep
                .connect(addr, "localhost")
                .map_err(|e| e.to_string())?;
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    let reply = call(conn.clone()).await;
                    let accepted = accepted.await;
                    reply.map(|_| accepted)
                }
                Err(connecting) => {
                    // No early keys: a normal handshake, still with the
                    // client certificate.
                    let conn = connecting.await.map_err(|e| e.to_string())?;
                    assert_eq!(call(conn).await?, "client");
                    Ok(false)
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        server_ep.close(0u32.into(), b"");
        client_ep.close(0u32.into(), b"");
        result
    })
}

#[test]
fn dev_pki_writes_ten_files_with_key_modes_and_never_overwrites() {
    let dir = pki("a");
    for f in tls::DEV_FILES {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mode = meta.permissions().mode() & 0o777;
        if f.ends_with(".key") {
            assert_eq!(mode, 0o600, "{f}");
        } else {
            assert_eq!(mode & 0o600, 0o600, "{f}");
            assert_eq!(
                mode & 0o022,
                0,
                "{f}: certificates are not writable by others"
            );
        }
    }
    let before = std::fs::read(dir.join("ca.key")).expect("ca.key");
    let err = tls::dev_pki(dir).expect_err("a second dev PKI in the same directory");
    assert!(matches!(err, TlsError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("refusing to replace"), "{err}");
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("ca.key"), before);

    // Any one of the ten files present is enough to refuse, before writing.
    let partial = scratch("partial");
    std::fs::create_dir_all(&partial).expect("scratch dir");
    std::fs::write(partial.join("admin.key"), "mine").expect("write");
    let err = tls::dev_pki(&partial).expect_err("admin.key exists");
    assert!(err.to_string().contains("admin.key"), "{err}");
    assert!(!partial.join("ca.key").exists());
}

#[test]
fn issue_makes_a_certificate_that_chains_and_carries_its_role() {
    let dir = pki("a");
    let out = scratch("issue");
    let (cert, key) =
        tls::issue(dir, Role::Analyst, "desk-7", &out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert, out.join("desk-7.pem"));
    assert_eq!(key, out.join("desk-7.key"));
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        tls::peer_of(&der(&cert)).expect("peer"),
        Peer {
            name: "desk-7".to_string(),
            role: Role::Analyst
        }
    );
    let files = ClientFiles {
        server_ca: dir.join("ca.pem"),
        cert: cert.clone(),
        key: key.clone(),
    };
    assert_eq!(
        attempt(server(dir, None), client(&files)).accepted().name,
        "desk-7"
    );

    // Never replaced; names that could escape the directory are refused.
    let err = tls::issue(dir, Role::Admin, "desk-7", &out).expect_err("exists");
    assert!(matches!(err, TlsError::Exists { .. }), "{err}");
    for bad in ["../up", "", ".hidden", "-opt", "a/b", "x y"] {
        let err = tls::issue(dir, Role::Caller, bad, &out).expect_err(bad);
        assert!(matches!(err, TlsError::BadName { .. }), "{bad}: {err}");
    }
    // A directory without a CA key cannot issue.
    let err = tls::issue(&out, Role::Caller, "x", &out).expect_err("no CA");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn config_errors_name_the_file_and_the_fault() {
    let dir = pki("a");
    let out = scratch("errors");
    std::fs::create_dir_all(&out).expect("scratch dir");
    for f in ["ca.pem", "server.pem"] {
        std::fs::copy(dir.join(f), out.join(f)).expect("copy");
    }
    // Missing key.
    let err = tls::server_config(&out, None).expect_err("no key");
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("server.key"), "{err}");
    // Not PEM.
    std::fs::write(out.join("server.key"), "hello\n").expect("write");
    let err = tls::server_config(&out, None).expect_err("not PEM");
    assert!(err.to_string().contains("server.key"), "{err}");
    assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
    // The right key, but readable by others.
    std::fs::copy(dir.join("server.key"), out.join("server.key")).expect("copy");
    {
        use std::os::unix::fs::PermissionsExt;
        let shared = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(out.join("server.key"), shared).expect("chmod");
    }
    let err = tls::server_config(&out, None).expect_err("a shared key");
    assert!(matches!(err, TlsError::KeyShared { .. }), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::remove_file(out.join("server.key")).expect("rm");
    // Another certificate's key.
    std::fs::copy(dir.join("client.key"), out.join("server.key")).expect("copy");
    let err = tls::server_config(&out, None).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    // An empty CA file.
    std::fs::write(out.join("ca.pem"), "").expect("write");
    let err = tls::server_config(&out, None).expect_err("empty CA");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    // The error never carries the key.
    let key = std::fs::read_to_string(dir.join("client.key")).expect("key");
    let body: String = key.lines().nth(1).unwrap_or_default().to_string();
    assert!(!format!("{err} {err:?}").contains(&body));
}

#[test]
fn role_names_round_trip() {
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
        assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
    }
    assert_eq!(Role::parse("Admin"), None);
    assert!("root".parse::<Role>().is_err());
    assert!(!may_send(Role::Caller, Kind::Verification));
    assert!(may_send(Role::Analyst, Kind::Verification));
    assert!(may_send(Role::Admin, Kind::Verification));
}

#[test]
fn certs_commands_write_files_and_exit_with_the_right_codes() {
    let out = scratch("cmd");
    let dev = Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(&out)
        .output()
        .expect("run certs dev");
    assert!(dev.status.success(), "{dev:?}");
    let stdout = String::from_utf8_lossy(&dev.stdout);
    for f in tls::DEV_FILES
        .iter()
        .chain(&portcullis::keys::DEV_KEY_FILES)
    {
        assert!(stdout.contains(f), "{f} in {stdout}");
    }
    let written = stdout.lines().filter(|l| l.starts_with("wrote ")).count();
    assert_eq!(written, tls::DEV_FILES.len() + 2, "{stdout}");
    for f in portcullis::keys::DEV_KEY_FILES {
        let mode = std::fs::metadata(out.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(portcullis::keys::Keys::load(&out).is_ok());
    assert!(!stdout.contains("PRIVATE KEY"));
    let again = Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(&out)
        .output()
        .expect("run certs dev");
    assert_eq!(again.status.code(), Some(1), "{again:?}");

    let issued = out.join("more");
    let issue = |role: &str, name: &str| {
        Command::new(BIN)
            .args(["certs", "issue", "--role", role, "--name", name, "--ca"])
            .arg(&out)
            .arg("--out")
            .arg(&issued)
            .output()
            .expect("run certs issue")
    };
    let ok = issue("admin", "ops");
    assert!(ok.status.success(), "{ok:?}");
    assert!(issued.join("ops.pem").exists() && issued.join("ops.key").exists());
    let bad = issue("wizard", "w");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
    assert_eq!(issue("admin", "ops").status.code(), Some(1));
}
