//! The Rust client and `portcullis call`, against the load generator's echo
//! server (the same TLS and QUIC transport as the gateway; each request
//! frame answered with its own bytes), so the client's side of the wire
//! contract is tested without the gateway.

use crate::support::scratch_dir;
use portcullis::client::{Client, ClientError};
use portcullis::loadgen::echo;
use portcullis::tls;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// Nothing here takes more than milliseconds; a hang fails fast.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A development PKI shared by the tests of this file, and another one
/// whose CA the echo server does not know.
fn pki(which: &str) -> &'static Path {
    static A: OnceLock<PathBuf> = OnceLock::new();
    static B: OnceLock<PathBuf> = OnceLock::new();
    let cell = if which == "a" { &A } else { &B };
    cell.get_or_init(|| {
        let dir = scratch_dir("client", &format!("pki-{which}"));
        std::fs::remove_dir(&dir).expect("an empty scratch directory");
        tls::dev_pki(&dir).unwrap_or_else(|e| panic!("dev_pki {}: {e}", dir.display()));
        dir
    })
}

fn echo_server() -> (SocketAddr, echo::EchoHandle) {
    echo::start(pki("a")).unwrap_or_else(|e| panic!("echo server: {e}"))
}

async fn connect(addr: SocketAddr, who: &str) -> Client {
    Client::connect(addr, pki("a"), who, "localhost")
        .await
        .unwrap_or_else(|e| panic!("connect as {who}: {e}"))
        .with_timeout(TIMEOUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_round_trips_one_body() {
    let (addr, _echo) = echo_server();
    let client = connect(addr, "client").await;
    let body = br#"{"kind":"lock","msisdn":"+447700900123","scope":"all"}"#;
    assert_eq!(client.call(body).await.unwrap(), body);
    // A body of exactly the largest frame goes through.
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(65536 - 8));
    assert_eq!(big.len(), 65536);
    assert_eq!(client.call(big.as_bytes()).await.unwrap(), big.as_bytes());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_frames_are_answered_in_order() {
    let (addr, _echo) = echo_server();
    let client = connect(addr, "client").await;
    // About 400 KB in all, past the server's stream window (2 frames), so
    // answers must be read while requests are still being written.
    let bodies: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"n":{i},"pad":"{}"}}"#, "p".repeat((i * 7919) % 20_000)))
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    let answers = client.pipeline(&refs).await.unwrap();
    assert_eq!(answers.len(), bodies.len());
    for (a, b) in answers.iter().zip(&bodies) {
        assert_eq!(a, b.as_bytes());
    }
    assert!(client.pipeline(&[]).await.unwrap().is_empty());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_empty_body_is_refused_before_sending() {
    let (addr, _echo) = echo_server();
    let client = connect(addr, "client").await;
    let long = vec![b' '; 65537];
    match client.call(&long).await {
        Err(ClientError::TooLong { len, max }) => assert_eq!((len, max), (65537, 65536)),
        other => panic!("expected TooLong, got {other:?}"),
    }
    let message = client.call(&long).await.unwrap_err().to_string();
    assert!(
        message.contains("65537") && message.contains("not sent"),
        "{message}"
    );
    assert!(matches!(client.call(b"").await, Err(ClientError::Empty)));
    // A pipeline with one bad body sends none of them.
    let err = client.pipeline(&[b"{}", &long]).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLong { .. }), "{err:?}");
    // A client set to a smaller limit refuses at that limit.
    let small = connect(addr, "client").await.with_frame_bytes_max(10);
    assert!(matches!(
        small.call(b"{\"a\":12345}").await,
        Err(ClientError::TooLong { len: 11, max: 10 })
    ));
    // Nothing was sent, so the connection is as good as before.
    assert_eq!(client.call(b"{}").await.unwrap(), b"{}");
    client.close().await;
    small.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_helpers_send_the_contracts_bodies() {
    let (addr, _echo) = echo_server();
    let client = connect(addr, "analyst").await;
    let event = r#"{"id":"r1","kind":"port_out","msisdn":"+447700900123","account":"A1","recipient":"carrier-2"}"#;
    let v = client.decide(event).await.unwrap();
    assert_eq!(v["id"], "r1");
    let v = client
        .signal(r#"{"kind":"auth_failure","account":"A1"}"#)
        .await
        .unwrap();
    assert_eq!(v["kind"], "auth_failure");
    // The echo shows the `await` body the client wrote, escaping and all.
    let v = client.await_hold("r\"1", 250).await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind":"await","ref":"r\"1","timeout_ms":250})
    );
    // An answer that is not JSON is a typed error, not a panic.
    match client.decide("not json").await {
        Err(ClientError::NotJson(_)) => {}
        other => panic!("expected NotJson, got {other:?}"),
    }
    assert_eq!(client.connection().remote_address(), addr);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_typed() {
    let (addr, _echo) = echo_server();
    // A certificate that is not there.
    match Client::connect(addr, pki("a"), "nobody", "localhost").await {
        Err(ClientError::Tls(tls::TlsError::Read { .. })) => {}
        other => panic!("expected a TLS read error, got {other:?}"),
    }
    // A name that could leave the directory.
    match Client::connect(addr, pki("a"), "../admin", "localhost").await {
        Err(ClientError::Tls(tls::TlsError::BadName { .. })) => {}
        other => panic!("expected a bad name, got {other:?}"),
    }
    // A server the client's CA did not sign: the handshake fails.
    let refused = tokio::time::timeout(
        TIMEOUT,
        Client::connect(addr, pki("b"), "client", "localhost"),
    )
    .await
    .expect("the handshake ends quickly");
    match refused {
        Err(ClientError::Connection(_)) => {}
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

fn call(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("call")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis call");
    let mut input = child.stdin.take().expect("a piped stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("portcullis call ends")
}

#[test]
fn call_sends_each_line_and_prints_each_answer() {
    let (addr, _echo) = echo_server();
    let addr_s = addr.to_string();
    let dir = pki("a").to_str().expect("a UTF-8 path");
    let args = ["--addr", &addr_s, "--tls-dir", dir];
    let input = b"{\"kind\":\"lock\",\"n\":1}\n\n   \n{\"n\":2}\r\n{\"n\":\n";
    let out = call(&args, input);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"kind\":\"lock\",\"n\":1}\n{\"n\":2}\n{\"n\":\n"
    );
    // A line over the frame limit is named and skipped; the rest go on.
    let mut input = b"{\"n\":1}\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 70_000));
    input.extend_from_slice(b"\n{\"n\":3}\n");
    let out = call(&args, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("skipped"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"n\":1}\n{\"n\":3}\n"
    );
}

#[test]
fn call_names_the_address_when_it_cannot_connect() {
    let (addr, _echo) = echo_server();
    let addr_s = addr.to_string();
    // The other PKI's CA does not know the server's certificate.
    let dir = pki("b").to_str().expect("a UTF-8 path");
    let out = call(&["--addr", &addr_s, "--tls-dir", dir], b"{}\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr_s), "{stderr}");
    assert!(out.stdout.is_empty());
}
