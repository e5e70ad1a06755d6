//! The `portcullis` command line. Commands parse their arguments, open files
//! and call into the library; logic lives in the modules a library test reaches.

use crate::engine::{Engine, ListFileValue};
use crate::rules::{CompiledRules, Limits};
use clap::{Parser, Subcommand};
use std::io::{self, BufRead, BufReader};
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

/// Opens an events file, or standard input for `-`; with a file's length
/// when it has one (to size tables with [`crate::replay::reserve_for_input`]).
pub fn open_events(events: &str) -> Result<(Box<dyn BufRead>, Option<u64>), String> {
    if events == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
            None,
        ));
    }
    let f = std::fs::File::open(events)
        .map_err(|e| format!("cannot read events file {events}: {e}"))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(1 << 16, f)), len))
}

/// [`open_events`], sizing `engine` for a file's length.
pub fn open_events_for(engine: &mut Engine, events: &str) -> Result<Box<dyn BufRead>, String> {
    let (input, len) = open_events(events)?;
    if let Some(len) = len {
        crate::replay::reserve_for_input(engine, len);
    }
    Ok(input)
}

/// Compiles a rules file (or the default), with every error on its own lines.
pub fn load_rules(path: Option<&Path>) -> Result<CompiledRules, String> {
    let Some(path) = path else {
        return Ok(CompiledRules::default_rules());
    };
    let limits = Limits::default();
    let src = read_text_bounded(path, limits.source_bytes_max, "source_bytes_max")
        .map_err(|e| format!("cannot read rules file {}: {e}", path.display()))?;
    CompiledRules::compile(&path.display().to_string(), &src, &limits)
        .map_err(|errs| crate::rules::render_errors(&errs))
}

/// The text of the file at `path`, refused past `bytes_max` bytes (the
/// limit `name`) without reading further.
pub fn read_text_bounded(path: &Path, bytes_max: usize, name: &str) -> Result<String, String> {
    let bytes = read_bytes_bounded(path, bytes_max).map_err(|e| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            format!("the file is over {name} ({bytes_max} bytes)")
        } else {
            e.to_string()
        }
    })?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// The bytes of the file at `path`, or an error of kind `FileTooLarge`
/// past `bytes_max` bytes, read no further: the files an operator names
/// (config, certificates, CRL, rules) are read whole, and a wrong path (a
/// device, a log) must not take the memory with it.
pub fn read_bytes_bounded(path: &Path, bytes_max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let cap = u64::try_from(bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    f.take(cap).read_to_end(&mut bytes)?;
    if bytes.len() > bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("the file is over {bytes_max} bytes"),
        ));
    }
    Ok(bytes)
}

/// The longest line a list file may have, in bytes: a value is at most
/// `LIST_VALUE_CHARS_MAX` characters, and the rest is room for a comment.
pub const LIST_LINE_BYTES_MAX: usize = 4096;

/// The values of the list file at `path`, each with its line: refused,
/// naming the line, at a line over [`LIST_LINE_BYTES_MAX`] bytes, a line
/// that is not UTF-8, a value over `LIST_VALUE_CHARS_MAX` characters, or
/// a value past `values_max` (the ruleset's `list_items_max`). Reading
/// stops there, so what a list file costs is bounded by its values, however
/// large the file.
pub fn read_list_file(path: &Path, values_max: usize) -> Result<Vec<ListFileValue>, String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read list file {}: {e}", path.display()))?;
    list_file_values(BufReader::new(f), &path.display().to_string(), values_max)
}

/// [`read_list_file`] over any reader; errors name `file`.
pub fn list_file_values(
    mut reader: impl BufRead,
    file: &str,
    values_max: usize,
) -> Result<Vec<ListFileValue>, String> {
    let at = |line: usize, what: &str| format!("{file}:{line}: {what}");
    let mut values = Vec::new();
    let mut buf = Vec::new();
    for line in 1.. {
        buf.clear();
        let n = io::Read::take(&mut reader, LIST_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| at(line, &e.to_string()))?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if n > LIST_LINE_BYTES_MAX {
            return Err(at(
                line,
                &format!("the line is longer than {LIST_LINE_BYTES_MAX} bytes"),
            ));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| at(line, "the line is not UTF-8"))?;
        let Some(value) = crate::engine::list_file_value(text) else {
            continue;
        };
        let chars = value.chars().count();
        if chars > crate::contract::LIST_VALUE_CHARS_MAX {
            return Err(at(
                line,
                &format!(
                    "the value is {chars} characters, over {}",
                    crate::contract::LIST_VALUE_CHARS_MAX
                ),
            ));
        }
        if values.len() >= values_max {
            return Err(at(
                line,
                &format!("more than list_items_max ({values_max}) values"),
            ));
        }
        values.push(ListFileValue {
            line,
            value: value.to_string(),
        });
    }
    Ok(values)
}

