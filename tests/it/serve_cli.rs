//! The `portcullis serve` binary: its log line, exit codes, signals.

use crate::support::{rt, scratch_dir};
use portcullis::edge::quic::frame::{FrameDecoder, encode};
use portcullis::tls::{self, ClientFiles};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A `serve` process and the lines of its log.
struct Serving {
    child: Child,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serving {
    fn start(args: &[&str]) -> Serving {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis serve");
        let stderr = child.stderr.take().expect("piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serving {
            child,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `what`; returns it.
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {what:?}; saw {:?}", self.seen),
            }
        }
    }

    fn addr(&mut self) -> SocketAddr {
        let line = self.wait_for("listening quic=");
        let addr = line
            .split("listening quic=")
            .nth(1)
            .expect("an address")
            .trim();
        addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut seen = std::mem::take(&mut self.seen);
        // The log ends when the process does: read it to its end.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(2)) {
            seen.push(line);
        }
        (status, seen)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pki(test: &str) -> PathBuf {
    let dir = scratch_dir("serve-cli", test);
    let tls_dir = dir.join("tls");
    tls::dev_pki(&tls_dir).unwrap_or_else(|e| panic!("{e}"));
    tls_dir
}

/// Runs `serve` with `args` to its exit; (code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .output()
        .expect("run portcullis serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn connect(
    addr: SocketAddr,
    tls_dir: &Path,
    name: &str,
) -> (quinn::Endpoint, quinn::Connection) {
    let files = ClientFiles::in_dir(tls_dir, name).expect("a name");
    let config = tls::quinn_client_config(&files).expect("a client config");
    let endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .expect("connect")
        .await
        .expect("a connection");
    (endpoint, conn)
}

async fn call(conn: &quinn::Connection, body: &str) -> Result<Value, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut wire = Vec::new();
    encode(body.as_bytes(), &mut wire).expect("valid length");
    send.write_all(&wire).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let bytes = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::default();
    dec.push(&bytes);
    let body = dec.next().ok_or("no answer")?.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

fn swap(id: usize) -> String {
    format!(
        r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+4477009{:05}","account":"A{id}","iccid":"8944110000000000008"}}"#,
        id % 100_000
    )
}

/// The one command a developer runs: it logs where it listens, answers,
/// and stops cleanly on SIGTERM.
#[test]
fn serve_logs_its_address_answers_and_stops_on_sigterm() {
    let tls_dir = pki("basic");
    // As `certs dev` writes them: a durable store needs lasting keys.
    portcullis::keys::write_dev_keys(&tls_dir).expect("development keys");
    let data = tls_dir.with_file_name("data");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("UTF-8"),
        "--tls-dir",
        tls_dir.to_str().expect("UTF-8"),
    ]);
    let addr = s.addr();
    assert_ne!(addr.port(), 0);
    rt().block_on(async {
        let (_ep, conn) = connect(addr, &tls_dir, "client").await;
        let v = call(&conn, &swap(1)).await.expect("an answer");
        assert_eq!(v["decision"], "allow", "{v}");
    });
    s.signal("-TERM");
    let (status, log) = s.wait();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

