//! The Rust client of the QUIC service: connect with a client certificate,
//! send requests as frames on bidirectional streams, read the answers.
//! `portcullis call`, the load generator and the tests use it.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `portcullis call`: send events and print the answers as JSON lines.
#[derive(Args, Debug, Clone)]
pub struct CallOptions {
    /// The service's QUIC address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The directory of `portcullis certs dev` (`ca.pem` and the client's
    /// certificate and key).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Which certificate of the TLS directory to present: client (the
    /// caller role), analyst or admin.
    #[arg(long = "as", default_value = "client")]
    pub as_: String,
    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Events file (JSON lines), or - for standard input.
    #[arg(default_value = "-")]
    pub events: String,
}

pub fn call_command(_o: &CallOptions) -> ExitCode {
    eprintln!("call: not built yet");
    ExitCode::FAILURE
}
