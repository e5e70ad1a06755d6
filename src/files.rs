//! The files an operator names: read within a bound, created private.
//!
//! Rules, lists, the config file, PEM files and event files come from a
//! path someone typed, and a wrong path (a device, a log, a core dump) must
//! not take the memory with it: each is read no further than a named limit
//! (`source_bytes_max`, [`LIST_LINE_BYTES_MAX`] and `list_items_max`,
//! `CONFIG_BYTES_MAX`, `PEM_FILE_BYTES_MAX`), and every refusal names the
//! file, the line where there is one, and the limit. Files that hold keys,
//! state or backups are created here too, with their final mode from the
//! first byte and never over an existing file, so no other module writes
//! its own `OpenOptions`.
//!
//! Every command and the service read through this module; it imports no
//! command, so none of them imports another through it.

use crate::contract::LIST_VALUE_CHARS_MAX;
use crate::engine::{Engine, ListFileValue, list_file_value};
use crate::history::ListError;
use crate::rules::{CompiledRules, Limits, RuleError, render_errors};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The longest line a list file may have, in bytes: a value is at most
/// `LIST_VALUE_CHARS_MAX` characters, and the rest is room for a comment.
pub const LIST_LINE_BYTES_MAX: usize = 4096;

/// Reading a whole file within its bound.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read.
    Io(io::Error),
    /// It is over `bytes_max` bytes, the limit `limit`; it was read no
    /// further.
    TooLarge {
        limit: &'static str,
        bytes_max: usize,
    },
    /// It is not UTF-8 from this byte on.
    NotUtf8 { at_byte: usize },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge { limit, bytes_max } => {
                write!(f, "the file is over {limit} ({bytes_max} bytes)")
            }
            ReadError::NotUtf8 { at_byte } => {
                write!(f, "the file is not UTF-8 (at byte {at_byte})")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// What is wrong with one line of a list file.
#[derive(Debug)]
pub enum ListLineError {
    Io(io::Error),
    TooLong,
    NotUtf8,
    ValueTooLong {
        chars: usize,
    },
    TooMany {
        values_max: usize,
    },
    /// The engine refused the value (it does not fit the list's type).
    Refused(ListError),
}

impl fmt::Display for ListLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListLineError::Io(e) => write!(f, "{e}"),
            ListLineError::TooLong => {
                write!(f, "the line is longer than {LIST_LINE_BYTES_MAX} bytes")
            }
            ListLineError::NotUtf8 => f.write_str("the line is not UTF-8"),
            ListLineError::ValueTooLong { chars } => write!(
                f,
                "the value is {chars} characters, over {LIST_VALUE_CHARS_MAX}"
            ),
            ListLineError::TooMany { values_max } => {
                write!(f, "more than list_items_max ({values_max}) values")
            }
            ListLineError::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// Why a file an operator named could not be used.
#[derive(Debug)]
pub enum FileError {
    /// The events file could not be opened.
    Events { file: String, source: io::Error },
    /// The rules file could not be read within `source_bytes_max`.
    RulesRead { file: String, source: ReadError },
    /// The rules file does not compile: every error, in order.
    Rules(Vec<RuleError>),
    /// The list file could not be opened.
    ListOpen { file: String, source: io::Error },
    /// A line of a list file, named by its number.
    ListLine {
        file: String,
        line: usize,
        error: ListLineError,
    },
    /// A `--list` argument is not `NAME=FILE`.
    ListArg { arg: String },
    /// A `--list` argument names a list the ruleset does not declare.
    Undeclared {
        arg: String,
        name: String,
        declared: Vec<String>,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Events { file, source } => {
                write!(f, "cannot read events file {file}: {source}")
            }
            FileError::RulesRead { file, source } => {
                write!(f, "cannot read rules file {file}: {source}")
            }
            FileError::Rules(errs) => f.write_str(&render_errors(errs)),
            FileError::ListOpen { file, source } => {
                write!(f, "cannot read list file {file}: {source}")
            }
            FileError::ListLine { file, line, error } => write!(f, "{file}:{line}: {error}"),
            FileError::ListArg { arg } => write!(f, "--list {arg}: expected NAME=FILE"),
            FileError::Undeclared {
                arg,
                name,
                declared,
            } => write!(
                f,
                "--list {arg}: the ruleset declares no list {name} (it declares: {}; declare one with `list {name}: TYPE`)",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        }
    }
}

impl std::error::Error for FileError {}

/// Opens an events file, or standard input for `-`; with a file's length
/// when it has one (to size tables with [`crate::replay::reserve_for_input`]).
pub fn open_events(events: &str) -> Result<(Box<dyn BufRead>, Option<u64>), FileError> {
    if events == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
            None,
        ));
    }
    let f = std::fs::File::open(events).map_err(|source| FileError::Events {
        file: events.to_string(),
        source,
    })?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(BufReader::with_capacity(1 << 16, f)), len))
}