#[test]
fn serve_exits_non_zero_with_a_clear_message() {
    let tls_dir = pki("errors");
    let tls = tls_dir.to_str().expect("UTF-8");
    let file = |name: &str, text: &str| -> String {
        let path = tls_dir.with_file_name(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("UTF-8").to_string()
    };
    let bad_config = file("bad.toml", "[limits]\nframe_bytes_max = 1\n");
    let typo_config = file("typo.toml", "[limits]\nframe_bytes = 100\n");
    let broken_rules = file("broken.rules", "rule x: nonsense\n");
    // A rules file cut to nothing: it compiles, and would allow everything.
    let empty_rules = file("empty.rules", "# the rest of the file was lost\n");
    // A TLS directory whose server key is missing.
    let no_key = tls_dir.with_file_name("nokey");
    std::fs::create_dir_all(&no_key).expect("mkdir");
    for f in ["ca.pem", "server.pem"] {
        std::fs::copy(tls_dir.join(f), no_key.join(f)).expect("copy");
    }
    let no_key = no_key.to_str().expect("UTF-8");
    // An address in use.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let in_use = taken.local_addr().expect("addr").to_string();
    let any = "127.0.0.1:0";
    let data = tls_dir.with_file_name("data");
    let data = data.to_str().expect("UTF-8");
    let keys_in_data = tls_dir.with_file_name("data").join("keys");
    std::fs::create_dir_all(&keys_in_data).expect("mkdir");
    portcullis::keys::write_dev_keys(&keys_in_data).expect("keys");
    let keys_in_data = keys_in_data.to_str().expect("UTF-8").to_string();
    let cases: [(&[&str], i32, &[&str]); 10] = [
        // A durable store with no lasting keys (this TLS directory holds
        // none): what it keeps could not be read after a restart.
        (
            &["--quic", any, "--tls-dir", tls, "--data", data],
            1,
            &["needs keys that outlive the process", "--keys"],
        ),
        (
            &["--quic", any, "--tls-dir", tls, "--config", &bad_config],
            2,
            &["limits.frame_bytes_max"],
        ),
        (
            &["--quic", any, "--tls-dir", tls, "--config", &typo_config],
            2,
            &["frame_bytes"],
        ),
        (&["--tls-dir", tls], 2, &["--quic"]),
        (
            &["--quic", any, "--tls-dir", no_key, "--store", "memory"],
            1,
            &["server.key"],
        ),
        (
            &[
                "--quic",
                any,
                "--tls-dir",
                tls,
                "--store",
                "memory",
                "--rules",
                &broken_rules,
            ],
            2,
            &["broken.rules"],
        ),
        (
            &["--quic", &in_use, "--tls-dir", tls, "--store", "memory"],
            1,
            &[&in_use, "in use"],
        ),
        // Keys inside the data directory would travel with what they seal.
        (
            &[
                "--quic",
                any,
                "--tls-dir",
                tls,
                "--data",
                data,
                "--keys",
                &keys_in_data,
            ],
            1,
            &["inside the data directory"],
        ),
        // State kept nowhere is asked for, never a default.
        (
            &["--quic", any, "--tls-dir", tls],
            2,
            &["--data", "--store memory"],
        ),
        // A ruleset that cannot hold or deny is refused unless meant.
        (
            &[
                "--quic",
                any,
                "--tls-dir",
                tls,
                "--store",
                "memory",
                "--rules",
                &empty_rules,
            ],
            2,
            &["allow every request", "--allow-permissive-rules"],
        ),
    ];
    for (args, want, says) in cases {
        let (code, err) = run_to_exit(args);
        assert_eq!(code, Some(want), "{args:?}: {err}");
        for s in says {
            assert!(
                err.to_lowercase().contains(&s.to_lowercase()),
                "{args:?}: {err}"
            );
        }
    }
}

/// SIGHUP reloads rules and lists between two requests while load runs:
/// no request is lost or refused, answers move from the old ruleset to the
/// new one, and a broken file is refused with the old rules kept.
#[test]
fn sighup_reloads_under_load_and_loses_no_request() {
    let tls_dir = pki("reload");
    let rules = tls_dir.with_file_name("rules.pcr");
    let list = tls_dir.with_file_name("blocked.txt");
    let default = portcullis::rules::DEFAULT_RULES;
    std::fs::write(&rules, default).expect("write rules");
    std::fs::write(&list, "# none yet\n").expect("write list");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls_dir.to_str().expect("UTF-8"),
        "--store",
        "memory",
        "--rules",
        rules.to_str().expect("UTF-8"),
        "--list",
        &format!("blocked_imei={}", list.display()),
    ]);
    let addr = s.addr();
    let old_hash = portcullis::rules::CompiledRules::default_rules().hash;
    let runtime = rt();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let tls_dir = tls_dir.clone();
        runtime.spawn(async move {
            let (_ep, conn) = connect(addr, &tls_dir, "client").await;
            let mut workers = Vec::new();
            for w in 0..8usize {
                let conn = conn.clone();
                let stop = stop_rx.clone();
                workers.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let mut i = 0usize;
                    while !*stop.borrow() {
                        let id = w * 1_000_000 + i;
                        answers.push(call(&conn, &swap(id)).await);
                        i += 1;
                    }
                    answers
                }));
            }
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.expect("a worker"));
            }
            all
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A new rule first, and a blocked IMEI: both take effect together.
    let changed = default.replace(
        "rule account_lock",
        "rule store_x_denied\n  deny\n  when store is \"X\"\n\nrule account_lock",
    );
    std::fs::write(&rules, &changed).expect("write rules");
    std::fs::write(&list, "490154203237518\n").expect("write list");
    s.signal("-HUP");
    let reloaded = s.wait_for("reloaded");
    assert!(reloaded.contains("1 list(s) replaced"), "{reloaded}");
    std::thread::sleep(Duration::from_millis(300));
    // A broken rules file is refused; the last good rules stay.
    std::fs::write(&rules, "rule broken\n  deny\n  when nonsense\n").expect("write rules");
    s.signal("-HUP");
    let refused = s.wait_for("reload refused");
    assert!(refused.contains("rules.pcr"), "{refused}");
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(true).expect("stop the load");
    let answers = runtime.block_on(load).expect("the load");
    assert!(answers.len() > 100, "{}", answers.len());
    let mut hashes = Vec::new();
    for a in &answers {
        let v = a
            .as_ref()
            .unwrap_or_else(|e| panic!("a request was lost: {e}"));
        assert!(v.get("decision").is_some(), "not a decision: {v}");
        let h = v["ruleset"]["hash"].as_str().expect("a hash").to_string();
        if hashes.last() != Some(&h) {
            hashes.push(h);
        }
    }
    let new_hash = {
        let c = portcullis::rules::CompiledRules::compile(
            &rules.display().to_string(),
            &changed,
            &portcullis::rules::Limits::default(),
        )
        .expect("the changed rules compile");
        c.hash
    };
    assert_eq!(hashes.first(), Some(&old_hash));
    assert!(hashes.contains(&new_hash), "{hashes:?}");
    // The reload is visible after it, and the blocked IMEI with it.
    runtime.block_on(async {
        let (_ep, conn) = connect(addr, &tls_dir, "client").await;
        let v = call(
            &conn,
            r#"{"id":"after","kind":"sim_swap","msisdn":"+447700911111","account":"Z1","iccid":"8944110000000000008","imei":"490154203237518"}"#,
        )
        .await
        .expect("an answer");
        assert_eq!(v["decision"], "deny", "{v}");
        assert_eq!(v["ruleset"]["hash"], new_hash.as_str());
    });
    s.signal("-TERM");
    let (status, _) = s.wait();
    assert!(status.success());
}

