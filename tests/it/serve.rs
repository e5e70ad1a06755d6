//! `portcullis serve` over real QUIC on loopback: the wire contract end to
//! end, limits, shutdown. The server runs in the test's process
//! ([`Server::start`]) so that tests drive its clock; the binary's own
//! behaviour (flags, signals, exit codes) is tested in `serve_cli`.

use crate::support::{rt, scratch_dir};
use portcullis::contract::Timestamp;
use portcullis::edge::quic::frame::{FrameDecoder, encode};
use portcullis::gateway::clock::{Clock, ManualClock, SystemClock};
use portcullis::server::{Config, Server};
use portcullis::tls::{self, ClientFiles, Role};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// No exchange here takes more than milliseconds; a hang fails fast.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The development PKI shared by these tests, with a second caller `pos2`.
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("serve", "pki");
        tls::dev_pki(&dir).unwrap_or_else(|e| panic!("dev_pki: {e}"));
        tls::issue(&dir, Role::Caller, "pos2", &dir).unwrap_or_else(|e| panic!("issue: {e}"));
        dir
    })
}

async fn start(config: Config, clock: Arc<dyn Clock>) -> Server {
    Server::start(config, clock)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// A client connection presenting `name`'s certificate from the PKI.
async fn connect(addr: SocketAddr, name: &str) -> (quinn::Endpoint, quinn::Connection) {
    connect_with(
        addr,
        &ClientFiles::in_dir(pki(), name).expect("a valid name"),
    )
    .await
    .unwrap_or_else(|e| panic!("connect as {name}: {e}"))
}

async fn connect_with(
    addr: SocketAddr,
    files: &ClientFiles,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let config = tls::quinn_client_config(files).map_err(|e| e.to_string())?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))
        .map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    // The server may still refuse after the client's side of the handshake
    // (it reads the client certificate last): a stream round trip tells.
    Ok((endpoint, conn))
}

/// What came back on one stream: the answer bodies, and whether the
/// server finished the stream cleanly.
#[derive(Debug)]
struct Exchange {
    answers: Vec<Value>,
    finished: bool,
}

/// Sends `wire` (already framed) on a new stream, finishes it when
/// `finish`, and reads the server's side to its end.
async fn exchange(conn: &quinn::Connection, wire: &[u8], finish: bool) -> Result<Exchange, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(wire).await.map_err(|e| e.to_string())?;
    if finish {
        send.finish().map_err(|e| e.to_string())?;
    }
    let bytes = tokio::time::timeout(TIMEOUT, recv.read_to_end(1 << 24))
        .await
        .map_err(|_| "no end of stream".to_string())?;
    let (bytes, finished) = match bytes {
        Ok(b) => (b, true),
        Err(e) => return Err(e.to_string()),
    };
    let mut dec = FrameDecoder::default();
    let mut answers = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let used = dec.push(rest);
        rest = &rest[used..];
        while let Some(f) = dec.next() {
            let body = f.map_err(|e| format!("server framing: {e}"))?;
            answers.push(serde_json::from_slice(&body).map_err(|e| format!("answer JSON: {e}"))?);
        }
    }
    dec.end().map_err(|e| format!("server framing: {e}"))?;
    Ok(Exchange { answers, finished })
}

fn frames(bodies: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        encode(b.as_bytes(), &mut out).expect("a body of valid length");
    }
    out
}

