//! `portcullis backtest`: a new ruleset beside a baseline on recorded events.

use std::path::PathBuf;
use std::process::ExitCode;

/// What `portcullis backtest` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub rules: PathBuf,
    pub baseline: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub changes: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub lists: Vec<String>,
    pub hot_share: f64,
    pub events: String,
}

/// `portcullis backtest`.
pub fn command(_o: &Options) -> ExitCode {
    eprintln!("backtest: not built yet");
    ExitCode::FAILURE
}
