//! Mutual TLS for the QUIC service.

use std::path::Path;
use std::process::ExitCode;

/// `portcullis certs dev --out DIR`.
pub fn certs_dev_command(_out: &Path) -> ExitCode {
    eprintln!("certs dev: not built yet");
    ExitCode::FAILURE
}

/// `portcullis certs issue`.
pub fn certs_issue_command(_ca: &Path, _role: &str, _name: &str, _out: &Path) -> ExitCode {
    eprintln!("certs issue: not built yet");
    ExitCode::FAILURE
}