/// One request on its own stream; its one answer.
async fn call(conn: &quinn::Connection, body: &str) -> Value {
    let ex = exchange(conn, &frames(&[body]), true)
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(ex.answers.len(), 1, "{body}: {ex:?}");
    ex.answers.into_iter().next().expect("one answer")
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

const SWAP: &str = r#"{"id":"1","kind":"sim_swap","msisdn":"+447700900001","account":"A1","iccid":"8944110000000000008"}"#;

/// A generated multi-day trace sent over QUIC, one request at a time with
/// the server's clock set to each event's time, is decided exactly as
/// replay decides it: the same answer bytes, the same alerts.
#[test]
fn a_generated_trace_over_quic_is_decided_as_replay_decides_it() {
    let cfg = portcullis::traffic::Config {
        seed: 11,
        subscribers: 300,
        mean_gap_ms: 60_000,
        ..portcullis::traffic::Config::default()
    };
    let mut input = Vec::new();
    portcullis::traffic::write(&cfg, 3_000, &mut input).expect("in memory");
    let replayed = crate::support::replay_with(None, std::str::from_utf8(&input).expect("UTF-8"));
    let lines: Vec<&str> = std::str::from_utf8(&input)
        .expect("UTF-8")
        .lines()
        .collect();
    let first = portcullis::contract::parse_line(lines[0], portcullis::contract::AtRule::Required)
        .expect("valid")
        .at
        .expect("at");
    let last = portcullis::contract::parse_line(
        lines[lines.len() - 1],
        portcullis::contract::AtRule::Required,
    )
    .expect("valid")
    .at
    .expect("at");
    assert!(
        last.unix_secs() - first.unix_secs() > 2 * 86_400,
        "a multi-day trace"
    );
    rt().block_on(async {
        let clock = Arc::new(ManualClock::new(first));
        let server = start(Config::local(pki()), clock.clone()).await;
        let (_ep, conn) = connect(server.local_addr(), "admin").await;
        let mut got = Vec::new();
        for line in &lines {
            let ev = portcullis::contract::parse_line(line, portcullis::contract::AtRule::Required)
                .expect("generated lines are valid");
            clock.set(ev.at.expect("replay lines carry at"));
            // Verifications name holds CLIENT:ID over the network.
            let body = match ev.kind {
                portcullis::contract::Kind::Verification => {
                    let mut v: Value = serde_json::from_str(line).expect("JSON");
                    let r = v["ref"].as_str().expect("a ref").to_string();
                    v["ref"] = Value::String(format!("admin:{r}"));
                    v.to_string()
                }
                _ => line.to_string(),
            };
            got.push(call(&conn, &body).await);
        }
        let want: Vec<Value> = replayed
            .iter()
            .map(|l| serde_json::from_str(l).expect("replay JSON"))
            .collect();
        let decisions = |vs: &[Value]| -> Vec<Value> {
            vs.iter()
                .filter(|v| v.get("decision").is_some())
                .cloned()
                .collect()
        };
        let (g, w) = (decisions(&got), decisions(&want));
        assert!(w.len() > 500, "{}", w.len());
        assert_eq!(g.len(), w.len());
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            assert_eq!(g, w, "decision {i}");
        }
        let alerts_over_quic: Vec<&Value> = got
            .iter()
            .filter_map(|v| v.get("alerts"))
            .flat_map(|a| a.as_array().expect("an array"))
            .collect();
        let alerts_replayed: Vec<&Value> =
            want.iter().filter(|v| v.get("alert").is_some()).collect();
        assert!(!alerts_replayed.is_empty());
        assert_eq!(alerts_over_quic, alerts_replayed);
        assert_eq!(server.alerts().raised() as usize, alerts_replayed.len());
        assert!(server.shutdown().await);
    });
}

/// Frames sent back to back on one stream are answered in order, one
/// answer each, and the server finishes the stream after the last.
#[test]
fn pipelined_frames_are_answered_in_order() {
    rt().block_on(async {
        let server = start(Config::local(pki()), Arc::new(SystemClock)).await;
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        let bodies: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"id":"p{i}","kind":"sim_swap","msisdn":"+4477009{i:05}","account":"A{i}","iccid":"8944110000000000008"}}"#
                )
            })
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let ex = exchange(&conn, &frames(&refs), true).await.expect("an exchange");
        assert!(ex.finished);
        assert_eq!(ex.answers.len(), 200);
        for (i, a) in ex.answers.iter().enumerate() {
            assert_eq!(a["id"], format!("p{i}"), "{a}");
            assert_eq!(a["decision"], "allow", "{a}");
        }
        // Many streams at once on one connection.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let body = format!(r#"{{"id":"s{i}","kind":"auth_failure","account":"B{i}"}}"#);
                call(&conn, &body).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("a task")["ok"], true);
        }
        assert!(server.shutdown().await);
    });
}

