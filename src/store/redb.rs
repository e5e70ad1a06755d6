//! [`RedbStore`]: the embedded durable store, one redb file (redb 4.6).
//!
//! Every commit is made with:
//! - `Durability::Immediate`: `commit` returns only after the data and the
//!   new root are fsynced, so an acknowledged batch survives power loss.
//! - Two-phase commit (`set_two_phase_commit(true)`): the data is synced,
//!   then the commit slot naming it is written and synced. Without it redb
//!   relies on a checksum to tell a torn commit slot from a whole one, and
//!   records carry attacker-supplied bytes: an attacker who can choose what
//!   a page holds could aim for a collision that passes a torn commit as
//!   valid. With it, the primary slot is valid without reading the data.
//! - Quick repair (`set_quick_repair(true)`): each commit also saves the
//!   allocator state, so a restart after a crash does not walk the whole
//!   file to rebuild it (the restart bound: opening takes as long
//!   as opening, whatever the store's size). It needs two-phase commit,
//!   which it also turns on.
//!
//! Reads run in read transactions: redb's MVCC gives each a snapshot, and
//! readers never wait for the writer.

use super::Entries;
use super::{Batch, Store, StoreError, Table};
use ::redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use std::path::{Path, PathBuf};

/// A redb database holding one redb table per [`Table`], keys and values
/// as bytes.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

