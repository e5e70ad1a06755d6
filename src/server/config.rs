//! The service's configuration: the TOML file, the flags that override it,
//! and the named limits with their units and defaults.
//!
//! Every key is optional and has a documented default (`deploy/serve.toml`
//! lists them all); an unknown key is an error, so a misspelt limit is
//! never silently ignored. The file names where things are; it never holds
//! a key or a secret.

use crate::edge::quic::endpoint::QuicLimits;
use crate::edge::quic::frame::{FRAME_BYTES_MAX_DEFAULT, FRAME_BYTES_MAX_LIMIT};
use crate::edge::quic::wire::{AWAIT_TIMEOUT_MS_MAX_DEFAULT, ERROR_BODY_BYTES_MAX};
use crate::gateway::limits::DeciderLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every limit the service puts on what clients control, each with its unit
/// in its name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceLimits {
    /// The longest frame body, requests and responses alike: from 8576 (the
    /// longest error body) to 65536.
    pub frame_bytes_max: usize,
    /// Bidirectional streams a client may have open at once on one
    /// connection (QUIC `initial_max_streams_bidi`): about twice the
    /// requests a client keeps in flight.
    pub streams_per_connection_max: u32,
    /// Connections held at once; more are refused in the handshake.
    pub connections_max: usize,
    /// Streams accepted and not yet done, across all connections: the
    /// service's queue. A stream over it is answered `overloaded` at once,
    /// unread. With `frame_bytes_max` it bounds what accepted streams may
    /// hold (about 128 KiB each at most).
    pub queue_requests_max: usize,
    /// How long after reading a request the service may take to decide it
    /// before answering `deadline` (not for `await`).
    pub request_deadline_ms: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// The longest `timeout_ms` an `await` may ask for.
    pub await_timeout_ms_max: u64,
    /// `await`s waiting at once, across all connections; more are answered
    /// `overloaded`.
    pub awaits_max: usize,
    /// Alerts kept for the operator surface; the oldest go first.
    pub alerts_kept_max: usize,
    /// How long a shutdown waits for answers in flight before closing.
    pub shutdown_grace_ms: u64,
    /// Bytes of entity states (history) kept in memory in front of the
    /// store, accounted per entity; the least recently named go first and
    /// are read back from the store when named again. At least 1 MiB.
    /// Only with a store: in memory alone, state is all there is.
    pub cache_bytes_max: usize,
    /// Days a decision record is kept in the store after it was last
    /// written (its decision, or the verification of its hold); then an
    /// hourly sweep deletes it. Regulators ask for years: default 1095
    /// (three years), from 1 to 36500.
    pub records_kept_days: u32,
}

impl Default for ServiceLimits {
    fn default() -> ServiceLimits {
        ServiceLimits {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            streams_per_connection_max: 100,
            connections_max: 1000,
            queue_requests_max: 1024,
            request_deadline_ms: 1000,
            idle_timeout_ms: 30_000,
            await_timeout_ms_max: AWAIT_TIMEOUT_MS_MAX_DEFAULT,
            awaits_max: 10_000,
            alerts_kept_max: 10_000,
            shutdown_grace_ms: 5000,
            cache_bytes_max: 2 << 30,
            records_kept_days: 1095,
        }
    }
}

/// A configuration that cannot be served, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A limit outside its range (`deploy/serve.toml` documents each).
    OutOfRange {
        key: &'static str,
        range: &'static str,
    },
    /// The config file could not be read within `CONFIG_BYTES_MAX`.
    Read { path: PathBuf, detail: String },
    /// The config file is not valid TOML for the service, or names an
    /// unknown key; `path` once the file is known.
    Parse {
        path: Option<PathBuf>,
        detail: String,
    },
    /// Neither `--quic` nor `quic` in the config.
    NoAddress,
    /// Neither `--tls-dir` nor `tls_dir` in the config.
    NoTlsDir,
    /// A `--list` argument is not `NAME=FILE`.
    ListArg { arg: String },
    /// Neither `--data` nor `--store memory`: state would be kept nowhere.
    NoState,
}