/// Loads `NAME=FILE` list arguments into the engine.
pub fn load_lists(engine: &mut Engine, lists: &[String]) -> Result<(), String> {
    for arg in lists {
        let Some((name, file)) = arg
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        else {
            return Err(format!("--list {arg}: expected NAME=FILE"));
        };
        if !engine.current().lists.iter().any(|d| d.name == name) {
            let declared: Vec<&str> = engine
                .current()
                .lists
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            return Err(format!(
                "--list {arg}: the ruleset declares no list {name} (it declares: {}; declare one with `list {name}: TYPE`)",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ));
        }
        let values_max = engine.current().limits.list_items_max;
        for ListFileValue { line, value } in read_list_file(Path::new(file), values_max)? {
            engine
                .list_add(name, &value)
                .map_err(|e| format!("{file}:{line}: {e}"))?;
        }
    }
    Ok(())
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
    let started = std::time::Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("written");
        path
    }

    /// Values keep the line they were on, past blank lines and comments,
    /// with `\r\n` endings and no final newline.
    #[test]
    fn a_list_file_gives_its_values_with_their_lines() {
        let path = scratch(
            "values.txt",
            b"# stolen\r\n356938035643809  # a phone\r\n\r\n   \n490154203237518",
        );
        let values = read_list_file(&path, 10).expect("a list file");
        let got: Vec<(usize, &str)> = values.iter().map(|v| (v.line, v.value.as_str())).collect();
        assert_eq!(got, [(2, "356938035643809"), (5, "490154203237518")]);
    }

    /// Each bound is refused at its line, and the message names the file,
    /// the line and the bound.
    #[test]
    fn a_list_file_past_a_bound_is_refused_at_its_line() {
        let long_line = format!("x # {}\n", "c".repeat(LIST_LINE_BYTES_MAX));
        let long_value = format!("# ok\n{}\n", "v".repeat(129));
        let cases: [(&str, Vec<u8>, usize, &str); 4] = [
            (
                "long-line.txt",
                long_line.into_bytes(),
                10,
                ":1: the line is longer than 4096 bytes",
            ),
            (
                "not-utf8.txt",
                b"a\nb\xff\n".to_vec(),
                10,
                ":2: the line is not UTF-8",
            ),
            (
                "long-value.txt",
                long_value.into_bytes(),
                10,
                ":2: the value is 129 characters, over 128",
            ),
            (
                "many.txt",
                b"a\n#\nb\nc\n".to_vec(),
                2,
                ":4: more than list_items_max (2) values",
            ),
        ];
        for (name, bytes, max, want) in cases {
            let path = scratch(name, &bytes);
            let err = read_list_file(&path, max).expect_err(name);
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.ends_with(want), "{name}: {err}");
        }
        // A line of exactly the bound is fine.
        let exact = format!("x #{}\n", "c".repeat(LIST_LINE_BYTES_MAX - 3));
        assert_eq!(exact.len(), LIST_LINE_BYTES_MAX + 1);
        let path = scratch("exact.txt", exact.as_bytes());
        assert_eq!(read_list_file(&path, 1).expect("at the bound").len(), 1);
    }

    /// A file of exactly the bound reads; one byte more is `FileTooLarge`,
    /// and a config past `CONFIG_BYTES_MAX` says so.
    #[test]
    fn files_are_read_within_their_bound() {
        let path = scratch("bound.bin", &[7u8; 100]);
        assert_eq!(
            read_bytes_bounded(&path, 100).expect("at the bound").len(),
            100
        );
        let err = read_bytes_bounded(&path, 99).expect_err("past the bound");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        let max = crate::server::config::CONFIG_BYTES_MAX;
        let big = scratch("big.toml", &vec![b'#'; max + 1]);
        let err = crate::server::FileConfig::read(&big).expect_err("too large");
        let want = format!("over CONFIG_BYTES_MAX ({max} bytes)");
        assert!(err.0.contains(&want), "{}", err.0);
    }

    /// A rules file over `source_bytes_max` is refused without being read
    /// whole; one that is not UTF-8 says where.
    #[test]
    fn a_rules_file_is_read_within_its_bound() {
        let max = Limits::default().source_bytes_max;
        let big = scratch("big.rules", &vec![b'#'; max + 10]);
        let err = load_rules(Some(&big)).expect_err("over the bound");
        assert!(
            err.contains("over source_bytes_max (1048576 bytes)"),
            "{err}"
        );
        let bad = scratch("bad.rules", b"# a rule\n\xc3(");
        let err = load_rules(Some(&bad)).expect_err("not UTF-8");
        assert!(err.contains("not UTF-8 (at byte 9)"), "{err}");
    }
}
