//! `portcullis explain`: one request, every rule, and the values that
//! decided it at that moment.

use std::path::Path;
use std::process::ExitCode;

/// `portcullis explain`.
pub fn command(_rules: Option<&Path>, _lists: &[String], _id: &str, _events: &str) -> ExitCode {
    eprintln!("explain: not built yet");
    ExitCode::FAILURE
}
