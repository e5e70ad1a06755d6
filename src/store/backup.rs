//! `portcullis backup` and `portcullis restore`.
//!
//! A backup is a redb file holding every table of the store as of one read
//! transaction: a consistent snapshot, taken while the service writes (redb
//! readers never wait for the writer), never a copy of a file being
//! written. It holds what the store holds, pseudonyms and sealed values,
//! so it is worth nothing without the keys, which are backed up apart.
//!
//! While a service holds the store (redb locks its file), `backup` asks it
//! through its control socket, `DATA/control.sock` (in the data directory,
//! mode 0700, so only the service's user reaches it); otherwise it opens
//! the store itself. `restore` puts a backup in place of a data
//! directory's store, only when no store is there (move the old one aside
//! first) and no service runs on it.

use super::redb::RedbStore;
use super::{Batch, Store, StoreError, Table};
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The control socket's name in the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The store file's name in the data directory (as `gateway::durable`).
const STORE_FILE: &str = "portcullis.redb";

/// Entries written to the backup per transaction: bounds the memory a
/// backup of a large store holds at once.
const ENTRIES_PER_COMMIT: usize = 10_000;

/// How long `backup` waits for a running service's answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a backup or a restore did not happen. Each variant names the step
/// that failed and the file it failed on, so that an operator API can give
/// each its own code; none holds what the store holds (pseudonyms, sealed
/// values), only paths and the service's answer.
#[derive(Debug)]
pub enum BackupError {
    /// The backup file (or the restore's partial store) could not be
    /// created: it exists (a backup never replaces a file), or the
    /// directory refuses it.
    Create { path: PathBuf, source: io::Error },
    /// A store could not be opened: the data directory's, the backup being
    /// restored, or the new file being written (the error names which).
    Open(StoreError),
    /// Reading the snapshot or committing into the new file failed.
    Copy(StoreError),
    /// The `--out` path could not be made absolute (the service, which
    /// writes it, runs in another working directory).
    Absolute { path: PathBuf, source: io::Error },
    /// The path is not UTF-8 or holds a newline: the control socket's
    /// request is one line of text.
    NotSendable { path: PathBuf },
    /// The control socket's read timeout could not be set.
    SocketTimeout(io::Error),
    /// Writing the request to, or reading the answer from, the control
    /// socket failed.
    Socket(io::Error),
    /// The service answered something other than `ok ENTRIES` or
    /// `error MESSAGE`.
    BadReply { line: String },
    /// The service answered `error MESSAGE`: its own error, which crossed
    /// the socket as text.
    Service { message: String },
    /// No service answers on the control socket and the data directory
    /// holds no store.
    NoStore { path: PathBuf },
    /// The data directory already holds a store: a restore never
    /// overwrites one.
    StoreExists { path: PathBuf },
    /// A service answers on the data directory's control socket, so it
    /// holds the store.
    ServiceRunning { data: PathBuf },
    /// The data directory could not be created.
    DataDir { path: PathBuf, source: io::Error },
    /// The restored store could not be renamed into place.
    MoveIntoPlace { path: PathBuf, source: io::Error },
    /// The data directory could not be synced after the rename, so the
    /// restore is not known to be durable.
    SyncDir { path: PathBuf, source: io::Error },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Create { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            BackupError::Open(e) | BackupError::Copy(e) => write!(f, "{e}"),
            BackupError::Absolute { path, source } | BackupError::SyncDir { path, source } => {
                write!(f, "{}: {source}", path.display())
            }
            BackupError::NotSendable { path } => write!(
                f,
                "{}: not a path the control socket can carry",
                path.display()
            ),
            BackupError::SocketTimeout(e) => write!(f, "{e}"),
            BackupError::Socket(e) => write!(f, "the control socket: {e}"),
            BackupError::BadReply { line } => write!(f, "the service answered {line:?}"),
            BackupError::Service { message } => f.write_str(message),
            BackupError::NoStore { path } => write!(f, "no store at {}", path.display()),
            BackupError::StoreExists { path } => write!(
                f,
                "{} exists: move it aside first (a restore never overwrites a store)",
                path.display()
            ),
            BackupError::ServiceRunning { data } => {
                write!(f, "a service is running on {}", data.display())
            }
            BackupError::DataDir { path, source } => write!(
                f,
                "cannot create the data directory {}: {source}",
                path.display()
            ),
            BackupError::MoveIntoPlace { path, source } => {
                write!(f, "cannot move {} into place: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Create { source, .. }
            | BackupError::Absolute { source, .. }
            | BackupError::DataDir { source, .. }
            | BackupError::MoveIntoPlace { source, .. }
            | BackupError::SyncDir { source, .. } => Some(source),
            BackupError::SocketTimeout(e) | BackupError::Socket(e) => Some(e),
            BackupError::Open(e) | BackupError::Copy(e) => Some(e),
            BackupError::NotSendable { .. }
            | BackupError::BadReply { .. }
            | BackupError::Service { .. }
            | BackupError::NoStore { .. }
            | BackupError::StoreExists { .. }
            | BackupError::ServiceRunning { .. } => None,
        }
    }
}

/// What a backup wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub entries: u64,
}

