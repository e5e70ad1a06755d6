//! The `portcullis` command line. Commands parse their arguments, open files
//! and call into the library; logic lives in the modules a library test reaches.

use crate::engine::Engine;
use crate::rules::{CompiledRules, Limits};
use clap::{Parser, Subcommand};
use std::io::{self, BufRead, BufReader, Write};
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
    Gen {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Subscribers in the population (1 to 10,000,000).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::traffic::SUBSCRIBERS_MAX)))]
        subscribers: u32,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
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
        Command::Gen {
            seed,
            events,
            subscribers,
            out,
        } => gen_cmd(seed, events, subscribers, out.as_deref()),
    }
}

/// Compiles a rules file (or the default), with every error on its own lines.
pub fn load_rules(path: Option<&Path>) -> Result<CompiledRules, String> {
    let Some(path) = path else {
        return Ok(CompiledRules::default_rules());
    };
    let src = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read rules file {}: {e}", path.display()))?;
    CompiledRules::compile(&path.display().to_string(), &src, &Limits::default()).map_err(|errs| {
        let mut s = String::new();
        for e in &errs {
            s.push_str(&e.to_string());
            s.push('\n');
        }
        s.push_str(&format!(
            "{} error(s); the rules do not compile",
            errs.len()
        ));
        s
    })
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
        let f =
            std::fs::File::open(file).map_err(|e| format!("cannot read list file {file}: {e}"))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("{file}:{}: {e}", i + 1))?;
            let value = line.split('#').next().unwrap_or("").trim();
            if value.is_empty() {
                continue;
            }
            engine
                .list_add(name, value)
                .map_err(|e| format!("{file}:{}: {e}", i + 1))?;
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
    let input: Box<dyn BufRead> = if events == "-" {
        Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock()))
    } else {
        match std::fs::File::open(events) {
            Ok(f) => {
                if let Ok(meta) = f.metadata() {
                    crate::replay::reserve_for_input(&mut engine, meta.len());
                }
                Box::new(BufReader::with_capacity(1 << 16, f))
            }
            Err(e) => {
                eprintln!("cannot read events file {events}: {e}");
                return ExitCode::from(1);
            }
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

fn gen_cmd(seed: u64, events: u64, subscribers: u32, out: Option<&Path>) -> ExitCode {
    let cfg = crate::traffic::Config {
        seed,
        subscribers,
        ..crate::traffic::Config::default()
    };
    let result = match out {
        Some(p) => std::fs::File::create(p).and_then(|f| {
            let mut w = io::BufWriter::with_capacity(1 << 16, f);
            crate::traffic::write(&cfg, events, &mut w)?;
            w.flush()
        }),
        None => {
            let stdout = io::stdout();
            let mut w = io::BufWriter::with_capacity(1 << 16, stdout.lock());
            crate::traffic::write(&cfg, events, &mut w).and_then(|_| w.flush())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen: {e}");
            ExitCode::FAILURE
        }
    }
}
