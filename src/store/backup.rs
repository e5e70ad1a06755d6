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
use std::io::{BufRead, BufReader, Write};
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

/// What a backup wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub entries: u64,
}

/// Writes every entry of `store`, read from one snapshot, into a new store
/// file at `out` (created mode 0600; an existing file is refused).
pub fn write_backup(store: &dyn Store, out: &Path) -> Result<Written, String> {
    create_new_private(out)?;
    let backup = RedbStore::open(out).map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
    flush(&mut batch).map_err(|e| e.to_string())?;
    Ok(written)
}

fn create_new_private(path: &Path) -> Result<(), String> {
    crate::files::create_new_file(path, b"", 0o600)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
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

fn backup(data: &Path, out: &Path) -> Result<Written, String> {
    let out = absolute(out)?;
    let socket = data.join(CONTROL_SOCKET);
    // A running service answers on its socket; a stale socket (a service
    // killed) refuses the connection, and the store is opened here.
    if let Ok(stream) = UnixStream::connect(&socket) {
        return ask_service(stream, &out);
    }
    let path = data.join(STORE_FILE);
    if !path.exists() {
        return Err(format!("no store at {}", path.display()));
    }
    let store = RedbStore::open(&path).map_err(|e| e.to_string())?;
    write_backup(&store, &out)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Asks the service on `stream` for a backup into `out`: one line
/// `backup PATH`, one line back, `ok ENTRIES` or `error MESSAGE`.
fn ask_service(mut stream: UnixStream, out: &Path) -> Result<Written, String> {
    let path = out
        .to_str()
        .filter(|p| !p.contains('\n'))
        .ok_or_else(|| format!("{}: not a path the control socket can carry", out.display()))?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let reader = stream
        .try_clone()
        .map_err(|e| format!("the control socket: {e}"))?;
    writeln!(stream, "backup {path}").map_err(|e| format!("the control socket: {e}"))?;
    let mut line = String::new();
    BufReader::new(reader)
        .read_line(&mut line)
        .map_err(|e| format!("the control socket: {e}"))?;
    parse_reply(line.trim_end())
}

fn parse_reply(line: &str) -> Result<Written, String> {
    if let Some(n) = line.strip_prefix("ok ") {
        let entries = n
            .parse()
            .map_err(|_| format!("the service answered {line:?}"))?;
        return Ok(Written { entries });
    }
    Err(line
        .strip_prefix("error ")
        .map_or_else(|| format!("the service answered {line:?}"), str::to_string))
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

fn restore(data: &Path, from: &Path) -> Result<Written, String> {
    let target = data.join(STORE_FILE);
    if target.exists() {
        return Err(format!(
            "{} exists: move it aside first (a restore never overwrites a store)",
            target.display()
        ));
    }
    if UnixStream::connect(data.join(CONTROL_SOCKET)).is_ok() {
        return Err(format!("a service is running on {}", data.display()));
    }
    // The backup must open as a store; it is copied, through a new store
    // file, entry by entry, so that what lands is exactly what was read.
    let backup = RedbStore::open(from).map_err(|e| e.to_string())?;
    create_private_dir(data)?;
    let partial = data.join(format!("{STORE_FILE}.restoring"));
    let _ = std::fs::remove_file(&partial);
    let written = write_backup(&backup, &partial)?;
    drop(backup);
    std::fs::rename(&partial, &target)
        .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
    std::fs::File::open(data)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", data.display()))?;
    Ok(written)
}

/// Creates a data directory (and its parents), mode 0700, if missing.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    crate::files::create_private_dir(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))
}