/// Every bad-frame case: a body that is not UTF-8, not JSON or not an
/// object is `bad_frame` and the stream goes on; a length of 0 or over
/// `frame_bytes_max` is `bad_frame`, then the stream ends; so does a
/// stream that ends inside a frame. The connection stays usable.
#[test]
fn every_bad_frame_case() {
    rt().block_on(async {
        let server = start(Config::local(pki()), Arc::new(SystemClock)).await;
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        // Bodies of valid length: the stream goes on.
        let mut wire = Vec::new();
        for body in [
            &b"\xff\xfe"[..],
            b"not json",
            b"[1,2]",
            b"\"s\"",
            b"{\"kind\":",
        ] {
            encode(body, &mut wire).expect("valid length");
        }
        encode(SWAP.as_bytes(), &mut wire).expect("valid length");
        let ex = exchange(&conn, &wire, true).await.expect("an exchange");
        assert_eq!(ex.answers.len(), 6, "{ex:?}");
        for a in &ex.answers[..5] {
            assert_eq!(code(a), "bad_frame", "{a}");
            assert_eq!(a["id"], Value::Null);
            assert_eq!(a["error"]["retryable"], false);
        }
        assert_eq!(ex.answers[5]["decision"], "allow");

        // Fatal lengths: answered, then the server finishes and stops reading.
        for prefix in [[0u8, 0, 0, 0], [0, 1, 0, 1], [0xff, 0xff, 0xff, 0xff]] {
            let mut wire = frames(&[r#"{"kind":"auth_failure","account":"A1"}"#]);
            wire.extend_from_slice(&prefix);
            wire.extend_from_slice(&frames(&[SWAP]));
            // The client does not finish: the server ends the stream itself.
            let ex = exchange(&conn, &wire, false).await.expect("an exchange");
            assert!(ex.finished);
            assert_eq!(ex.answers.len(), 2, "{prefix:?}: {ex:?}");
            assert_eq!(ex.answers[0]["ok"], true);
            assert_eq!(code(&ex.answers[1]), "bad_frame", "{:?}", ex.answers[1]);
        }

        // A stream that ends inside a frame.
        let mut wire = frames(&[SWAP]);
        wire.extend_from_slice(&[0, 0, 0, 10, b'{']);
        let ex = exchange(&conn, &wire, true).await.expect("an exchange");
        assert_eq!(ex.answers.len(), 2, "{ex:?}");
        assert_eq!(code(&ex.answers[1]), "bad_frame");

        // The connection is still usable.
        assert_eq!(call(&conn, SWAP).await["decision"], "allow");
        assert!(server.shutdown().await);
    });
}

/// A caller may not verify or edit lists; an analyst may. Ids of two
/// callers are kept apart; each one's retry gets its own first answer.
#[test]
fn roles_and_id_scopes() {
    rt().block_on(async {
        let server = start(Config::local(pki()), Arc::new(SystemClock)).await;
        let addr = server.local_addr();
        let (_e1, pos) = connect(addr, "client").await;
        let (_e2, pos2) = connect(addr, "pos2").await;
        let (_e3, desk) = connect(addr, "analyst").await;
        for body in [
            r#"{"kind":"verification","ref":"client:1","result":"pass"}"#,
            r#"{"kind":"list_add","list":"blocked_imei","value":"490154203237518"}"#,
            r#"{"kind":"list_remove","list":"blocked_imei","value":"490154203237518"}"#,
        ] {
            let v = call(&pos, body).await;
            assert_eq!(code(&v), "forbidden", "{v}");
            assert_eq!(v["error"]["field"], "kind");
        }
        let first = call(&pos, SWAP).await;
        assert_eq!(first["decision"], "allow", "{first}");
        // pos2's id "1" is another request: no conflict, its own answer.
        let other = SWAP.replace("+447700900001", "+447700900002");
        let v = call(&pos2, &other).await;
        assert_eq!(v["decision"], "allow", "{v}");
        // pos's retry of its own id "1" with pos2's content is a conflict.
        assert_eq!(code(&call(&pos, &other).await), "id_conflict");
        assert_eq!(call(&pos, SWAP).await, first);

        // A hold, awaited by its client, released by the analyst.
        let second = SWAP.replace("\"1\"", "\"2\"");
        assert_eq!(call(&pos, &second).await["decision"], "hold");
        let waiter = {
            let pos = pos.clone();
            tokio::spawn(async move {
                call(&pos, r#"{"kind":"await","ref":"2","timeout_ms":10000}"#).await
            })
        };
        // pos2 cannot see pos's request 2; the analyst can, by CLIENT:ID.
        let v = call(&pos2, r#"{"kind":"await","ref":"2","timeout_ms":0}"#).await;
        assert_eq!(code(&v), "unknown_ref", "{v}");
        let v = call(&desk, r#"{"kind":"await","ref":"client:2","timeout_ms":0}"#).await;
        assert_eq!(v["decision"], "hold", "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v = call(
            &desk,
            r#"{"kind":"verification","ref":"client:2","result":"pass"}"#,
        )
        .await;
        assert_eq!(v["ok"], true, "{v}");
        let awaited = tokio::time::timeout(TIMEOUT, waiter)
            .await
            .expect("in time")
            .expect("a task");
        assert_eq!(awaited["id"], "2");
        assert_eq!(awaited["decision"], "allow", "{awaited}");
        assert!(server.shutdown().await);
    });
}

/// An await that is not resolved answers `hold` at its timeout.
#[test]
fn an_await_times_out_with_hold() {
    rt().block_on(async {
        let server = start(Config::local(pki()), Arc::new(SystemClock)).await;
        let (_ep, pos) = connect(server.local_addr(), "client").await;
        call(&pos, SWAP).await;
        call(&pos, &SWAP.replace("\"1\"", "\"2\"")).await;
        let started = std::time::Instant::now();
        let v = call(&pos, r#"{"kind":"await","ref":"2","timeout_ms":200}"#).await;
        assert_eq!(v["decision"], "hold", "{v}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(server.shutdown().await);
    });
}

/// Handshakes the service must refuse: no client certificate, one from
/// another CA, an expired one, and a revoked one (`--crl`).
#[test]
fn the_service_refuses_bad_client_certificates() {
    let other = scratch_dir("serve", "other-ca");
    tls::dev_pki(&other).unwrap_or_else(|e| panic!("{e}"));
    let out = scratch_dir("serve", "bad-certs");
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    tls::issue_with(
        pki(),
        Some(Role::Caller),
        "expired",
        now - day * 30,
        now - day,
    )
    .and_then(|i| i.write_to(&out))
    .unwrap_or_else(|e| panic!("{e}"));
    tls::issue(pki(), Role::Caller, "revoked", &out).unwrap_or_else(|e| panic!("{e}"));
    let revoked = rustls_pki_types_der(&out.join("revoked.pem"));
    let crl = tls::crl(pki(), &[revoked]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(out.join("crl.pem"), crl).expect("write the CRL");
    let files = |dir: &Path, name: &str| ClientFiles {
        server_ca: pki().join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.crl = Some(out.join("crl.pem"));
        let server = start(config, Arc::new(SystemClock)).await;
        let addr = server.local_addr();
        for (what, files) in [
            ("another CA", files(&other, "client")),
            ("expired", files(&out, "expired")),
            ("revoked", files(&out, "revoked")),
        ] {
            let refused = match connect_with(addr, &files).await {
                Err(_) => true,
                Ok((_ep, conn)) => exchange(&conn, &frames(&[SWAP]), true).await.is_err(),
            };
            assert!(refused, "{what} was let in");
        }
        // No client certificate at all: a client config without one.
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(rustls_pki_types_der(&pki().join("ca.pem")))
                .expect("the CA");
            r
        };
        let mut anon = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
        anon.alpn_protocols = vec![tls::ALPN.to_vec()];
        let anon = tls::quinn_client_config_with(anon).expect("a quinn config");
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address")).expect("bind");
        let refused = match ep
            .connect_with(anon, addr, "localhost")
            .expect("connect")
            .await
        {
            Err(_) => true,
            Ok(conn) => exchange(&conn, &frames(&[SWAP]), true).await.is_err(),
        };
        assert!(refused, "a client without a certificate was let in");
        // A good client still gets in.
        let (_ep, conn) = connect(addr, "client").await;
        assert_eq!(call(&conn, SWAP).await["decision"], "allow");
        assert!(server.shutdown().await);
    });
}

/// A reload re-reads the CRL: the open connection of a certificate it now
/// lists is closed with application error 3, that certificate can no
/// longer connect, and everyone else goes on. A CRL that does not read is
/// refused with the whole reload, and the previous one stays.
#[test]
fn a_reload_revokes_a_certificate_without_a_restart() {
    let out = scratch_dir("serve", "reload-crl");
    tls::issue(pki(), Role::Caller, "stolen", &out).unwrap_or_else(|e| panic!("{e}"));
    let stolen = rustls_pki_types_der(&out.join("stolen.pem"));
    let crl_path = out.join("crl.pem");
    let write_crl = |revoked: &[rustls::pki_types::CertificateDer<'static>]| {
        let crl = tls::crl(pki(), revoked).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&crl_path, crl).expect("write the CRL");
    };
    write_crl(&[]);
    let stolen_files = ClientFiles {
        server_ca: pki().join("ca.pem"),
        cert: out.join("stolen.pem"),
        key: out.join("stolen.key"),
    };
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.crl = Some(crl_path.clone());
        let server = start(config, Arc::new(SystemClock)).await;
        let addr = server.local_addr();
        let (_ep1, thief) = connect_with(addr, &stolen_files).await.expect("not yet revoked");
        assert_eq!(call(&thief, SWAP).await["decision"], "allow");
        let (_ep2, honest) = connect(addr, "client").await;
        assert!(call(&honest, SWAP).await.get("decision").is_some());

        write_crl(&[stolen]);
        let line = server.reload().await.expect("the reload applies");
        assert!(line.contains("(1 revoked)"), "{line}");
        let closed = tokio::time::timeout(TIMEOUT, thief.closed())
            .await
            .expect("the revoked connection closes");
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 3u32.into()),
            "{closed:?}"
        );
        // Refused by the handshake (the new CRL: a TLS alert), not let in
        // and then closed as an open connection is (application error 3).
        let again = handshake_refusal(addr, &stolen_files).await;
        assert!(again.is_some(), "the revoked certificate connected again");
        assert!(call(&honest, SWAP).await.get("decision").is_some());

        std::fs::write(&crl_path, "not a CRL").expect("write");
        let refused = server.reload().await.expect_err("a broken CRL").to_string();
        assert!(refused.contains("CRL"), "{refused}");
        let still = handshake_refusal(addr, &stolen_files).await;
        assert!(still.is_some(), "a refused reload let the revoked certificate back");
        let (_ep3, fresh) = connect(addr, "client").await;
        assert!(call(&fresh, SWAP).await.get("decision").is_some());
        assert!(server.shutdown().await);
    });
}

/// The server takes no datagrams (the contract has none): a client sees
/// that it may send none, so nothing is buffered for them.
#[test]
fn the_server_accepts_no_datagrams() {
    rt().block_on(async {
        let server = start(Config::local(pki()), Arc::new(SystemClock)).await;
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        assert_eq!(conn.max_datagram_size(), None);
        assert!(conn.send_datagram(bytes::Bytes::from_static(b"x")).is_err());
        assert!(server.shutdown().await);
    });
}

/// A reload of a rules file cut to nothing (which compiles, and would allow
/// every request) is refused, and the rules served so far stay: a second
/// swap on a line is still held.
#[test]
fn a_reload_of_a_ruleset_that_cannot_stop_anything_is_refused() {
    let out = scratch_dir("serve", "reload-permissive");
    let rules = out.join("live.rules");
    std::fs::write(&rules, portcullis::rules::DEFAULT_RULES).expect("write the rules");
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.rules = Some(rules.clone());
        let server = start(config, Arc::new(SystemClock)).await;
        let (_ep, pos) = connect(server.local_addr(), "client").await;
        assert_eq!(call(&pos, SWAP).await["decision"], "allow");
        std::fs::write(&rules, "# the rest of the file was lost\n").expect("truncate");
        let refused = server
            .reload()
            .await
            .expect_err("a permissive ruleset")
            .to_string();
        assert!(refused.contains("allow every request"), "{refused}");
        let second = SWAP.replace("\"id\":\"", "\"id\":\"again-");
        assert_eq!(call(&pos, &second).await["decision"], "hold");
        assert!(server.shutdown().await);
    });
}