/// `portcullis call`, the way an integrator tries the service by hand (the
/// README's example): a swap allowed, a second held, released by an
/// analyst, then read with an `await`.
#[test]
fn call_tries_the_service_by_hand() {
    let tls_dir = pki("call");
    let tls = tls_dir.to_str().expect("UTF-8");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls,
        "--store",
        "memory",
    ]);
    let addr = s.addr().to_string();
    let call = |who: &str, input: &str| -> Vec<Value> {
        let mut child = Command::new(BIN)
            .args(["call", "--addr", &addr, "--tls-dir", tls, "--as", who])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis call");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("call runs");
        assert_succeeded(&out);
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let answers = call(
        "client",
        concat!(
            r#"{"id":"s1","kind":"sim_swap","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}"#,
            "\n\n",
            r#"{"id":"s2","kind":"sim_swap","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000016"}"#,
            "\nnot json\n",
        ),
    );
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0]["decision"], "allow");
    assert_eq!(answers[1]["decision"], "hold");
    assert_eq!(answers[2]["error"]["code"], "bad_frame");
    let v = call(
        "client",
        r#"{"kind":"verification","ref":"client:s2","result":"pass"}"#,
    );
    assert_eq!(v[0]["error"]["code"], "forbidden", "{v:?}");
    let v = call(
        "analyst",
        r#"{"kind":"verification","ref":"client:s2","result":"pass"}"#,
    );
    assert_eq!(v[0]["ok"], true, "{v:?}");
    let v = call("client", r#"{"kind":"await","ref":"s2","timeout_ms":0}"#);
    assert_eq!(v[0]["decision"], "allow", "{v:?}");
    s.signal("-INT");
    let (status, _) = s.wait();
    assert!(status.success());
}

/// Where the keys come from is logged; a key readable by others is refused.
#[test]
fn serve_says_where_its_keys_come_from() {
    let tls_dir = pki("keys");
    let tls = tls_dir.to_str().expect("UTF-8");
    // No keys anywhere: keys for this process alone, with a warning.
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls,
        "--store",
        "memory",
    ]);
    s.addr();
    let line = s.wait_for("keys");
    assert!(
        line.contains("WARN") && line.contains("this process alone"),
        "{line}"
    );
    s.signal("-TERM");
    s.wait();
    // Development keys beside the certificates: used, with a warning.
    portcullis::keys::write_dev_keys(&tls_dir).expect("dev keys");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls,
        "--store",
        "memory",
    ]);
    s.addr();
    let line = s.wait_for("development keys");
    assert!(line.contains("WARN"), "{line}");
    s.signal("-TERM");
    s.wait();
    // --keys: a directory of its own; a key others can read is refused.
    let keys = tls_dir.with_file_name("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    portcullis::keys::write_dev_keys(&keys).expect("keys");
    let dir = keys.to_str().expect("UTF-8");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls,
        "--keys",
        dir,
        "--store",
        "memory",
    ]);
    s.addr();
    let line = s.wait_for("keys loaded");
    assert!(line.contains("INFO"), "{line}");
    s.signal("-TERM");
    s.wait();
    use std::os::unix::fs::PermissionsExt;
    let seal = keys.join("seal-1.key");
    std::fs::set_permissions(&seal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, err) = run_to_exit(&[
        "--quic",
        "127.0.0.1:0",
        "--tls-dir",
        tls,
        "--keys",
        dir,
        "--store",
        "memory",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("seal-1.key") && err.contains("chmod 600"),
        "{err}"
    );
}

