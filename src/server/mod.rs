//! `portcullis serve`: the process around the gateway.
//!
//! - [`config`]: the TOML file, the flags over it, and the named limits.
//! - here: open the gateway ([`crate::gateway::durable`], the
//!   [`crate::gateway::decider::Decider`]), start the QUIC edge
//!   ([`crate::edge::quic::connection`]) and the control socket, and own
//!   signals, reload (rules, lists, TLS files and CRL, all or nothing) and
//!   shutdown.
//!
//! Shutdown follows tokio's mini-redis: a broadcast (a watch channel) tells
//! every task, and the server waits, at most `shutdown_grace_ms`, until
//! every stream task has dropped its handle of an mpsc channel.

pub mod config;

pub use config::{Config, ConfigError, FileConfig, ServiceLimits, StoreKind, quic_transport};

use crate::edge::control;
use crate::edge::control::ControlError;
use crate::edge::quic::{connection, endpoint};
use crate::engine::{Engine, EngineLimits, FingerprintKey, ReloadError};
use crate::files::FileError;
use crate::gateway::GatewayError;
use crate::gateway::alerts::AlertStore;
use crate::gateway::clock::{Clock, SystemClock};
use crate::gateway::decider::{Decider, EngineChange};
use crate::gateway::durable::{self, Backing};
use crate::gateway::service::Service;
use crate::keys::KeyError;
use crate::keys::Keys;
use crate::rules::CompiledRules;
use clap::Args;
use connection::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// `portcullis serve`. Flags override the config file's keys.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeOptions {
    /// The UDP address to serve QUIC on (port 0 binds a free port).
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// The data directory: the durable store `portcullis.redb` is kept
    /// here (created, mode 0700, if missing). One of it and `--store
    /// memory` is required.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `redb` (the default, under --data) or `memory` (state lost at exit:
    /// tests and benchmarks).
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// The directory of `portcullis certs dev`: `server.pem`, `server.key`,
    /// and `ca.pem`, the CA client certificates must chain to.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Rules file (default: the built-in default ruleset).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Load a list: NAME=FILE, one value per line, `#` starts a comment.
    #[arg(long = "list", value_name = "NAME=FILE")]
    pub lists: Vec<String>,
    /// A PEM file of CRLs from the client CA; revoked certificates are
    /// refused in the handshake.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// The keys directory (`pseudonym.key`, `seal-<ID>.key`, mode 0600).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// A TOML config file (see `deploy/serve.toml` for every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve a ruleset with no live `deny` or `hold` rule, which allows
    /// every request: refused without this, so that an empty or truncated
    /// rules file never quietly turns the protection off.
    #[arg(long)]
    pub allow_permissive_rules: bool,
}

/// Why a service did not start.
#[derive(Debug)]
pub enum ServeError {
    /// A limit is out of its range.
    Config(ConfigError),
    /// The rules or list files cannot be served.
    Load(LoadError),
    /// The rules and lists read, but the engine refused them.
    Rules(ReloadError),
    /// The TLS files are missing, unreadable or invalid.
    Tls(crate::tls::TlsError),
    /// The keys are missing, unreadable, shared with others or invalid.
    Keys(KeyError),
    /// A durable store, and no keys that outlive the process.
    KeysNeeded { store: PathBuf },
    /// The keys directory is inside the data directory.
    KeysInData { keys: PathBuf, data: PathBuf },
    /// The store cannot be opened or read, or its writer failed.
    Store(GatewayError),
    /// The control socket cannot be bound.
    Control(ControlError),
    /// The address cannot be bound (in use, not local, not permitted).
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The bound socket has no address.
    NoAddress(std::io::Error),
    /// Not called inside a tokio runtime.
    NoRuntime,
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Config(e) => e.fmt(f),
            ServeError::Load(e) => e.fmt(f),
            ServeError::Rules(e) => e.fmt(f),
            ServeError::Keys(e) => write!(f, "keys: {e}"),
            ServeError::KeysNeeded { store } => write!(
                f,
                "keys: the store {} needs keys that outlive the process: give --keys DIR, a credentials directory holding pseudonym.key, or a TLS directory written by `portcullis certs dev` (it holds development keys); or --store memory",
                store.display()
            ),
            ServeError::KeysInData { keys, data } => write!(
                f,
                "keys: {} is inside the data directory {}: keep keys apart from what they seal (a backup or a copied disk would carry both)",
                keys.display(),
                data.display()
            ),
            ServeError::Store(e) => write!(f, "store: {e}"),
            ServeError::Control(e) => write!(f, "store: {e}"),
            ServeError::Tls(e) => write!(f, "TLS: {e}"),
            ServeError::Bind { addr, error } => write!(f, "cannot bind quic={addr}: {error}"),
            ServeError::NoAddress(e) => write!(f, "the bound address: {e}"),
            ServeError::NoRuntime => f.write_str("no async runtime for QUIC"),
        }
    }
}

