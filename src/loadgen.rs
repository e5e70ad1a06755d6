//! `portcullis loadgen`: an open-loop load generator for the QUIC service,
//! and the bare quinn echo server it measures the gateway against.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct LoadgenOptions {
    /// The service's QUIC address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The directory of `portcullis certs dev`.
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Offered requests per second (open loop: sent on schedule whatever
    /// the answers do).
    #[arg(long)]
    pub rate: f64,
    /// Seconds to offer load for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// QUIC connections to spread the load over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run the same load against an in-process bare quinn echo server
    /// and print both results and their ratios.
    #[arg(long)]
    pub echo_baseline: bool,
}

pub fn command(_o: &LoadgenOptions) -> ExitCode {
    eprintln!("loadgen: not built yet");
    ExitCode::FAILURE
}