/// Compiles a rules file (or the default), read no further than
/// `source_bytes_max`.
pub fn load_rules(path: Option<&Path>) -> Result<CompiledRules, FileError> {
    let Some(path) = path else {
        return Ok(CompiledRules::default_rules());
    };
    let limits = Limits::default();
    let file = path.display().to_string();
    let src =
        read_text_bounded(path, limits.source_bytes_max, "source_bytes_max").map_err(|source| {
            FileError::RulesRead {
                file: file.clone(),
                source,
            }
        })?;
    CompiledRules::compile(&file, &src, &limits).map_err(FileError::Rules)
}

/// The text of the file at `path`, refused past `bytes_max` bytes (the
/// limit `limit`) without reading further.
pub fn read_text_bounded(
    path: &Path,
    bytes_max: usize,
    limit: &'static str,
) -> Result<String, ReadError> {
    let bytes = read_bytes_bounded(path, bytes_max).map_err(|e| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            ReadError::TooLarge { limit, bytes_max }
        } else {
            ReadError::Io(e)
        }
    })?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        at_byte: e.utf8_error().valid_up_to(),
    })
}

/// The bytes of the file at `path`, or an error of kind `FileTooLarge`
/// past `bytes_max` bytes, read no further: the files an operator names
/// (config, certificates, CRL, rules) are read whole, and a wrong path (a
/// device, a log) must not take the memory with it.
pub fn read_bytes_bounded(path: &Path, bytes_max: usize) -> io::Result<Vec<u8>> {
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

/// The values of the list file at `path`, each with its line: refused,
/// naming the line, at a line over [`LIST_LINE_BYTES_MAX`] bytes, a line
/// that is not UTF-8, a value over `LIST_VALUE_CHARS_MAX` characters, or
/// a value past `values_max` (the ruleset's `list_items_max`). Reading
/// stops there, so what a list file costs is bounded by its values, however
/// large the file.
pub fn read_list_file(path: &Path, values_max: usize) -> Result<Vec<ListFileValue>, FileError> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| FileError::ListOpen {
        file: file.clone(),
        source,
    })?;
    read_list(BufReader::new(f), &file, values_max)
}

/// [`read_list_file`] over any reader; errors name `file`.
pub fn read_list(
    mut reader: impl BufRead,
    file: &str,
    values_max: usize,
) -> Result<Vec<ListFileValue>, FileError> {
    let at = |line: usize, error: ListLineError| FileError::ListLine {
        file: file.to_string(),
        line,
        error,
    };
    let mut values = Vec::new();
    let mut buf = Vec::new();
    for line in 1.. {
        buf.clear();
        let n = io::Read::take(&mut reader, LIST_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| at(line, ListLineError::Io(e)))?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if n > LIST_LINE_BYTES_MAX {
            return Err(at(line, ListLineError::TooLong));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| at(line, ListLineError::NotUtf8))?;
        let Some(value) = list_file_value(text) else {
            continue;
        };
        let chars = value.chars().count();
        if chars > LIST_VALUE_CHARS_MAX {
            return Err(at(line, ListLineError::ValueTooLong { chars }));
        }
        if values.len() >= values_max {
            return Err(at(line, ListLineError::TooMany { values_max }));
        }
        values.push(ListFileValue {
            line,
            value: value.to_string(),
        });
    }
    Ok(values)
}

/// Loads `NAME=FILE` list arguments into the engine.
pub fn load_lists(engine: &mut Engine, lists: &[String]) -> Result<(), FileError> {
    for arg in lists {
        let Some((name, file)) = arg
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        else {
            return Err(FileError::ListArg { arg: arg.clone() });
        };
        if !engine.current().lists.iter().any(|d| d.name == name) {
            return Err(FileError::Undeclared {
                arg: arg.clone(),
                name: name.to_string(),
                declared: engine
                    .current()
                    .lists
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            });
        }
        let values_max = engine.current().limits.list_items_max;
        for ListFileValue { line, value } in read_list_file(Path::new(file), values_max)? {
            engine
                .list_add(name, &value)
                .map_err(|e| FileError::ListLine {
                    file: file.to_string(),
                    line,
                    error: ListLineError::Refused(e),
                })?;
        }
    }
    Ok(())
}

/// Creates a new file with its final mode (a key is never readable by
/// others, not even for a moment), never replacing an existing one
/// (`io::ErrorKind::AlreadyExists`), synced before it counts as written.
pub fn create_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a directory (and its parents), mode 0700, if missing: a data
/// directory is never readable by others.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-files-{}", std::process::id()));
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
            let err = read_list_file(&path, max).expect_err(name).to_string();
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
        assert!(err.to_string().contains(&want), "{err}");
    }

    /// A rules file over `source_bytes_max` is refused without being read
    /// whole; one that is not UTF-8 says where.
    #[test]
    fn a_rules_file_is_read_within_its_bound() {
        let max = Limits::default().source_bytes_max;
        let big = scratch("big.rules", &vec![b'#'; max + 10]);
        let err = load_rules(Some(&big))
            .expect_err("over the bound")
            .to_string();
        assert!(
            err.contains("over source_bytes_max (1048576 bytes)"),
            "{err}"
        );
        let bad = scratch("bad.rules", b"# a rule\n\xc3(");
        let err = load_rules(Some(&bad)).expect_err("not UTF-8").to_string();
        assert!(err.contains("not UTF-8 (at byte 9)"), "{err}");
    }
}
