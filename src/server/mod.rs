//! `portcullis serve`: the decision core on QUIC.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeOptions {
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    #[arg(long)]
    pub rules: Option<PathBuf>,
    #[arg(long = "list", value_name = "NAME=FILE")]
    pub lists: Vec<String>,
    #[arg(long)]
    pub crl: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn command(_o: &ServeOptions) -> ExitCode {
    eprintln!("serve: not built yet");
    ExitCode::FAILURE
}

pub mod config;
pub use config::{Limits, quic_transport};