/// The store kinds `--store` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded redb file `portcullis.redb` in the data directory.
    #[default]
    Redb,
    /// In memory: lost at exit (tests and benchmarks).
    Memory,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::OutOfRange { key, range } => {
                write!(f, "limits.{key}: must be {range} (see deploy/serve.toml)")
            }
            ConfigError::Read { path, detail } => {
                write!(f, "cannot read config {}: {detail}", path.display())
            }
            ConfigError::Parse {
                path: Some(path),
                detail,
            } => write!(f, "{}: {detail}", path.display()),
            ConfigError::Parse { path: None, detail } => f.write_str(detail),
            ConfigError::NoAddress => {
                f.write_str("no address to serve on: give --quic ADDR or `quic` in the config")
            }
            ConfigError::NoTlsDir => f.write_str(
                "no TLS directory: give --tls-dir DIR or `tls_dir` in the config (write one with `portcullis certs dev --out DIR`)",
            ),
            ConfigError::ListArg { arg } => write!(f, "--list {arg}: expected NAME=FILE"),
            ConfigError::NoState => f.write_str(
                "no state directory: give --data DIR (the embedded store) or --store memory (every hold and record lost at exit), or `data`/`store` in the config",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServiceLimits {
    /// Checks each limit's range, naming the first key out of it.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &'static str, range: &'static str| Err(ConfigError::OutOfRange { key, range });
        // Every error body fits a frame: an answer is never cut.
        if !(ERROR_BODY_BYTES_MAX..=FRAME_BYTES_MAX_LIMIT).contains(&self.frame_bytes_max) {
            return bad("frame_bytes_max", "from 8576 to 65536 bytes");
        }
        if !(1..=10_000).contains(&self.streams_per_connection_max) {
            return bad("streams_per_connection_max", "from 1 to 10000 streams");
        }
        if !(1..=1_000_000).contains(&self.connections_max) {
            return bad("connections_max", "from 1 to 1000000 connections");
        }
        if !(1..=1_000_000).contains(&self.queue_requests_max) {
            return bad("queue_requests_max", "from 1 to 1000000 requests");
        }
        if !(1..=60_000).contains(&self.request_deadline_ms) {
            return bad("request_deadline_ms", "from 1 to 60000 milliseconds");
        }
        if !(100..=3_600_000).contains(&self.idle_timeout_ms) {
            return bad("idle_timeout_ms", "from 100 to 3600000 milliseconds");
        }
        if self.await_timeout_ms_max > 3_600_000 {
            return bad("await_timeout_ms_max", "at most 3600000 milliseconds");
        }
        if !(1..=1_000_000).contains(&self.awaits_max) {
            return bad("awaits_max", "from 1 to 1000000 awaits");
        }
        if !(1..=10_000_000).contains(&self.alerts_kept_max) {
            return bad("alerts_kept_max", "from 1 to 10000000 alerts");
        }
        if self.shutdown_grace_ms > 600_000 {
            return bad("shutdown_grace_ms", "at most 600000 milliseconds");
        }
        if self.cache_bytes_max < 1 << 20 {
            return bad("cache_bytes_max", "at least 1048576 bytes");
        }
        if !(1..=36_500).contains(&self.records_kept_days) {
            return bad("records_kept_days", "from 1 to 36500 days");
        }
        Ok(())
    }

    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.request_deadline_ms)
    }

    /// The limits QUIC enforces.
    pub fn quic(&self) -> QuicLimits {
        QuicLimits {
            streams_per_connection_max: self.streams_per_connection_max,
            idle_timeout_ms: self.idle_timeout_ms,
            frame_bytes_max: self.frame_bytes_max,
        }
    }

    /// The limits the decider enforces.
    pub fn decider(&self) -> DeciderLimits {
        DeciderLimits {
            queue_requests_max: self.queue_requests_max,
            request_deadline: self.request_deadline(),
            await_timeout_ms_max: self.await_timeout_ms_max,
            awaits_max: self.awaits_max,
            alerts_kept_max: self.alerts_kept_max,
            cache_bytes_max: self.cache_bytes_max,
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// The QUIC transport settings both the gateway and the load generator's
/// echo server use, from the limits: streams per connection, idle timeout,
/// and flow-control windows sized to the frame limit, so that what one
/// connection may make the server buffer is bounded.
pub fn quic_transport(limits: &ServiceLimits) -> quinn::TransportConfig {
    crate::edge::quic::endpoint::transport(&limits.quic())
}

/// The largest config file read, in bytes: a config is a few dozen lines.
pub const CONFIG_BYTES_MAX: usize = 1 << 20;

/// The TOML file: where things are, and the limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub quic: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub tls_dir: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    /// The keys directory (`src/keys.rs`).
    pub keys: Option<PathBuf>,
    /// NAME = FILE.
    pub lists: BTreeMap<String, PathBuf>,
    /// As `--allow-permissive-rules`.
    pub allow_permissive_rules: bool,
    pub limits: ServiceLimits,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = crate::files::read_text_bounded(path, CONFIG_BYTES_MAX, "CONFIG_BYTES_MAX")
            .map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        FileConfig::parse(&text).map_err(|e| match e {
            ConfigError::Parse { detail, .. } => ConfigError::Parse {
                path: Some(path.to_path_buf()),
                detail,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            detail: e.to_string().trim_end().to_string(),
        })
    }
}

/// Everything `serve` needs, after flags override the file.
#[derive(Debug, Clone)]
pub struct Config {
    pub quic: SocketAddr,
    pub data: Option<PathBuf>,
    /// Where state is kept: redb under `data` unless `memory` is asked
    /// for or no `data` is given.
    pub store: StoreKind,
    pub tls_dir: PathBuf,
    pub rules: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    /// The keys directory; without one, [`crate::server::keys_for`] looks
    /// further.
    pub keys: Option<PathBuf>,
    pub lists: Vec<(String, PathBuf)>,
    /// Serve a ruleset that cannot hold or deny (refused otherwise).
    pub allow_permissive_rules: bool,
    pub limits: ServiceLimits,
}

impl Config {
    /// A configuration for tests and tools: the default limits, the
    /// default ruleset, port 0 on loopback.
    pub fn local(tls_dir: &Path) -> Config {
        Config {
            quic: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: None,
            store: StoreKind::Redb,
            tls_dir: tls_dir.to_path_buf(),
            rules: None,
            crl: None,
            keys: None,
            lists: Vec::new(),
            allow_permissive_rules: false,
            limits: ServiceLimits::default(),
        }
    }

    /// The quinn server configuration: the TLS of [`crate::tls`] and the
    /// transport of [`quic_transport`].
    pub fn quinn_server(&self) -> Result<quinn::ServerConfig, crate::tls::TlsError> {
        self.quinn_server_and_revoked().map(|(server, _)| server)
    }

    /// [`Config::quinn_server`], and the serials the CRL lists (what a
    /// reload closes open connections by).
    pub fn quinn_server_and_revoked(
        &self,
    ) -> Result<(quinn::ServerConfig, crate::tls::Revoked), crate::tls::TlsError> {
        let files = crate::tls::ServerFiles::in_dir(&self.tls_dir, self.crl.as_deref());
        let (mut server, revoked) = crate::tls::quinn_server_config_and_revoked(&files)?;
        server.transport_config(Arc::new(quic_transport(&self.limits)));
        Ok((server, revoked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/serve.toml");

    /// The shipped config documents every limit with its default.
    #[test]
    fn the_shipped_config_holds_every_default() {
        let file = FileConfig::parse(SHIPPED).expect("deploy/serve.toml parses");
        assert_eq!(file.limits, ServiceLimits::default());
        let keys = toml::from_str::<toml::Table>(SHIPPED).expect("TOML");
        let limits = keys["limits"].as_table().expect("a [limits] table");
        let defaults = toml::Table::try_from(ServiceLimits::default()).expect("serializable");
        assert_eq!(
            limits.keys().collect::<Vec<_>>(),
            defaults.keys().collect::<Vec<_>>()
        );
        for key in ["quic", "data", "tls_dir", "rules", "crl", "keys"] {
            assert!(
                SHIPPED.contains(&format!("# {key} = ")),
                "{key} is documented"
            );
        }
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = FileConfig::parse("[limits]\nframe_bytes_max = 70000\n")
            .expect("parses")
            .limits
            .check()
            .expect_err("out of range");
        assert!(e.to_string().contains("limits.frame_bytes_max"), "{e}");
        let e = FileConfig::parse("[limits]\nstreams_max = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("streams_max"), "{e}");
        let e = FileConfig::parse("quic = \"not an address\"\n").expect_err("bad address");
        assert!(e.to_string().contains("quic"), "{e}");
        assert!(ServiceLimits::default().check().is_ok());
    }
}
