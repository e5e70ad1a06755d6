#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
