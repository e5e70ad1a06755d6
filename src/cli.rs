//! The `portcullis` command line. Commands parse their arguments, open files
//! and call into the library; logic lives in the modules a library test reaches.

use crate::engine::Engine;
use crate::files::{load_lists, load_rules};
use crate::replay::open_events_for;
use clap::{Parser, Subcommand};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "Subscriber-identity protection gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Decide a file of recorded events (JSON lines) and print one answer per line.
    Replay {
        /// Rules file (default: the built-in default ruleset).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Load a list: NAME=FILE, one value per line, `#` starts a comment.
        #[arg(long = "list", value_name = "NAME=FILE")]
        lists: Vec<String>,
        /// Events file, or - for standard input.
        #[arg(default_value = "-")]
        events: String,
    },
    /// Work with rules files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Write deterministic synthetic carrier traffic (contract v1).
    Gen(crate::traffic::GenOptions),
    /// Compare a new ruleset with a baseline on recorded events, in one pass.
    Backtest(crate::backtest::Options),
    /// Development certificates for the QUIC service's mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Work with the keys directory (pseudonym and sealing keys).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write a consistent snapshot of a data directory's store to FILE
    /// (while the service runs, through its control socket). Back up the
    /// keys directory apart: the snapshot holds only pseudonyms and sealed
    /// values.
    Backup {
        /// The data directory (as `serve --data`).
        #[arg(long)]
        data: PathBuf,
        /// The backup file to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a backup in place as a data directory's store (refused if the
    /// directory holds a store or a service runs on it).
    Restore {
        /// The data directory to restore into.
        #[arg(long)]
        data: PathBuf,
        /// The backup file `portcullis backup` wrote.
        #[arg(long)]
        from: PathBuf,
    },
    /// Run the decision service on QUIC with mutual TLS.
    Serve(crate::server::ServeOptions),
    /// Send events to a running service and print its answers as JSON lines.
    Call(crate::client::CallOptions),
    /// Offer a fixed rate of generated requests to a running service and
    /// report latency (optionally beside a bare QUIC echo server).
    Loadgen(crate::loadgen::LoadgenOptions),
    /// Explain one request: every rule, whether it matched, and the values
    /// that decided it at that moment.
    Explain {
        /// Rules file (default: the built-in default ruleset).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Load a list: NAME=FILE.
        #[arg(long = "list", value_name = "NAME=FILE")]
        lists: Vec<String>,
        /// The request's id.
        #[arg(long)]
        id: String,
        /// Events file, or - for standard input.
        events: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a development PKI for localhost and 127.0.0.1: a CA, a server
    /// certificate, and client certificates for the caller, analyst and
    /// admin roles, then development pseudonym and sealing keys (keys with
    /// mode 0600).
    Dev {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue another client certificate from a CA directory.
    Issue {
        /// The directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca: PathBuf,
        /// caller, analyst or admin.
        #[arg(long)]
        role: String,
        /// The client's name (its identity: ids are scoped to it).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write the next sealing key, `seal-<ID>.key` (mode 0600): new values are
    /// sealed under it, older keys still open what they sealed.
    Rotate {
        /// The keys directory.
        #[arg(long)]
        keys: PathBuf,
    },
    /// Start a pseudonym-key migration: pseudonym.key becomes
    /// pseudonym-previous.key and a new pseudonym.key is written. The
    /// service looks identifiers up under both and re-keys the store in
    /// the background.
    RotatePseudonym {
        /// The keys directory.
        #[arg(long)]
        keys: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Compile a rules file: print its errors, or a one-line summary.
    Check { file: PathBuf },
    /// Print the built-in default ruleset.
    Default,
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Replay {
            rules,
            lists,
            events,
        } => replay(rules.as_deref(), &lists, &events),
        Command::Rules {
            command: RulesCommand::Check { file },
        } => match load_rules(Some(&file)) {
            Ok(r) => {
                println!("{}", r.summary());
                if !r.can_stop() {
                    eprintln!(
                        "warning: no deny or hold rule that is not shadow: this ruleset allows every request, and serve refuses it without --allow-permissive-rules"
                    );
                }
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("{msg}");
                ExitCode::FAILURE
            }
        },
        Command::Rules {
            command: RulesCommand::Default,
        } => {
            print!("{}", crate::rules::DEFAULT_RULES);
            ExitCode::SUCCESS
        }
        Command::Gen(o) => crate::traffic::command(&o),
        Command::Backtest(o) => crate::backtest::command(&o),
        Command::Certs {
            command: CertsCommand::Dev { out },
        } => certs_dev(&out),
        Command::Certs {
            command:
                CertsCommand::Issue {
                    ca,
                    role,
                    name,
                    out,
                },
        } => crate::tls::certs_issue_command(&ca, &role, &name, &out),
        Command::Keys {
            command: KeysCommand::Rotate { keys },
        } => crate::keys::rotate_command(&keys),
        Command::Keys {
            command: KeysCommand::RotatePseudonym { keys },
        } => crate::keys::rotate_pseudonym_command(&keys),
        Command::Backup { data, out } => crate::store::backup::backup_command(&data, &out),
        Command::Restore { data, from } => crate::store::backup::restore_command(&data, &from),
        Command::Serve(o) => crate::server::command(&o),
        Command::Call(o) => crate::client::call_command(&o),
        Command::Loadgen(o) => crate::loadgen::command(&o),
        Command::Explain {
            rules,
            lists,
            id,
            events,
        } => crate::explain::command(rules.as_deref(), &lists, &id, &events),
    }
}

/// `portcullis certs dev --out DIR`: the development PKI, then the
/// development keys beside it. Existing key files are refused before the
/// PKI is written, so a refusal writes nothing.
fn certs_dev(out: &Path) -> ExitCode {
    if let Err(e) = crate::keys::refuse_existing_dev_keys(out) {
        eprintln!("certs dev: {e}");
        return ExitCode::FAILURE;
    }
    let pki = crate::tls::certs_dev_command(out);
    if pki != ExitCode::SUCCESS {
        return pki;
    }
    match crate::keys::write_dev_keys(out) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            println!(
                "development pseudonym and sealing keys (mode 0600; never use them in production, and keep production keys outside the data directory)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certs dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay(rules: Option<&Path>, lists: &[String], events: &str) -> ExitCode {
    let rules = match load_rules(rules) {
        Ok(r) => Arc::new(r),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut engine = Engine::new(rules.clone());
    if let Err(msg) = load_lists(&mut engine, lists) {
        eprintln!("{msg}");
        return ExitCode::from(2);
    }
    let input = match open_events_for(&mut engine, events) {
        Ok(input) => input,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let started = crate::gateway::clock::monotonic();
    match crate::replay::run(&mut engine, input, &mut out) {
        Ok(summary) => {
            let secs = started.elapsed().as_secs_f64();
            eprint!("{}", summary.render(&rules, secs));
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay stopped: {e}");
            ExitCode::from(1)
        }
    }
}