/// `serve` flags for a free port on loopback over `data`, with `keys` if
/// given (else the development keys in the TLS directory).
fn serve_args(tls_dir: &Path, data: &Path, keys: Option<&Path>) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("UTF-8").to_string();
    let mut args = vec![
        "--quic".to_string(),
        "127.0.0.1:0".into(),
        "--data".into(),
        path(data),
        "--tls-dir".into(),
        path(tls_dir),
    ];
    if let Some(k) = keys {
        args.extend(["--keys".to_string(), path(k)]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A swap on a fixed line, for the restart test.
fn swap_on_line(id: usize) -> String {
    format!(
        r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+447700900777","account":"A777","iccid":"8944110000000000008"}}"#
    )
}

/// State survives a restart with no option but `--data`: a retry of a
/// request decided before it answers as before, a hold made before it
/// stays pending, and the history written before it still drives
/// decisions (a fresh SIM swap on the just-swapped line is held). The
/// store file holds the line's number in no spelling.
#[test]
fn serve_keeps_state_across_restarts() {
    let tls_dir = pki("restart");
    portcullis::keys::write_dev_keys(&tls_dir).expect("development keys");
    let data = tls_dir.with_file_name("data");
    let args = serve_args(&tls_dir, &data, None);
    let args = strs(&args);
    let mut s = Serving::start(&args);
    let addr = s.addr();
    let (first, held) = rt().block_on(async {
        let (_ep, conn) = connect(addr, &tls_dir, "client").await;
        let first = call(&conn, &swap_on_line(1)).await.expect("an answer");
        let held = call(&conn, &swap_on_line(2)).await.expect("an answer");
        (first, held)
    });
    assert_eq!(first["decision"], "allow", "{first}");
    assert_eq!(held["decision"], "hold", "{held}");
    s.signal("-TERM");
    let (status, log) = s.wait();
    assert!(status.success(), "{status:?}: {log:?}");

    let mut s = Serving::start(&args);
    let addr = s.addr();
    rt().block_on(async {
        let (_ep, conn) = connect(addr, &tls_dir, "client").await;
        let retry = call(&conn, &swap_on_line(1)).await.expect("an answer");
        assert_eq!(retry, first);
        let again = call(&conn, &swap_on_line(2)).await.expect("an answer");
        assert_eq!(again["decision"], "hold", "{again}");
        let fresh = call(&conn, &swap_on_line(3)).await.expect("an answer");
        assert_eq!(fresh["decision"], "hold", "{fresh}");
    });
    s.signal("-TERM");
    let (status, log) = s.wait();
    assert!(status.success(), "{status:?}: {log:?}");

    use std::os::unix::fs::PermissionsExt;
    let path = data.join("portcullis.redb");
    let mode = std::fs::metadata(&path)
        .expect("the store file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let file = std::fs::read(&path).expect("the store file");
    let number: u64 = 447_700_900_777;
    let spellings: [Vec<u8>; 4] = [
        b"447700900777".to_vec(),
        number.to_be_bytes().to_vec(),
        number.to_le_bytes().to_vec(),
        vec![0x44, 0x77, 0x00, 0x90, 0x07, 0x77],
    ];
    for s in &spellings {
        assert!(
            !file.windows(s.len()).any(|w| w == &s[..]),
            "the store holds the number as {s:?}"
        );
    }
}

/// A swap of `line` with request id `id`.
fn swap_of(id: &str, line: u64) -> String {
    format!(
        r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+44{line}","account":"C{line}","iccid":"8944110000000000008"}}"#
    )
}

/// A small seeded generator: the crash test's kill times replay from the
/// seed it prints.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The binary under concurrent load, killed with SIGKILL at random
/// moments, again and again (`PORTCULLIS_CRASH_CYCLES`, default 20; set it
/// to thousands for the long mode). After each restart every answer
/// acknowledged before the kill, and a sample of those acknowledged before
/// earlier kills, is answered the same on retry, and the history behind them
/// still drives decisions: a fresh SIM swap on a line whose swap was
/// allowed before the crash is held.
#[test]
fn sigkill_under_load_loses_no_acknowledged_answer() {
    /// Answers from cycles before the last one retried after each restart.
    const OLDER_RETRIES: usize = 200;
    use portcullis::client::Client;
    use std::sync::{Arc, Mutex};
    let cycles: u64 = std::env::var("PORTCULLIS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("PORTCULLIS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    println!("crash test: {cycles} cycles, seed {seed}");
    let mut rng = Lcg(seed);
    let tls_dir = pki("crash");
    portcullis::keys::write_dev_keys(&tls_dir).expect("development keys");
    let data = tls_dir.with_file_name("data");
    let args = serve_args(&tls_dir, &data, None);
    let args = strs(&args);
    // Every acknowledged request and its answer, and the lines whose swap
    // was allowed.
    let acked: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let allowed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut checked_lines = 0;
    // Where the answers acknowledged in the last cycle start in `acked`.
    let mut last_cycle_from = 0;
    for cycle in 0..cycles {
        let mut s = Serving::start(&args);
        let addr = s.addr();
        let kill_after = Duration::from_millis(50 + rng.below(250));
        // Retried after the restart: every answer acknowledged in the cycle
        // just killed (the likeliest to be lost if an answer ever went out
        // before its commit), and a sample of the older ones (each already
        // retried once after the crash that followed it), so that the long
        // mode's cost grows with the cycles, not with their square.
        let before: Vec<(String, Value)> = {
            let all = acked.lock().expect("lock");
            let (older, last) = all.split_at(last_cycle_from.min(all.len()));
            let mut picked = last.to_vec();
            for _ in 0..older.len().min(OLDER_RETRIES) {
                picked.push(older[rng.below(older.len() as u64) as usize].clone());
            }
            last_cycle_from = all.len();
            picked
        };
        // The lines allowed last before the crash (the likeliest to be lost
        // if an answer ever went out before its commit), and a few older.
        let lines: Vec<u64> = allowed.lock().expect("lock").clone();
        let mut sample: Vec<u64> = lines.iter().rev().take(10).copied().collect();
        for _ in 0..lines.len().min(10) {
            sample.push(lines[rng.below(lines.len() as u64) as usize]);
        }
        rt().block_on(async {
            let client = Arc::new(
                Client::connect(addr, &tls_dir, "client", "localhost")
                    .await
                    .expect("connect"),
            );
            // History survived: a fresh swap on a line swapped before is held.
            // Checked before the retries, which would decide a lost swap again.
            for (i, line) in sample.iter().enumerate() {
                let body = swap_of(&format!("again-{cycle}-{i}"), *line);
                let got = client.decide(&body).await.expect("an answer");
                assert_eq!(got["decision"], "hold", "{body}: {got}");
                checked_lines += 1;
            }
            // The retries picked above.
            let mut retries = tokio::task::JoinSet::new();
            for chunk in before.chunks(before.len().div_ceil(8).max(1)) {
                let (client, chunk) = (client.clone(), chunk.to_vec());
                retries.spawn(async move {
                    for (body, answer) in chunk {
                        let got = client.decide(&body).await.expect("a retry answer");
                        assert_eq!(got, answer, "the retry of {body}");
                    }
                });
            }
            while let Some(r) = retries.join_next().await {
                r.expect("retries");
            }
            // Load from 32 tasks, until the kill.
            let mut load = tokio::task::JoinSet::new();
            for task in 0..32u64 {
                let (client, acked, allowed) = (client.clone(), acked.clone(), allowed.clone());
                load.spawn(async move {
                    for n in 0.. {
                        let line = 7_700_000_000 + cycle * 100_000 + task * 10_000 + n;
                        let body = swap_of(&format!("c{cycle}-t{task}-n{n}"), line);
                        let Ok(answer) = client.decide(&body).await else {
                            return;
                        };
                        if answer["decision"] == "allow" {
                            allowed.lock().expect("lock").push(line);
                        }
                        acked.lock().expect("lock").push((body, answer));
                    }
                });
            }
            tokio::time::sleep(kill_after).await;
            s.signal("-KILL");
            // Requests in flight get no answer: end them now rather than at
            // the idle timeout.
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .connection()
                .close(0u32.into(), b"the server was killed");
            while load.join_next().await.is_some() {}
        });
        let (status, _) = s.wait();
        assert!(!status.success(), "cycle {cycle}: killed, yet {status:?}");
        if (cycle + 1) % 100 == 0 {
            // The long mode runs for a while: show that it moves.
            let n = acked.lock().expect("lock").len();
            println!(
                "crash test: {} cycles done, {n} answers acknowledged",
                cycle + 1
            );
        }
    }
    let acked = acked.lock().expect("lock").len();
    println!("crash test: {acked} answers acknowledged, {checked_lines} lines checked");
    assert!(acked > cycles as usize * 10, "only {acked} acknowledged");
    assert!(checked_lines > 0);
}

/// The spellings of an identifier a careless store or log would hold: its
/// text, its digits, its number as 64- or 128-bit integers in either byte
/// order, and packed decimal (two digits a byte, in either nibble order,
/// as telecom systems pack IMSIs).
fn spellings(id: &str) -> Vec<Vec<u8>> {
    let mut out = vec![id.as_bytes().to_vec()];
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 5 && digits.len() == id.trim_start_matches('+').len() {
        out.push(digits.as_bytes().to_vec());
        // Integers of any width: their significant bytes (a 64-bit and a
        // 128-bit spelling share them; the zero bytes around say nothing).
        if let Ok(n) = digits.parse::<u128>() {
            let be = n.to_be_bytes();
            let first = be.iter().position(|b| *b != 0).unwrap_or(15);
            out.push(be[first..].to_vec());
            let mut le = be[first..].to_vec();
            le.reverse();
            out.push(le);
        }
        let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
        for swap in [false, true] {
            let packed: Vec<u8> = d
                .chunks(2)
                .map(|p| {
                    let (a, b) = (p[0], p.get(1).copied().unwrap_or(0xf));
                    if swap { b << 4 | a } else { a << 4 | b }
                })
                .collect();
            // The first bytes alone: a prefix this long is no accident.
            out.push(packed[..packed.len().min(6)].to_vec());
        }
    }
    out
}

/// Identifiers planted through a live run (every kind, by every event of
/// the contract's examples, and an alert) are found in no spelling in the
/// data directory or the log.
#[test]
fn no_identifier_reaches_the_data_directory_or_the_log() {
    use portcullis::client::Client;
    let tls_dir = pki("privacy");
    portcullis::keys::write_dev_keys(&tls_dir).expect("development keys");
    let data = tls_dir.with_file_name("data");
    let mut s = Serving::start(&[
        "--quic",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("UTF-8"),
        "--tls-dir",
        tls_dir.to_str().expect("UTF-8"),
    ]);
    let addr = s.addr();
    let examples =
        std::fs::read_to_string(crate::support::repo().join("proto/examples/events.jsonl"))
            .expect("the examples");
    let mut events: Vec<String> = examples.lines().map(str::to_string).collect();
    // An unapproved SIM change: an alert, which is logged.
    events.push(r#"{"id":"ds-1","kind":"device_seen","msisdn":"+447700911222","imsi":"234151111111111","imei":"356938035643809"}"#.into());
    events.push(r#"{"id":"ds-2","kind":"device_seen","msisdn":"+447700911222","imsi":"234152222222222","imei":"356938035643809"}"#.into());
    let mut ids = Vec::new();
    rt().block_on(async {
        let client = Client::connect(addr, &tls_dir, "admin", "localhost")
            .await
            .expect("connect");
        for line in &events {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for field in ["msisdn", "imsi", "imei", "iccid", "eid", "account", "value"] {
                if let Some(id) = v[field].as_str() {
                    ids.push(id.to_string());
                }
            }
            let _ = client.call(line.as_bytes()).await.expect("an answer");
        }
    });
    s.signal("-TERM");
    let (status, log) = s.wait();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(log.iter().any(|l| l.contains("alert raised")), "{log:?}");
    assert!(ids.len() > 30, "{ids:?}");
    let log = log.join("\n").into_bytes();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data).expect("the data directory") {
        let path = entry.expect("an entry").path();
        files.push((
            path.display().to_string(),
            std::fs::read(&path).expect("read"),
        ));
    }
    files.push(("the log".into(), log));
    let needles: Vec<(String, Vec<u8>)> = ids
        .iter()
        .flat_map(|id| spellings(id).into_iter().map(move |s| (id.clone(), s)))
        .collect();
    for (name, bytes) in &files {
        if let Some((id, spelling)) = find_any(bytes, &needles) {
            panic!("{name} holds {id} as {spelling:?}");
        }
    }
}

/// The first of `needles` found in `hay`, in one pass: needles are
/// indexed by their first byte, so each position is compared only with
/// the few that could start there.
fn find_any<'n>(hay: &[u8], needles: &'n [(String, Vec<u8>)]) -> Option<&'n (String, Vec<u8>)> {
    let mut by_first: Vec<Vec<&(String, Vec<u8>)>> = vec![Vec::new(); 256];
    for n in needles {
        by_first[usize::from(n.1[0])].push(n);
    }
    (0..hay.len()).find_map(|i| {
        by_first[usize::from(hay[i])]
            .iter()
            .find(|n| hay[i..].starts_with(&n.1))
            .copied()
    })
}

/// Fails the test with the command's stderr unless it exited 0.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the service on `args`, makes the first SIM swap on line 1
/// (allowed), stops the service and returns that answer.
fn first_swap_then_stop(args: &[&str], tls_dir: &Path) -> Value {
    let mut s = Serving::start(args);
    let addr = s.addr();
    let first = rt().block_on(async {
        let (_ep, conn) = connect(addr, tls_dir, "client").await;
        call(&conn, &swap_on_line(1)).await.expect("an answer")
    });
    assert_eq!(first["decision"], "allow", "{first}");
    s.signal("-TERM");
    assert!(s.wait().0.success());
    first
}

/// On the running service `s`: the retry of line 1's first swap answers
/// `first` again, and a fresh swap on `line` is held (history still
/// drives decisions). Then stops the service.
fn retry_and_fresh_swap_then_stop(mut s: Serving, tls_dir: &Path, first: &Value, line: usize) {
    let addr = s.addr();
    rt().block_on(async {
        let (_ep, conn) = connect(addr, tls_dir, "client").await;
        let retry = call(&conn, &swap_on_line(1)).await.expect("an answer");
        assert_eq!(&retry, first);
        let fresh = call(&conn, &swap_on_line(line)).await.expect("an answer");
        assert_eq!(fresh["decision"], "hold", "{fresh}");
    });
    s.signal("-TERM");
    assert!(s.wait().0.success());
}

/// Rotating the sealing key keeps every record reachable: a SIM swap made
/// before `keys rotate` still holds a SIM swap after it, a retry answers as
/// before, and what is written afterwards is sealed under the new key.
#[test]
fn a_sealing_key_rotation_keeps_every_record_reachable() {
    let tls_dir = pki("rotate");
    let keys = tls_dir.with_file_name("keys");
    portcullis::keys::write_dev_keys(&keys).expect("keys");
    let data = tls_dir.with_file_name("data");
    let args = serve_args(&tls_dir, &data, Some(&keys));
    let args = strs(&args);
    let first = first_swap_then_stop(&args, &tls_dir);

    let out = Command::new(BIN)
        .args(["keys", "rotate", "--keys", keys.to_str().expect("UTF-8")])
        .output()
        .expect("run keys rotate");
    assert_succeeded(&out);
    assert!(keys.join("seal-2.key").exists());

    retry_and_fresh_swap_then_stop(Serving::start(&args), &tls_dir, &first, 2);
}

/// `portcullis backup` under load (through the running service's control
/// socket: a read transaction, not a file copy), then `restore` into a new
/// data directory: the restored store answers retries exactly as the
/// original did and its history still holds a fresh swap; a restore never
/// overwrites a store; a backup of a stopped service's store works too.
#[test]
fn a_backup_under_load_restores_to_the_same_answers() {
    use portcullis::client::Client;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tls_dir = pki("backup");
    portcullis::keys::write_dev_keys(&tls_dir).expect("development keys");
    let data = tls_dir.with_file_name("data");
    let args = serve_args(&tls_dir, &data, None);
    let args = strs(&args);
    let mut s = Serving::start(&args);
    let addr = s.addr();
    let file = tls_dir.with_file_name("backup.redb");
    let acked = rt().block_on(async {
        let client = Arc::new(
            Client::connect(addr, &tls_dir, "client", "localhost")
                .await
                .expect("connect"),
        );
        let mut acked = Vec::new();
        for n in 0..40u64 {
            let body = swap_of(&format!("b{n}"), 7_800_000_000 + n / 2);
            let answer = client.decide(&body).await.expect("an answer");
            acked.push((body, answer));
        }
        // Load goes on while the backup is taken.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = tokio::task::JoinSet::new();
        for task in 0..4u64 {
            let (client, stop) = (client.clone(), stop.clone());
            load.spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = swap_of(&format!("l{task}-{n}"), 7_900_000_000 + task * 100_000 + n);
                    client.decide(&body).await.expect("an answer");
                    n += 1;
                }
                n
            });
        }
        let (data, file) = (data.clone(), file.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["backup", "--data", data.to_str().expect("UTF-8")])
                .args(["--out", file.to_str().expect("UTF-8")])
                .output()
                .expect("run backup")
        })
        .await
        .expect("backup");
        assert_succeeded(&out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("backup written"));
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        while let Some(n) = load.join_next().await {
            sent += n.expect("load");
        }
        assert!(sent > 0);
        acked
    });
    s.signal("-TERM");
    assert!(s.wait().0.success());

    let restore = |into: &Path| {
        Command::new(BIN)
            .args(["restore", "--data", into.to_str().expect("UTF-8")])
            .args(["--from", file.to_str().expect("UTF-8")])
            .output()
            .expect("run restore")
    };
    let restored = tls_dir.with_file_name("restored");
    let out = restore(&restored);
    assert_succeeded(&out);
    let again = restore(&restored);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("move it aside"));

    let args = serve_args(&tls_dir, &restored, None);
    let args = strs(&args);
    let mut s = Serving::start(&args);
    let addr = s.addr();
    rt().block_on(async {
        let client = Client::connect(addr, &tls_dir, "client", "localhost")
            .await
            .expect("connect");
        for (body, answer) in &acked {
            let got = client.decide(body).await.expect("a retry answer");
            assert_eq!(&got, answer, "the retry of {body}");
        }
        let fresh = client
            .decide(&swap_of("b-fresh", 7_800_000_000))
            .await
            .expect("an answer");
        assert_eq!(fresh["decision"], "hold", "{fresh}");
    });
    s.signal("-TERM");
    assert!(s.wait().0.success());

    // The service is stopped: backup opens the store itself.
    let offline = tls_dir.with_file_name("offline.redb");
    let out = Command::new(BIN)
        .args(["backup", "--data", restored.to_str().expect("UTF-8")])
        .args(["--out", offline.to_str().expect("UTF-8")])
        .output()
        .expect("run backup");
    assert_succeeded(&out);
}