/// How the server ended a connection presenting `files`: `Some` with the
/// reason when the handshake refused it (a TLS alert, as a connection
/// error), `None` when it was let in (even if closed at once after).
async fn handshake_refusal(addr: SocketAddr, files: &ClientFiles) -> Option<String> {
    let (_ep, conn) = match connect_with(addr, files).await {
        Err(e) => return Some(e),
        Ok(c) => c,
    };
    // The server reads the client certificate after the client's side of
    // the handshake: the connection's end says which way it went.
    let _ = exchange(&conn, &frames(&[SWAP]), true).await;
    match tokio::time::timeout(TIMEOUT, conn.closed()).await {
        Ok(quinn::ConnectionError::ConnectionClosed(c)) => Some(c.to_string()),
        _ => None,
    }
}

fn rustls_pki_types_der(path: &Path) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Over `connections_max` a connection is refused; over
/// `queue_requests_max` a request is answered `overloaded` (retryable),
/// never decided; over `awaits_max` an await is `overloaded`.
#[test]
fn limits_give_the_documented_errors() {
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.limits.connections_max = 1;
        config.limits.queue_requests_max = 1;
        config.limits.awaits_max = 1;
        // A clock that stalls the engine thread, so the queue fills.
        let server = start(config, Arc::new(SlowClock(Duration::from_millis(2)))).await;
        let addr = server.local_addr();
        let (_e1, conn) = connect(addr, "client").await;
        assert_eq!(call(&conn, SWAP).await["decision"], "allow");
        let second =
            match connect_with(addr, &ClientFiles::in_dir(pki(), "analyst").expect("name")).await {
                Err(e) => e,
                Ok((_ep, c)) => exchange(&c, &frames(&[SWAP]), true)
                    .await
                    .expect_err("refused"),
            };
        assert!(second.to_lowercase().contains("refused"), "{second}");

        // Many streams at once, each waiting for the decider.
        let answers = concurrent_streams(&conn, "q", 20, 5).await;
        let overloaded: Vec<&Value> = answers.iter().filter(|a| code(a) == "overloaded").collect();
        assert!(!overloaded.is_empty(), "the queue of 1 never filled");
        for a in &overloaded {
            assert_eq!(a["error"]["retryable"], true);
        }
        assert!(
            answers
                .iter()
                .all(|a| a["ok"] == true || code(a) == "overloaded")
        );

        assert!(server.shutdown().await);

        // Awaits: one may wait, the next is overloaded.
        let mut config = Config::local(pki());
        config.limits.awaits_max = 1;
        let server = start(config, Arc::new(SystemClock)).await;
        let (_e2, conn) = connect(server.local_addr(), "client").await;
        call(&conn, SWAP).await;
        call(&conn, &SWAP.replace("\"1\"", "\"2\"")).await;
        let waiter = {
            let conn = conn.clone();
            tokio::spawn(async move {
                call(&conn, r#"{"kind":"await","ref":"2","timeout_ms":500}"#).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = call(&conn, r#"{"kind":"await","ref":"2","timeout_ms":500}"#).await;
        assert_eq!(code(&v), "overloaded", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("awaits_max")),
            "{v}"
        );
        assert_eq!(waiter.await.expect("a task")["decision"], "hold");
        assert!(server.shutdown().await);

        // Streams: a client over streams_per_connection_max waits for one
        // (QUIC flow control), and gets it when one ends.
        let mut config = Config::local(pki());
        config.limits.streams_per_connection_max = 2;
        let server = start(config, Arc::new(SystemClock)).await;
        let (_e3, conn) = connect(server.local_addr(), "client").await;
        let mut open = Vec::new();
        for _ in 0..2 {
            let (mut send, recv) = conn.open_bi().await.expect("a stream");
            // Unfinished: the stream stays open on both sides.
            send.write_all(&frames(&[SWAP])).await.expect("write");
            open.push((send, recv));
        }
        let third = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
        assert!(third.is_err(), "a third stream was granted");
        let (mut send, mut recv) = open.pop().expect("two streams");
        send.finish().expect("finish");
        recv.read_to_end(1 << 16).await.expect("the answer");
        let third = tokio::time::timeout(TIMEOUT, conn.open_bi()).await;
        assert!(matches!(third, Ok(Ok(_))), "no stream after one ended");
        drop(open);
        assert!(server.shutdown().await);
    });
}

/// A request that waited past `request_deadline_ms` is answered
/// `deadline` (retryable) and not applied.
#[test]
fn a_late_request_is_answered_deadline_and_not_applied() {
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.limits.request_deadline_ms = 5;
        let server = start(config, Arc::new(SlowClock(Duration::from_millis(20)))).await;
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        let answers = concurrent_streams(&conn, "d", 5, 2).await;
        let late: Vec<&Value> = answers.iter().filter(|a| code(a) == "deadline").collect();
        assert!(!late.is_empty(), "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| a["ok"] == true || code(a) == "deadline")
        );
        for a in late {
            assert_eq!(a["error"]["retryable"], true);
            assert!(
                a["id"].as_str().is_some_and(|id| id.starts_with('d')),
                "{a}"
            );
        }
        assert!(server.shutdown().await);
    });
}

