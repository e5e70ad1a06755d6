//! What can go wrong in the gateway's work outside a single request:
//! opening its state, a reload, and the upkeep that walks the store. A
//! request never fails this way (it gets a [`crate::gateway::Reply`]); the
//! operator does, and each variant says what failed and where, so that an
//! operator surface can map it to a code. No variant holds a key, a value
//! or a subscriber identifier.

use crate::engine::{AdmitError, ReloadError};
use crate::rules::{RuleError, render_errors};
use crate::store::{PersistError, Refused, StoreError, Unavailable};
use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum GatewayError {
    /// The decision engine panicked; its lock is poisoned and every request
    /// is refused until the service restarts.
    EngineFailed,
    /// The store could not be read or written.
    Store(StoreError),
    /// What the store holds could not be opened, sealed or decoded.
    Persist(PersistError),
    /// A stored state or record the engine cannot take.
    Admit(AdmitError),
    /// The writer refused a batch, or one it took never became durable:
    /// the writer has failed, and nothing more is acknowledged.
    Writer(Refused),
    NotDurable(Unavailable),
    /// A reload (or the configured rules and lists at start) was refused;
    /// nothing changed.
    Reload(ReloadError),
    /// A new ruleset was applied but could not be kept in the store.
    RulesetNotKept(Box<GatewayError>),
    /// The data directory could not be created (mode 0700).
    DataDir {
        path: PathBuf,
        source: io::Error,
    },
    /// The store file could not be created (mode 0600).
    StoreFile {
        path: PathBuf,
        source: io::Error,
    },
    /// The store's rulesets skip a number.
    RulesetMissing {
        index: usize,
    },
    /// A stored ruleset does not read as one.
    RulesetUnreadable {
        index: usize,
        source: serde_json::Error,
    },
    /// A stored ruleset no longer compiles, so the records it decided
    /// cannot be answered.
    RulesetStale {
        index: usize,
        file: String,
        errors: Vec<RuleError>,
    },
    /// The store was written in a format this build does not read.
    Format {
        found: String,
        reads: String,
    },
    /// Blocking work on the runtime's pool panicked or was cancelled.
    Background(tokio::task::JoinError),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::EngineFailed => {
                f.write_str("the decision engine failed; restart the service")
            }
            GatewayError::Store(e) => e.fmt(f),
            GatewayError::Persist(e) => e.fmt(f),
            GatewayError::Admit(e) => e.fmt(f),
            GatewayError::Writer(e) => e.fmt(f),
            GatewayError::NotDurable(e) => e.fmt(f),
            GatewayError::Reload(e) => e.fmt(f),
            GatewayError::RulesetNotKept(e) => write!(f, "the new ruleset could not be kept: {e}"),
            GatewayError::DataDir { path, source } => write!(
                f,
                "cannot create the data directory {}: {source}",
                path.display()
            ),
            GatewayError::StoreFile { path, source } => {
                write!(f, "cannot create the store {}: {source}", path.display())
            }
            GatewayError::RulesetMissing { index } => write!(
                f,
                "the store's rulesets are not numbered 0, 1, 2, ...: entry {index} is missing"
            ),
            GatewayError::RulesetUnreadable { index, source } => {
                write!(f, "the store's ruleset {index} does not read: {source}")
            }
            GatewayError::RulesetStale {
                index,
                file,
                errors,
            } => write!(
                f,
                "the store's ruleset {index} ({file}) no longer compiles, so records it decided cannot be answered:\n{}",
                render_errors(errors)
            ),
            GatewayError::Format { found, reads } => write!(
                f,
                "the store's format is {found}, this build reads format {reads}"
            ),
            GatewayError::Background(e) => write!(f, "the background task failed: {e}"),
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GatewayError::Store(e) => Some(e),
            GatewayError::Persist(e) => Some(e),
            GatewayError::RulesetNotKept(e) => Some(e.as_ref()),
            GatewayError::DataDir { source, .. } | GatewayError::StoreFile { source, .. } => {
                Some(source)
            }
            GatewayError::RulesetUnreadable { source, .. } => Some(source),
            GatewayError::Background(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        GatewayError::Store(e)
    }
}

impl From<PersistError> for GatewayError {
    fn from(e: PersistError) -> Self {
        GatewayError::Persist(e)
    }
}

impl From<AdmitError> for GatewayError {
    fn from(e: AdmitError) -> Self {
        GatewayError::Admit(e)
    }
}

impl From<Refused> for GatewayError {
    fn from(e: Refused) -> Self {
        GatewayError::Writer(e)
    }
}

impl From<Unavailable> for GatewayError {
    fn from(e: Unavailable) -> Self {
        GatewayError::NotDurable(e)
    }
}

impl From<ReloadError> for GatewayError {
    fn from(e: ReloadError) -> Self {
        GatewayError::Reload(e)
    }
}
