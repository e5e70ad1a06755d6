//! The `portcullis` binary: parses the command line and hands it to
//! [`portcullis::cli`], where every command lives.

use clap::Parser;

/// mimalloc: the gateway allocates many small, short-lived values per event
/// (tokens, ids, records), where it is markedly faster than the system
/// allocator and keeps memory from fragmenting over long runs. Built with
/// `no_thp`: with transparent huge pages, memory mimalloc returns to the
/// kernel came back as 2 MiB pages to zero, ten times the faults and about
/// a tenth of a replay's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