/// An idle connection is closed after `idle_timeout_ms`.
#[test]
fn an_idle_connection_is_closed() {
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.limits.idle_timeout_ms = 300;
        let server = start(config, Arc::new(SystemClock)).await;
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        let closed = tokio::time::timeout(TIMEOUT, conn.closed())
            .await
            .expect("closed in time");
        assert!(
            matches!(closed, quinn::ConnectionError::TimedOut),
            "{closed}"
        );
        assert!(server.shutdown().await);
    });
}

/// Shutdown writes every answer in flight: awaits waiting on holds answer
/// at once, pipelined requests all get their answers, and then new
/// connections are refused.
#[test]
fn graceful_shutdown_loses_no_answer_in_flight() {
    rt().block_on(async {
        let server = start(
            Config::local(pki()),
            Arc::new(SlowClock(Duration::from_micros(200))),
        )
        .await;
        let addr = server.local_addr();
        let (_ep, conn) = connect(addr, "client").await;
        call(&conn, SWAP).await;
        call(&conn, &SWAP.replace("\"1\"", "\"2\"")).await;
        let waiter = {
            let conn = conn.clone();
            tokio::spawn(async move {
                call(&conn, r#"{"kind":"await","ref":"2","timeout_ms":30000}"#).await
            })
        };
        // The await is read (and waits) before the load below keeps the
        // workers busy.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut streams = Vec::new();
        for s in 0..10 {
            let conn = conn.clone();
            streams.push(tokio::spawn(async move {
                let bodies: Vec<String> = (0..100)
                    .map(|i| {
                        format!(r#"{{"id":"g{s}-{i}","kind":"auth_failure","account":"G{s}x{i}"}}"#)
                    })
                    .collect();
                let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
                exchange(&conn, &frames(&refs), true).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert!(
            server.shutdown().await,
            "everything in flight finished within the grace period"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let v = waiter.await.expect("a task");
        assert_eq!(v["decision"], "hold", "{v}");
        for s in streams {
            match s.await.expect("a task") {
                Ok(ex) => {
                    assert_eq!(ex.answers.len(), 100, "a stream lost answers");
                    assert!(ex.answers.iter().all(|a| a["ok"] == true), "{ex:?}");
                }
                // A stream opened after the shutdown began is refused whole.
                Err(e) => assert!(
                    e.contains("closed") || e.contains("reset") || e.contains("stopped"),
                    "{e}"
                ),
            }
        }
        // After shutdown: the old connection is closed, and a new one is
        // not answered (a closed endpoint says nothing; give up quickly).
        assert!(exchange(&conn, &frames(&[SWAP]), true).await.is_err());
        let files = ClientFiles::in_dir(pki(), "client").expect("name");
        let again = tokio::time::timeout(Duration::from_secs(1), connect_with(addr, &files)).await;
        assert!(!matches!(again, Ok(Ok(_))), "a connection after shutdown");
    });
}

/// `streams` streams at once, each with `per_stream` signals (ids
/// `PREFIX{stream}-{i}`); every answer. A stream over
/// `queue_requests_max` has one answer, `overloaded`.
async fn concurrent_streams(
    conn: &quinn::Connection,
    prefix: &str,
    streams: usize,
    per_stream: usize,
) -> Vec<Value> {
    let mut tasks = Vec::new();
    for s in 0..streams {
        let conn = conn.clone();
        let bodies: Vec<String> = (0..per_stream)
            .map(|i| {
                format!(r#"{{"id":"{prefix}{s}-{i}","kind":"auth_failure","account":"C{s}x{i}"}}"#)
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
            exchange(&conn, &frames(&refs), true)
                .await
                .expect("an exchange")
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        let ex = t.await.expect("a task");
        let refused = ex.answers.len() == 1 && code(&ex.answers[0]) == "overloaded";
        assert!(refused || ex.answers.len() == per_stream, "{ex:?}");
        answers.extend(ex.answers);
    }
    answers
}

/// A clock that takes its time: it stalls the engine thread so that
/// queues fill and deadlines pass, deterministically enough.
struct SlowClock(Duration);

impl Clock for SlowClock {
    fn now(&self) -> Timestamp {
        std::thread::sleep(self.0);
        SystemClock.now()
    }
}

/// A swap on line `n`, id `n`.
fn swap_n(n: u32) -> String {
    format!(
        r#"{{"id":"f{n}","kind":"sim_swap","msisdn":"+4477009{n:05}","account":"F{n}","iccid":"8944110000000000008"}}"#
    )
}

/// A failed fsync or a failed write under the service: the request whose
/// change could not be made durable is answered `unavailable` (retryable,
/// never an allow), and so is every request after it, even once the disk
/// is healthy again; the server says its store failed (the binary then
/// exits non-zero). What was acknowledged before is on the disk.
#[test]
fn a_failed_sync_or_write_stops_every_answer() {
    use portcullis::store::fault::{Disk, Fault};
    use portcullis::store::{RedbStore, Store};
    for fault in [Fault::SyncFails, Fault::WriteFails] {
        rt().block_on(async {
            let disk = Disk::new();
            let store: Arc<dyn Store> = Arc::new(
                RedbStore::open_backend(Path::new("simulated-disk"), disk.backend())
                    .expect("the store opens"),
            );
            let server =
                Server::start_over(Config::local(pki()), Arc::new(SystemClock), Some(store))
                    .await
                    .unwrap_or_else(|e| panic!("start: {e}"));
            let (_ep, conn) = connect(server.local_addr(), "client").await;
            let first = call(&conn, &swap_n(1)).await;
            assert_eq!(first["decision"], "allow", "{first}");
            assert!(!server.store_failed());
            disk.set_fault(fault);
            let failed = call(&conn, &swap_n(2)).await;
            assert_eq!(code(&failed), "unavailable", "{fault:?}: {failed}");
            assert_eq!(failed["error"]["retryable"], true, "{failed}");
            assert!(server.store_failed(), "{fault:?}");
            disk.set_fault(Fault::None);
            for body in [swap_n(3), swap_n(1)] {
                let v = call(&conn, &body).await;
                assert_eq!(code(&v), "unavailable", "{fault:?}: {body}: {v}");
            }
            server.shutdown().await;
        });
    }
}

/// With more history than `cache_bytes_max` holds, the lines named first
/// are evicted, and read back from the store when named again: their
/// history still holds a fresh swap, and a retry answers as before.
#[test]
fn history_past_the_cache_is_served_from_the_store() {
    use portcullis::client::Client;
    use portcullis::store::{MemoryStore, Store};
    rt().block_on(async {
        let mut config = Config::local(pki());
        config.limits.cache_bytes_max = 1 << 20;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let server = Server::start_over(config, Arc::new(SystemClock), Some(store))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let client = Arc::new(
            Client::connect(server.local_addr(), pki(), "client", "localhost")
                .await
                .expect("connect"),
        );
        let first = client.decide(&swap_n(0)).await.expect("an answer");
        assert_eq!(first["decision"], "allow", "{first}");
        // Enough distinct lines and accounts to pass 1 MiB several times.
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u32 {
            let client = client.clone();
            tasks.spawn(async move {
                for n in 0..1_500u32 {
                    let v = client
                        .decide(&swap_n(1 + t * 1_500 + n))
                        .await
                        .expect("an answer");
                    assert_eq!(v["decision"], "allow", "{v}");
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.expect("a task");
        }
        let retry = client.decide(&swap_n(0)).await.expect("an answer");
        assert_eq!(retry, first);
        let fresh = client
            .decide(&swap_n(0).replace("\"f0\"", "\"f0-again\""))
            .await
            .expect("an answer");
        assert_eq!(fresh["decision"], "hold", "{fresh}");
        server.shutdown().await;
    });
}

/// The record-keeping period: a decision record is kept `records_kept_days`
/// after it was written, then the sweep deletes it from the store; records
/// within the period stay.
#[test]
fn records_past_the_keeping_period_are_deleted() {
    use portcullis::store::{MemoryStore, Store, Table};
    rt().block_on(async {
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse("2026-03-01T10:00:00Z").expect("a time"),
        ));
        let mut config = Config::local(pki());
        config.limits.records_kept_days = 30;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let server = Server::start_over(config, clock.clone(), Some(store.clone()))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        for n in 0..5 {
            call(&conn, &swap_n(n)).await;
        }
        clock.set(Timestamp::parse("2026-03-21T10:00:00Z").expect("a time"));
        for n in 5..8 {
            call(&conn, &swap_n(n)).await;
        }
        let records = || store.scan(Table::Records).expect("scan").len();
        assert_eq!(records(), 8);
        // 31 days after the first five, 11 after the last three.
        clock.set(Timestamp::parse("2026-04-01T10:00:01Z").expect("a time"));
        assert_eq!(
            server.sweep_records().await.map_err(|e| e.to_string()),
            Ok(5)
        );
        assert_eq!(records(), 3);
        assert_eq!(
            server.sweep_records().await.map_err(|e| e.to_string()),
            Ok(0)
        );
        server.shutdown().await;
    });
}

/// Windowed history past its windows is pruned from the store (states not
/// in memory: those are pruned there); decisions are as before.
#[test]
fn history_past_its_windows_is_pruned_from_the_store() {
    use portcullis::store::{MemoryStore, Store, Table};
    rt().block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let stored_bytes = || -> usize {
            store
                .scan(Table::Entities)
                .expect("scan")
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum()
        };
        // Keys that outlive the first server.
        let keys = scratch_dir("serve", "prune-keys");
        portcullis::keys::write_dev_keys(&keys).expect("keys");
        let config = || {
            let mut c = Config::local(pki());
            c.keys = Some(keys.clone());
            c
        };
        let t0 = Timestamp::parse("2026-03-01T10:00:00Z").expect("a time");
        let clock = Arc::new(ManualClock::new(t0));
        let server = Server::start_over(config(), clock.clone(), Some(store.clone()))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        for n in 0..20 {
            let v = call(&conn, &swap_n(n)).await;
            assert_eq!(v["decision"], "allow", "{v}");
        }
        server.shutdown().await;
        let before = stored_bytes();

        // A year on, nothing is in memory: the store's states are pruned.
        let later = Arc::new(ManualClock::new(
            Timestamp::parse("2027-03-01T10:00:00Z").expect("a time"),
        ));
        let server = Server::start_over(config(), later, Some(store.clone()))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let pruned = server.prune().await.expect("pruned");
        assert!(pruned >= 20, "{pruned}");
        assert!(stored_bytes() < before, "{} !< {before}", stored_bytes());
        assert_eq!(server.prune().await.map_err(|e| e.to_string()), Ok(0));
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        let v = call(&conn, &swap_n(0).replace("\"f0\"", "\"f0-later\"")).await;
        assert_eq!(v["decision"], "allow", "{v}");
        server.shutdown().await;
    });
}

/// Alerts are kept in the store, sealed, and come back to the operator's
/// list after a restart.
#[test]
fn alerts_survive_a_restart() {
    use portcullis::store::{MemoryStore, Store, Table};
    rt().block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keys = scratch_dir("serve", "alert-keys");
        portcullis::keys::write_dev_keys(&keys).expect("keys");
        let config = || {
            let mut c = Config::local(pki());
            c.keys = Some(keys.clone());
            c
        };
        let server = Server::start_over(config(), Arc::new(SystemClock), Some(store.clone()))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let (_ep, conn) = connect(server.local_addr(), "client").await;
        for (id, imsi) in [("d1", "234151111111111"), ("d2", "234152222222222")] {
            call(
                &conn,
                &format!(r#"{{"id":"{id}","kind":"device_seen","msisdn":"+447700911222","imsi":"{imsi}","imei":"356938035643809"}}"#),
            )
            .await;
        }
        assert_eq!(server.alerts().list().len(), 1);
        server.shutdown().await;
        let stored = store.scan(Table::Alerts).expect("scan");
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].1.windows(12).any(|w| w == b"447700911222"));

        let server = Server::start_over(config(), Arc::new(SystemClock), Some(store.clone()))
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let kept = server.alerts().list();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].msisdn.to_string(), "+447700911222");
        server.shutdown().await;
    });
}