/// Writes every entry of `store`, read from one snapshot, into a new store
/// file at `out` (created mode 0600; an existing file is refused).
pub fn write_backup(store: &dyn Store, out: &Path) -> Result<Written, BackupError> {
    create_new_private(out)?;
    let backup = RedbStore::open(out).map_err(BackupError::Open)?;
    let mut batch = Batch::new();
    let mut pending = 0;
    let mut written = Written::default();
    let flush = |batch: &mut Batch| -> Result<(), StoreError> {
        backup.commit(std::slice::from_ref(batch))?;
        *batch = Batch::new();
        Ok(())
    };
    store
        .export(&mut |table: Table, key: &[u8], value: &[u8]| {
            batch.put(table, key.to_vec(), value.to_vec());
            written.entries += 1;
            pending += 1;
            if pending >= ENTRIES_PER_COMMIT {
                pending = 0;
                flush(&mut batch)?;
            }
            Ok(())
        })
        .map_err(BackupError::Copy)?;
    flush(&mut batch).map_err(BackupError::Copy)?;
    Ok(written)
}

fn create_new_private(path: &Path) -> Result<(), BackupError> {
    crate::files::create_new_file(path, b"", 0o600).map_err(|source| BackupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// `portcullis backup --data DIR --out FILE`.
pub fn backup_command(data: &Path, out: &Path) -> ExitCode {
    match backup(data, out) {
        Ok(w) => {
            println!("backup written: {} ({} entries)", out.display(), w.entries);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backup(data: &Path, out: &Path) -> Result<Written, BackupError> {
    let out = absolute(out)?;
    let socket = data.join(CONTROL_SOCKET);
    // A running service answers on its socket; a stale socket (a service
    // killed) refuses the connection, and the store is opened here.
    if let Ok(stream) = UnixStream::connect(&socket) {
        return ask_service(stream, &out);
    }
    let path = data.join(STORE_FILE);
    if !path.exists() {
        return Err(BackupError::NoStore { path });
    }
    let store = RedbStore::open(&path).map_err(BackupError::Open)?;
    write_backup(&store, &out)
}

fn absolute(p: &Path) -> Result<PathBuf, BackupError> {
    std::path::absolute(p).map_err(|source| BackupError::Absolute {
        path: p.to_path_buf(),
        source,
    })
}

/// Asks the service on `stream` for a backup into `out`: one line
/// `backup PATH`, one line back, `ok ENTRIES` or `error MESSAGE`.
fn ask_service(mut stream: UnixStream, out: &Path) -> Result<Written, BackupError> {
    let Some(path) = out.to_str().filter(|p| !p.contains('\n')) else {
        return Err(BackupError::NotSendable {
            path: out.to_path_buf(),
        });
    };
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .map_err(BackupError::SocketTimeout)?;
    let reader = stream.try_clone().map_err(BackupError::Socket)?;
    writeln!(stream, "backup {path}").map_err(BackupError::Socket)?;
    let mut line = String::new();
    BufReader::new(reader)
        .read_line(&mut line)
        .map_err(BackupError::Socket)?;
    parse_reply(line.trim_end())
}

fn parse_reply(line: &str) -> Result<Written, BackupError> {
    let bad = || BackupError::BadReply {
        line: line.to_string(),
    };
    if let Some(n) = line.strip_prefix("ok ") {
        let entries = n.parse().map_err(|_| bad())?;
        return Ok(Written { entries });
    }
    Err(line
        .strip_prefix("error ")
        .map_or_else(bad, |message| BackupError::Service {
            message: message.to_string(),
        }))
}

/// The service's side of the control socket: the answer to one request
/// line, given the store it serves.
pub fn control_answer(store: &dyn Store, line: &str) -> String {
    let Some(path) = line.strip_prefix("backup ") else {
        return "error unknown request: the control socket takes `backup PATH`".into();
    };
    match write_backup(store, Path::new(path)) {
        Ok(w) => format!("ok {}", w.entries),
        Err(e) => format!("error {e}"),
    }
}

/// `portcullis restore --data DIR --from FILE`.
pub fn restore_command(data: &Path, from: &Path) -> ExitCode {
    match restore(data, from) {
        Ok(w) => {
            println!(
                "restored {} ({} entries) into {}",
                from.display(),
                w.entries,
                data.join(STORE_FILE).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(data: &Path, from: &Path) -> Result<Written, BackupError> {
    let target = data.join(STORE_FILE);
    if target.exists() {
        return Err(BackupError::StoreExists { path: target });
    }
    if UnixStream::connect(data.join(CONTROL_SOCKET)).is_ok() {
        return Err(BackupError::ServiceRunning {
            data: data.to_path_buf(),
        });
    }
    // The backup must open as a store; it is copied, through a new store
    // file, entry by entry, so that what lands is exactly what was read.
    let backup = RedbStore::open(from).map_err(BackupError::Open)?;
    create_private_dir(data)?;
    let partial = data.join(format!("{STORE_FILE}.restoring"));
    let _ = std::fs::remove_file(&partial);
    let written = write_backup(&backup, &partial)?;
    drop(backup);
    std::fs::rename(&partial, &target).map_err(|source| BackupError::MoveIntoPlace {
        path: partial.clone(),
        source,
    })?;
    std::fs::File::open(data)
        .and_then(|d| d.sync_all())
        .map_err(|source| BackupError::SyncDir {
            path: data.to_path_buf(),
            source,
        })?;
    Ok(written)
}

/// Creates a data directory (and its parents), mode 0700, if missing.
pub fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    crate::files::create_private_dir(dir).map_err(|source| BackupError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::error::Error as _;

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-backup-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// The service's answer: a count, its own error as text, or anything
    /// else, quoted.
    #[test]
    fn a_reply_is_a_count_the_services_error_or_refused() {
        assert_eq!(parse_reply("ok 12").expect("a count").entries, 12);
        let err = parse_reply("error cannot create /b: exists").expect_err("an error");
        assert!(
            matches!(&err, BackupError::Service { message } if message == "cannot create /b: exists")
        );
        assert_eq!(err.to_string(), "cannot create /b: exists");
        for line in ["ok x", "hello"] {
            let err = parse_reply(line).expect_err(line);
            assert!(matches!(err, BackupError::BadReply { .. }), "{err:?}");
            assert_eq!(err.to_string(), format!("the service answered {line:?}"));
        }
    }

    /// A backup never replaces a file, and says which it refused, with the
    /// `io::Error` as its source.
    #[test]
    fn a_backup_onto_an_existing_file_is_refused() {
        let out = scratch("exists").join("b.redb");
        std::fs::write(&out, b"").expect("written");
        let err = write_backup(&MemoryStore::new(), &out).expect_err("exists");
        let BackupError::Create { path, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &out);
        assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.source().is_some());
        assert!(
            err.to_string()
                .starts_with(&format!("cannot create {}: ", out.display()))
        );
    }

    /// A restore never overwrites a store; a data directory that cannot be
    /// made says so, and its text is what a `String` caller gets.
    #[test]
    fn a_restore_refuses_a_store_in_place_and_a_bad_data_directory() {
        let data = scratch("restore");
        std::fs::write(data.join(STORE_FILE), b"").expect("written");
        let err = restore(&data, &data.join("none.redb")).expect_err("a store is there");
        assert!(matches!(err, BackupError::StoreExists { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("exists: move it aside first (a restore never overwrites a store)")
        );
        let under_a_file = data.join(STORE_FILE).join("data");
        let err = create_private_dir(&under_a_file).expect_err("under a file");
        assert!(matches!(err, BackupError::DataDir { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create the data directory "),
            "{text}"
        );
    }
}