impl RedbStore {
    /// Opens the store at `path`, creating the file and its tables if they
    /// are missing. After a crash, redb recovers here (quickly: see the
    /// module header).
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, |b| b.create(path))
    }

    /// Opens a store over a storage backend of its own (the fault-injecting
    /// disk of [`super::fault`]); `name` stands for its path in errors.
    pub fn open_backend(
        name: &Path,
        backend: impl ::redb::StorageBackend,
    ) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(name, |b| b.create_with_backend(backend))
    }

    fn open_with(
        path: &Path,
        create: impl FnOnce(&::redb::Builder) -> Result<Database, ::redb::DatabaseError>,
    ) -> Result<RedbStore, StoreError> {
        let db = create(&Database::builder()).map_err(|e| {
            let e = ::redb::Error::from(e);
            match e {
                ::redb::Error::Corrupted(detail) => StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail,
                },
                e => StoreError::Open {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                },
            }
        })?;
        let store = RedbStore {
            db,
            path: path.to_path_buf(),
        };
        store.create_tables()?;
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates every table, so that reads never meet a missing one.
    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.begin_write(|e| self.open_error(e))?;
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(|e| self.open_error(e))?;
        }
        txn.commit().map_err(|e| self.open_error(e))
    }

    /// A write transaction with the settings of the module header; an
    /// error is reported through `error` (the caller's kind of failure).
    fn begin_write(
        &self,
        error: impl Fn(::redb::Error) -> StoreError,
    ) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| error(e.into()))?;
        // Refused only for a transaction that made a persistent savepoint,
        // which the store never makes.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| error(e.into()))?;
        txn.set_two_phase_commit(true);
        txn.set_quick_repair(true);
        Ok(txn)
    }

    fn open_error(&self, e: impl Into<::redb::Error>) -> StoreError {
        match e.into() {
            ::redb::Error::Corrupted(detail) => self.corrupt(detail),
            e => StoreError::Open {
                path: self.path.clone(),
                detail: e.to_string(),
            },
        }
    }

    fn read_error(&self, table: Table, e: impl Into<::redb::Error>) -> StoreError {
        match e.into() {
            ::redb::Error::Corrupted(detail) => self.corrupt(detail),
            e => StoreError::Read {
                path: self.path.clone(),
                table,
                detail: e.to_string(),
            },
        }
    }

    fn commit_error(&self, e: impl Into<::redb::Error>) -> StoreError {
        match e.into() {
            ::redb::Error::Corrupted(detail) => self.corrupt(detail),
            e => StoreError::Commit {
                path: self.path.clone(),
                detail: e.to_string(),
            },
        }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Applies every change of `batches` to `txn`, opening each table once.
    fn apply(&self, txn: &WriteTransaction, batches: &[Batch]) -> Result<(), StoreError> {
        let mut open: [Option<::redb::Table<'_, &[u8], &[u8]>>; Table::ALL.len()] =
            Default::default();
        for change in batches.iter().flat_map(Batch::changes) {
            let slot = &mut open[change.table as usize];
            let table = match slot {
                Some(table) => table,
                None => slot.insert(
                    txn.open_table(definition(change.table))
                        .map_err(|e| self.commit_error(e))?,
                ),
            };
            if change.when != super::When::Always {
                use ::redb::ReadableTable;
                let current = table
                    .get(change.key.as_slice())
                    .map_err(|e| self.commit_error(e))?
                    .map(|v| v.value().to_vec());
                if !change.applies_over(current.as_deref()) {
                    continue;
                }
            }
            match &change.value {
                Some(value) => table.insert(change.key.as_slice(), value.as_slice()),
                None => table.remove(change.key.as_slice()),
            }
            .map_err(|e| self.commit_error(e))?;
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_many(&[(table, key)])?.pop().flatten())
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let first = keys.first().map_or(Table::Meta, |(t, _)| *t);
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.read_error(first, e))?;
        let mut out = Vec::with_capacity(keys.len());
        for (table, key) in keys {
            // Opening a table in a read transaction is a lookup in the
            // snapshot's table tree: cheap next to the read itself.
            let t = txn
                .open_table(definition(*table))
                .map_err(|e| self.read_error(*table, e))?;
            let value = t.get(*key).map_err(|e| self.read_error(*table, e))?;
            out.push(value.map(|v| v.value().to_vec()));
        }
        Ok(out)
    }

    fn scan_from(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        use std::ops::Bound;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.read_error(table, e))?;
        let t = txn
            .open_table(definition(table))
            .map_err(|e| self.read_error(table, e))?;
        let start: Bound<&[u8]> = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = t
            .range::<&[u8]>((start, Bound::Unbounded))
            .map_err(|e| self.read_error(table, e))?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(|e| self.read_error(table, e))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn export(&self, sink: &mut super::ExportSink<'_>) -> Result<(), StoreError> {
        use ::redb::ReadableTable;
        // One read transaction for every table: one snapshot, while the
        // writer goes on (redb readers never wait for it).
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.read_error(Table::Meta, e))?;
        for table in Table::ALL {
            let t = txn
                .open_table(definition(table))
                .map_err(|e| self.read_error(table, e))?;
            for item in t.iter().map_err(|e| self.read_error(table, e))? {
                let (k, v) = item.map_err(|e| self.read_error(table, e))?;
                sink(table, k.value(), v.value())?;
            }
        }
        Ok(())
    }

    /// One write transaction for all of `batches`. On any error the
    /// transaction is dropped, which aborts it: nothing applies.
    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError> {
        let txn = self.begin_write(|e| self.commit_error(e))?;
        self.apply(&txn, batches)?;
        txn.commit().map_err(|e| self.commit_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-store-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("store.redb")
    }

    #[test]
    fn redb_round_trip() {
        let path = scratch("round-trip");
        let store = RedbStore::open(&path).expect("open");
        crate::store::tests::round_trip(&store);
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().expect("a parent"));
    }

    #[test]
    fn reads_an_empty_store() {
        let path = scratch("empty");
        let store = RedbStore::open(&path).expect("open");
        for table in Table::ALL {
            assert_eq!(store.get(table, b"nothing").expect("get"), None);
        }
        assert_eq!(
            store.get_many(&[]).expect("get_many"),
            Vec::<Option<Vec<u8>>>::new()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().expect("a parent"));
    }

    #[test]
    fn open_names_the_path() {
        let path = PathBuf::from("/nonexistent-dir-portcullis/store.redb");
        let e = RedbStore::open(&path).expect_err("no such directory");
        assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("/nonexistent-dir-portcullis/store.redb: "),
            "{e}"
        );
    }
}