impl std::error::Error for ServeError {}

impl ServeError {
    /// 2 for what the operator wrote (config, rules, lists), 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ServeError::Config(_) | ServeError::Load(_) | ServeError::Rules(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Why the rules and list files cannot be served.
#[derive(Debug)]
pub enum LoadError {
    /// The rules file does not read or compile.
    Rules(FileError),
    /// The ruleset has no live `deny` or `hold` rule: it would allow every
    /// request, and `allow_permissive_rules` does not say that is meant.
    Permissive { label: String, hash: String },
    /// A decision the rules can give would not fit a frame.
    DecisionTooLong {
        bound: usize,
        frame_bytes_max: usize,
    },
    /// A list file for a list the rules do not declare.
    Undeclared { name: String, path: PathBuf },
    /// A list file does not read within its bounds.
    List { name: String, source: FileError },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Rules(e) => e.fmt(f),
            LoadError::Permissive { label, hash } => write!(
                f,
                "the ruleset {label} ({hash}) has no deny or hold rule that is not shadow: it would allow every request; fix the rules file, or pass --allow-permissive-rules (allow_permissive_rules = true) if that is meant"
            ),
            LoadError::DecisionTooLong {
                bound,
                frame_bytes_max,
            } => write!(
                f,
                "the ruleset's longest decision is {bound} bytes, over frame_bytes_max {frame_bytes_max}: shorten its label, rule or method names"
            ),
            LoadError::Undeclared { name, path } => write!(
                f,
                "list {name} ({}): the ruleset declares no list {name}",
                path.display()
            ),
            LoadError::List { name, source } => write!(f, "list {name}: {source}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadFailed {
    Load(LoadError),
    Tls(crate::tls::TlsError),
    /// The reload's blocking work stopped (a panic).
    Stopped(tokio::task::JoinError),
    Refused(GatewayError),
}

impl std::fmt::Display for ReloadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadFailed::Load(e) => e.fmt(f),
            ReloadFailed::Tls(e) => write!(f, "TLS files: {e}"),
            ReloadFailed::Stopped(e) => write!(f, "reload: {e}"),
            ReloadFailed::Refused(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReloadFailed {}

impl Config {
    /// Where state is kept.
    pub fn backing(&self) -> Backing {
        match (&self.data, self.store) {
            (Some(dir), StoreKind::Redb) => Backing::Redb(dir.join(durable::STORE_FILE)),
            _ => Backing::Memory,
        }
    }

    /// The config file (if any) with the flags over it.
    pub fn from_options(o: &ServeOptions) -> Result<Config, ConfigError> {
        let file = match &o.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let mut lists: Vec<(String, PathBuf)> = file.lists.into_iter().collect();
        for arg in &o.lists {
            let (name, path) = parse_list_arg(arg)?;
            lists.retain(|(n, _)| *n != name);
            lists.push((name, path));
        }
        let quic = o.quic.or(file.quic).ok_or(ConfigError::NoAddress)?;
        let tls_dir = o
            .tls_dir
            .clone()
            .or(file.tls_dir)
            .ok_or(ConfigError::NoTlsDir)?;
        file.limits.check()?;
        let data = o.data.clone().or(file.data);
        let store = o.store.or(file.store).unwrap_or_default();
        // Forgetting every hold and record at exit is asked for, never a
        // default.
        if data.is_none() && store != StoreKind::Memory {
            return Err(ConfigError::NoState);
        }
        Ok(Config {
            quic,
            data,
            store,
            allow_permissive_rules: o.allow_permissive_rules || file.allow_permissive_rules,
            tls_dir,
            rules: o.rules.clone().or(file.rules),
            crl: o.crl.clone().or(file.crl),
            keys: o.keys.clone().or(file.keys),
            lists,
            limits: file.limits,
        })
    }
}

fn parse_list_arg(arg: &str) -> Result<(String, PathBuf), ConfigError> {
    match arg.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => Ok((n.to_string(), PathBuf::from(f))),
        _ => Err(ConfigError::ListArg {
            arg: arg.to_string(),
        }),
    }
}

/// The rules and list files a service serves, read and checked: what a
/// start or a reload applies, all or nothing.
pub struct RulesAndLists {
    pub rules: Arc<CompiledRules>,
    pub lists: Vec<(String, Vec<crate::engine::ListFileValue>)>,
}

/// Reads and compiles the rules and reads the list files of `config`,
/// checking that every decision the rules can give fits a frame.
pub fn load(config: &Config) -> Result<RulesAndLists, LoadError> {
    let rules = crate::files::load_rules(config.rules.as_deref()).map_err(LoadError::Rules)?;
    if !rules.can_stop() && !config.allow_permissive_rules {
        return Err(LoadError::Permissive {
            label: rules.label.clone(),
            hash: rules.hash.clone(),
        });
    }
    let frame_bytes_max = config.limits.frame_bytes_max;
    if let Err(bound) = crate::edge::quic::wire::ruleset_fits(&rules, frame_bytes_max) {
        return Err(LoadError::DecisionTooLong {
            bound,
            frame_bytes_max,
        });
    }
    let mut lists = Vec::new();
    for (name, path) in &config.lists {
        if !rules.lists.iter().any(|d| d.name == *name) {
            return Err(LoadError::Undeclared {
                name: name.clone(),
                path: path.clone(),
            });
        }
        let values =
            crate::files::read_list_file(path, rules.limits.list_items_max).map_err(|source| {
                LoadError::List {
                    name: name.clone(),
                    source,
                }
            })?;
        lists.push((name.clone(), values));
    }
    Ok(RulesAndLists {
        rules: Arc::new(rules),
        lists,
    })
}

/// How long a shutdown waits, after the last answer is written and
/// before it closes the connections, for clients to acknowledge the last
/// answers (many round trips on a carrier's network), within
/// `shutdown_grace_ms`.
pub const SHUTDOWN_LINGER: Duration = Duration::from_millis(50);

/// Where the service's keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--keys DIR` or `keys` in the config.
    Dir(PathBuf),
    /// `$CREDENTIALS_DIRECTORY` (systemd's credentials).
    Credentials(PathBuf),
    /// The development keys `certs dev` wrote into the TLS directory.
    Development(PathBuf),
    /// None found: keys drawn for this process alone.
    Ephemeral,
}

/// The service's keys: `--keys DIR`; else systemd's
/// `$CREDENTIALS_DIRECTORY` when it holds `pseudonym.key`; else the
/// development keys in the TLS directory; else keys for this process alone.
/// A key source that is there but unusable (a key readable by others, bad
/// contents) is an error, never skipped.
pub fn keys_for(config: &Config) -> Result<(Keys, KeySource), ServeError> {
    let load = |dir: &Path| {
        refuse_keys_in_data(dir, config.data.as_deref())?;
        Keys::load(dir).map_err(ServeError::Keys)
    };
    if let Some(dir) = &config.keys {
        return Ok((load(dir)?, KeySource::Dir(dir.clone())));
    }
    let found = |dir: &Path| dir.join(crate::keys::PSEUDONYM_FILE).exists();
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
        && found(&dir)
    {
        return Ok((load(&dir)?, KeySource::Credentials(dir)));
    }
    if found(&config.tls_dir) {
        return Ok((
            load(&config.tls_dir)?,
            KeySource::Development(config.tls_dir.clone()),
        ));
    }
    // Keys for this process alone cannot open what it keeps on disk after
    // a restart: only a store in memory may use them.
    if let Backing::Redb(path) = config.backing() {
        return Err(ServeError::KeysNeeded { store: path });
    }
    let keys = Keys::random().map_err(ServeError::Keys)?;
    Ok((keys, KeySource::Ephemeral))
}

/// Keys kept in the data directory would go wherever it goes (a backup, a
/// copied disk), and with them everything the store seals: refused.
fn refuse_keys_in_data(keys: &Path, data: Option<&Path>) -> Result<(), ServeError> {
    let Some(data) = data else {
        return Ok(());
    };
    // A directory not made yet holds no keys; compare what exists.
    let (Ok(keys_at), Ok(data_at)) = (keys.canonicalize(), data.canonicalize()) else {
        return Ok(());
    };
    if keys_at.starts_with(&data_at) {
        return Err(ServeError::KeysInData {
            keys: keys.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    Ok(())
}

fn log_key_source(source: &KeySource) {
    match source {
        KeySource::Dir(d) => tracing::info!(keys = %d.display(), "keys loaded"),
        KeySource::Credentials(d) => {
            tracing::info!(keys = %d.display(), "keys loaded from the credentials directory")
        }
        KeySource::Development(d) => tracing::warn!(
            keys = %d.display(),
            "using the development keys in the TLS directory: give --keys DIR outside it in production"
        ),
        KeySource::Ephemeral => tracing::warn!(
            "no keys (--keys DIR, $CREDENTIALS_DIRECTORY, or development keys in the TLS directory): using keys for this process alone, so pseudonyms in the log change at every start"
        ),
    }
}

/// A running service.
pub struct Server {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    config: Config,
    /// The serials the CRL lists, as the last start or reload read it.
    revoked: watch::Sender<Arc<crate::tls::Revoked>>,
    shutdown: watch::Sender<bool>,
    in_flight: mpsc::Sender<()>,
    all_done: mpsc::Receiver<()>,
    decider: Arc<Decider>,
    alerts: Arc<AlertStore>,
    clock: Arc<dyn Clock>,
}

impl Server {
    /// Starts serving `config` with time from `clock`. Must run inside a
    /// tokio runtime (with the time and I/O drivers).
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Server, ServeError> {
        let store = match config.backing() {
            Backing::Memory => None,
            backing => Some(durable::open(&backing).map_err(ServeError::Store)?),
        };
        Server::start_over(config, clock, store).await
    }

    /// [`Server::start`] over a store opened elsewhere (a simulated disk in
    /// the failure tests), or, with `None`, state in memory alone.
    pub async fn start_over(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn crate::store::Store>>,
    ) -> Result<Server, ServeError> {
        config.limits.check().map_err(ServeError::Config)?;
        let loaded = load(&config).map_err(ServeError::Load)?;
        tracing::info!(
            ruleset = %loaded.rules.label,
            hash = %loaded.rules.hash,
            rules = loaded.rules.rules.len(),
            "deciding with"
        );
        let (quinn_config, revoked) = config.quinn_server_and_revoked().map_err(ServeError::Tls)?;
        let (revoked, revoked_rx) = watch::channel(Arc::new(revoked));
        let (keys, source) = keys_for(&config)?;
        log_key_source(&source);
        let keys = Arc::new(keys);
        let backing = config.backing();
        let mut engine = Engine::with_key(
            loaded.rules.clone(),
            EngineLimits::default(),
            FingerprintKey(keys.records_key()),
        );
        // In memory the engine alone holds state, as replay does: nothing
        // to read before deciding, nothing to seal or commit after.
        let durable = match store {
            None => {
                apply(&mut engine, loaded).map_err(ServeError::Rules)?;
                None
            }
            Some(store) => {
                let (durable, restored) = durable::start(store, &mut engine, keys.clone(), |e| {
                    apply(e, loaded).map(drop)
                })
                .map_err(ServeError::Store)?;
                tracing::info!(
                    store = %backing.describe(),
                    holds = restored.holds,
                    list_values = restored.list_values,
                    "state opened"
                );
                Some(durable)
            }
        };
        let control = match (&config.data, durable.is_some()) {
            (Some(data), true) => Some(control::bind(data).map_err(ServeError::Control)?),
            _ => None,
        };
        let endpoint = endpoint::bind(config.quic, quinn_config).map_err(|e| match e {
            endpoint::BindError::Socket { addr, error } => ServeError::Bind { addr, error },
            endpoint::BindError::NoRuntime => ServeError::NoRuntime,
        })?;
        let addr = endpoint.local_addr().map_err(ServeError::NoAddress)?;
        let alerts = Arc::new(AlertStore::new(config.limits.alerts_kept_max));
        let service = Service::new(engine, config.limits.await_timeout_ms_max);
        let decider = Arc::new(Decider::new(
            service,
            clock.clone(),
            &config.limits.decider(),
            alerts.clone(),
            keys,
            durable,
        ));
        let alerts_kept = decider.restore_alerts().map_err(ServeError::Store)?;
        if alerts_kept > 0 {
            tracing::info!(alerts = alerts_kept, "alerts restored");
        }
        let shared = Arc::new(Shared {
            decider: decider.clone(),
            frame_bytes_max: config.limits.frame_bytes_max,
            answer_wait_max: Duration::from_millis(config.limits.await_timeout_ms_max)
                + Duration::from_secs(1),
            connections: AtomicUsize::new(0),
            connections_max: config.limits.connections_max,
            revoked: revoked_rx,
        });
        let (shutdown, _) = watch::channel(false);
        let (in_flight, all_done) = mpsc::channel(1);
        tokio::spawn(decider.clone().run_timer(shutdown.subscribe()));
        if decider.migrating() {
            let d = decider.clone();
            tokio::spawn(async move {
                match off_runtime(move || d.rekey()).await {
                    Ok(n) => tracing::info!(
                        moved = n,
                        "pseudonym migration done: every entry is under the new key; {} may be removed",
                        crate::keys::PREVIOUS_PSEUDONYM_FILE
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "pseudonym migration stopped; it resumes at the next start")
                    }
                }
            });
        }
        tokio::spawn(prune_in_background(decider.clone(), shutdown.subscribe()));
        if decider.store().is_some() {
            tokio::spawn(sweep_records_hourly(
                decider.clone(),
                clock.clone(),
                config.limits.records_kept_days,
                shutdown.subscribe(),
            ));
        }
        if let (Some(listener), Some(store)) = (control, decider.store()) {
            let (listener, path) = listener;
            tokio::spawn(control::serve(listener, path, store, shutdown.subscribe()));
        }
        tokio::spawn(endpoint::accept(
            endpoint.clone(),
            shared,
            in_flight.clone(),
            shutdown.subscribe(),
        ));
        Ok(Server {
            addr,
            endpoint,
            config,
            revoked,
            shutdown,
            in_flight,
            all_done,
            decider,
            alerts,
            clock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn alerts(&self) -> &AlertStore {
        &self.alerts
    }

    /// Re-reads the rules and list files and applies them between two
    /// requests, all or nothing: a broken file is refused and the rules and
    /// lists served so far stay. Re-reads the TLS files and the CRL too,
    /// in the same all or nothing: once the rules apply, new connections
    /// are checked against them, and every open connection whose client
    /// certificate the CRL lists is closed (application error 3), so a
    /// revoked certificate is out without a restart. Returns a line for the
    /// log.
    pub async fn reload(&self) -> Result<String, ReloadFailed> {
        let config = self.config.clone();
        let (loaded, (tls, revoked)) = tokio::task::spawn_blocking(move || {
            let loaded = load(&config).map_err(ReloadFailed::Load)?;
            let tls = config
                .quinn_server_and_revoked()
                .map_err(ReloadFailed::Tls)?;
            Ok::<_, ReloadFailed>((loaded, tls))
        })
        .await
        .map_err(ReloadFailed::Stopped)??;
        let change: EngineChange = Box::new(move |engine: &mut Engine| apply(engine, loaded));
        let decider = self.decider.clone();
        // A reload may walk all history: off the runtime's workers.
        let applied = tokio::task::spawn_blocking(move || decider.change_blocking(change))
            .await
            .map_err(ReloadFailed::Stopped)?
            .map_err(ReloadFailed::Refused)?;
        // Shutting down, the endpoint takes no new connections: keep it so.
        if !*self.shutdown.borrow() {
            self.endpoint.set_server_config(Some(tls));
        }
        let listed = revoked.len();
        self.revoked.send_replace(Arc::new(revoked));
        Ok(format!(
            "{applied}; TLS files and CRL re-read ({listed} revoked)"
        ))
    }

    /// Deletes the decision records older than `records_kept_days` from
    /// the store now (the service does it every hour); returns how many
    /// went.
    pub async fn sweep_records(&self) -> Result<u64, GatewayError> {
        let (decider, clock) = (self.decider.clone(), self.clock.clone());
        let days = self.config.limits.records_kept_days;
        off_runtime(move || decider.sweep_records(clock.now(), days)).await
    }

    /// Prunes windowed history past its window now, in memory and in the
    /// store (the service does it in the background); returns how many
    /// stored states changed.
    pub async fn prune(&self) -> Result<usize, GatewayError> {
        let d = self.decider.clone();
        off_runtime(move || {
            d.prune_memory_part(0, 1);
            d.prune_store()
        })
        .await
    }

    /// Whether the store failed a commit (or a change could not be queued):
    /// nothing is acknowledged any more.
    pub fn store_failed(&self) -> bool {
        self.decider.store_failed()
    }

    /// Shuts down gracefully: no new connections or streams; every answer
    /// in flight is written (`await`s answer at once with their current
    /// decision); then, at most `shutdown_grace_ms` after the call, the
    /// endpoint closes. Returns whether everything in flight finished
    /// within the grace period.
    pub async fn shutdown(mut self) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.limits.shutdown_grace();
        self.endpoint.set_server_config(None);
        let _ = self.shutdown.send(true);
        self.decider.release_awaits();
        drop(self.in_flight);
        let clean = tokio::time::timeout_at(deadline, self.all_done.recv())
            .await
            .is_ok();
        let linger = tokio::time::Instant::now() + SHUTDOWN_LINGER;
        tokio::time::sleep_until(linger.min(deadline)).await;
        self.endpoint
            .close(connection::codes::DONE.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        clean
    }
}

/// Applies rules and list files to the engine, all or nothing
/// ([`Engine::reload`]: history carried over to the new rules' series, the
/// file lists replaced whole). Returns a line for the log.
fn apply(engine: &mut Engine, loaded: RulesAndLists) -> Result<String, ReloadError> {
    let r = engine.reload(loaded.rules.clone(), &loaded.lists)?;
    Ok(format!(
        "ruleset {} ({}){}; series kept {}, started empty {}, dropped {}; {} list(s) replaced, {} dropped",
        loaded.rules.hash,
        loaded.rules.label,
        if r.rules_changed { "" } else { " unchanged" },
        r.series_kept,
        r.series_started_empty,
        r.series_dropped,
        r.lists_replaced,
        r.lists_dropped,
    ))
}

/// Logs to standard error: Portcullis's own events at info, the QUIC and
/// TLS libraries' at warn. quinn wraps every connection's driver in an
/// info-level span; with it enabled, entering and leaving that span on
/// each poll cost the service a noticeable share of its time per request.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("portcullis", tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

pub fn command(o: &ServeOptions) -> ExitCode {
    init_logging();
    let config = match Config::from_options(o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("serve: {e}");
            return ExitCode::from(2);
        }
    };
    // Tokio's default: one worker per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    if config.backing() == Backing::Memory {
        tracing::warn!("state is held in memory and lost at exit: give --data DIR to keep it");
    }
    let server = match Server::start(config, Arc::new(SystemClock)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("serve: {e}");
            return e.exit_code();
        }
    };
    tracing::info!("listening quic={}", server.local_addr());
    match wait_for_signals(&server).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("serve: cannot listen for signals: {e}");
            server.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    let failed = server.store_failed();
    if failed {
        tracing::error!("the store failed: shutting down; restart to recover from what is durable");
    } else {
        tracing::info!("shutting down");
    }
    if server.shutdown().await {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped: the grace period ended with answers in flight");
    }
    if failed {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// How often one part of the history in memory is pruned, and in how
/// many parts: each part is a walk of the resident states' keys (a few
/// nanoseconds each) pruning a 64th of them, under the decider's lock.
const PRUNE_MEMORY_EVERY: Duration = Duration::from_secs(60);
const PRUNE_PARTS: usize = 64;

/// Prunes windowed history past its window: a part of memory every
/// minute, the store's states every [`PRUNE_PARTS`] minutes.
async fn prune_in_background(decider: Arc<Decider>, mut shutdown: watch::Receiver<bool>) {
    let mut part = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(PRUNE_MEMORY_EVERY) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        let d = decider.clone();
        let p = part;
        let _ = tokio::task::spawn_blocking(move || d.prune_memory_part(p, PRUNE_PARTS)).await;
        part = (part + 1) % PRUNE_PARTS;
        if part == 0 && decider.store().is_some() {
            let d = decider.clone();
            match off_runtime(move || d.prune_store()).await {
                Ok(n) => tracing::info!(states = n, "stored history past its windows pruned"),
                Err(e) => tracing::error!(error = %e, "pruning the store failed"),
            }
        }
    }
}

/// Runs blocking store work (a sweep, a walk) on tokio's blocking pool; a
/// panic in it is an error like any other.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, GatewayError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(GatewayError::Background)?
}

/// How often the record-keeping sweep runs.
const RECORDS_SWEEP: Duration = Duration::from_secs(3600);

/// Sweeps expired decision records every [`RECORDS_SWEEP`] until shutdown.
async fn sweep_records_hourly(
    decider: Arc<Decider>,
    clock: Arc<dyn Clock>,
    days: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RECORDS_SWEEP) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        let (d, now) = (decider.clone(), clock.now());
        match off_runtime(move || d.sweep_records(now, days)).await {
            Ok(n) => tracing::info!(
                deleted = n,
                "decision records past the record-keeping period deleted"
            ),
            Err(e) => tracing::error!(error = %e, "the record-keeping sweep failed"),
        }
    }
}

/// How often the service looks whether its store failed (then it stops
/// and exits non-zero; every request meanwhile is answered `unavailable`).
const STORE_CHECK: Duration = Duration::from_millis(50);

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT, or when the store
/// failed.
async fn wait_for_signals(server: &Server) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut check = tokio::time::interval(STORE_CHECK);
    loop {
        tokio::select! {
            _ = check.tick() => if server.store_failed() {
                return Ok(());
            },
            _ = hup.recv() => match server.reload().await {
                Ok(line) => tracing::info!("reloaded: {line}"),
                Err(e) => tracing::error!("reload refused, still serving the previous rules, lists and TLS files: {e}"),
            },
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}