/// A pseudonym-key migration keeps every record reachable: after `keys
/// rotate-pseudonym` the service finds history under the old key, re-keys
/// the store in the background and says when it is done; after that,
/// without the previous key, a SIM swap made before the rotation still
/// holds a SIM swap, and a retry answers as before.
#[test]
fn a_pseudonym_key_migration_keeps_every_record_reachable() {
    use portcullis::keys::{IdKind, Keys};
    use portcullis::store::{RedbStore, Store, Table};
    let tls_dir = pki("migrate");
    let keys_dir = tls_dir.with_file_name("keys");
    portcullis::keys::write_dev_keys(&keys_dir).expect("keys");
    let data = tls_dir.with_file_name("data");
    let args = serve_args(&tls_dir, &data, Some(&keys_dir));
    let args = strs(&args);
    let first = first_swap_then_stop(&args, &tls_dir);

    let rotate = || {
        Command::new(BIN)
            .args([
                "keys",
                "rotate-pseudonym",
                "--keys",
                keys_dir.to_str().expect("UTF-8"),
            ])
            .output()
            .expect("run keys rotate-pseudonym")
    };
    let out = rotate();
    assert_succeeded(&out);
    // A second rotation waits for the first migration to end.
    assert!(!rotate().status.success());

    let mut s = Serving::start(&args);
    s.wait_for("pseudonym migration done");
    retry_and_fresh_swap_then_stop(s, &tls_dir, &first, 2);

    // Everything is under the new key.
    {
        let keys = Keys::load(&keys_dir).expect("keys");
        let store = RedbStore::open(&data.join("portcullis.redb")).expect("the store");
        let line = "+447700900777";
        let old = keys
            .previous_pseudonym(IdKind::Msisdn, line)
            .expect("migrating");
        let new = keys.pseudonym(IdKind::Msisdn, line);
        assert_eq!(store.get(Table::Entities, &old.0).expect("a read"), None);
        assert!(
            store
                .get(Table::Entities, &new.0)
                .expect("a read")
                .is_some()
        );
    }
    std::fs::remove_file(keys_dir.join("pseudonym-previous.key")).expect("remove");
    retry_and_fresh_swap_then_stop(Serving::start(&args), &tls_dir, &first, 3);
}
