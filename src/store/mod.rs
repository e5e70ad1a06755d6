//! The durable store's narrow interface (issue 5): read values by key,
//! commit batches of changes all or nothing. redb implements it now
//! ([`RedbStore`]), PostgreSQL later; [`MemoryStore`] keeps everything in
//! memory for tests and benchmarks (`--store memory`).
//!
//! The store knows nothing of what it keeps: keys are 32-byte keyed
//! pseudonyms (`keys::Keys::pseudonym`) or the keys of ids, values are
//! opaque bytes the engine encodes (sealed where an analyst must read them
//! back). Nothing here sees a subscriber identifier in clear, so nothing
//! here can leak one into an error.
//!
//! [`GroupCommit`] (in `writer.rs`) sits in front of a store: one writer
//! thread that turns many submitters' batches into one transaction and one
//! fsync, and acknowledges each batch only once it and every earlier one are
//! durable.

pub mod backup;
pub mod fault;
pub mod persist;
pub mod redb;
pub mod retention;
pub mod writer;

pub use self::persist::{Loaded, Persist, PersistError, Restored};
pub use self::redb::RedbStore;
pub use self::writer::{GroupCommit, Refused, Ticket, Unavailable, WriterLimits};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

/// The tables of the store. Each is one key space; a backend keeps each in
/// its own table (redb) or relation (PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Per-entity state (line, account, agent, device, store), keyed by the
    /// entity's keyed pseudonym: the history series the compiled rules ask
    /// for, a line's expected IMSI, locks.
    Entities,
    /// Decision records for idempotent retries, keyed by the key of the
    /// request's scoped id: the content fingerprint and the answer. Kept for
    /// the record-keeping period.
    Records,
    /// Holds awaiting verification, keyed by the key of the hold's id: the
    /// held request in canonical form, sealed values an analyst must see.
    Holds,
    /// The lists the rules name (for example a denylist), keyed by list.
    Lists,
    /// Every ruleset version a record may name, keyed by version, so a
    /// retry is answered by the ruleset that decided it.
    Rulesets,
    /// Alerts kept for the operator surface, keyed by sequence.
    Alerts,
    /// The store's own facts: format version, key ids, the clock's last
    /// reading.
    Meta,
}

impl Table {
    /// Every table, in a fixed order (the order backends create them in).
    pub const ALL: [Table; 7] = [
        Table::Entities,
        Table::Records,
        Table::Holds,
        Table::Lists,
        Table::Rulesets,
        Table::Alerts,
        Table::Meta,
    ];

    /// The table's name on disk: stable, since a file written by one version
    /// is opened by the next.
    pub fn name(self) -> &'static str {
        match self {
            Table::Entities => "entities",
            Table::Records => "records",
            Table::Holds => "holds",
            Table::Lists => "lists",
            Table::Rulesets => "rulesets",
            Table::Alerts => "alerts",
            Table::Meta => "meta",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One change: put `value` under `key` in `table`, or delete the key when
/// `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// When the change applies, judged when the transaction reaches it
    /// (else it is skipped).
    pub when: When,
}

/// The condition of a [`Change`]: a background sweep or migration that
/// read a value earlier changes it only if nothing rewrote it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Always,
    /// The key holds exactly this value.
    Holds(Vec<u8>),
    /// The key holds nothing.
    Absent,
}

impl Change {
    /// Whether the change applies over `current`, the key's value now.
    pub fn applies_over(&self, current: Option<&[u8]>) -> bool {
        match &self.when {
            When::Always => true,
            When::Holds(e) => current == Some(e.as_slice()),
            When::Absent => current.is_none(),
        }
    }
}

/// The changes one decision made, in the order they apply: committed all or
/// nothing, and in submission order with the batches around it. A later
/// change to the same key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    changes: Vec<Change>,
    bytes: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Put `value` under `key` in `table`.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.push(table, key.into(), Some(value.into()), When::Always);
    }
    /// Delete `key` from `table` (nothing if it is absent).
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.push(table, key.into(), None, When::Always);
    }
    /// Delete `key` from `table` only if it still holds `expected` when the
    /// batch is committed.
    pub fn delete_if(&mut self, table: Table, key: impl Into<Vec<u8>>, expected: Vec<u8>) {
        self.push(table, key.into(), None, When::Holds(expected));
    }
    /// Put `value` under `key` in `table` only if the key still holds
    /// `expected` when the batch is committed.
    pub fn put_if(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: Vec<u8>,
        expected: Vec<u8>,
    ) {
        self.push(table, key.into(), Some(value), When::Holds(expected));
    }
    /// Put `value` under `key` in `table` only if the key holds nothing
    /// when the batch is committed.
    pub fn put_if_absent(&mut self, table: Table, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.push(table, key.into(), Some(value), When::Absent);
    }

    fn push(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>, when: When) {
        let expected = match &when {
            When::Holds(e) => e.len(),
            _ => 0,
        };
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len) + expected;
        self.changes.push(Change {
            table,
            key,
            value,
            when,
        });
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Bytes of keys and values the batch writes: what the writer bounds a
    /// transaction by (`WriterLimits::batch_bytes_max`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The changes, in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }
}

/// What a store can fail with. Each names the store (its path, or
/// `memory`) and, where one is involved, the table; the detail is the
/// backend's own message, which carries no key or value.
#[derive(Debug)]
pub enum StoreError {
    /// The store could not be opened or created.
    Open { path: PathBuf, detail: String },
    /// A read failed (I/O, or the backend's storage layer).
    Read {
        path: PathBuf,
        table: Table,
        detail: String,
    },
    /// A commit failed: nothing of it is applied, and whether the store can
    /// take another is the backend's business (the writer never tries).
    Commit { path: PathBuf, detail: String },
    /// The file fails its checksums or structure.
    Corrupt { path: PathBuf, detail: String },
    /// A lock guarding the store was poisoned by a panic while held.
    Poisoned { path: PathBuf },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, detail } => {
                write!(f, "{}: cannot open the store: {detail}", path.display())
            }
            StoreError::Read {
                path,
                table,
                detail,
            } => write!(f, "{}: reading table {table}: {detail}", path.display()),
            StoreError::Commit { path, detail } => {
                write!(f, "{}: commit failed: {detail}", path.display())
            }
            StoreError::Corrupt { path, detail } => {
                write!(f, "{}: the store is corrupt: {detail}", path.display())
            }
            StoreError::Poisoned { path } => {
                write!(f, "{}: a panic poisoned the store's lock", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// Where the page after `page` starts, a page read with [`Store::scan_from`]
/// asking for `limit` entries: after its last key, or `None` when it came
/// short (the table is done).
pub fn next_page(page: &Entries, limit: usize) -> Option<Vec<u8>> {
    (page.len() == limit)
        .then(|| page.last().map(|(k, _)| k.clone()))
        .flatten()
}

/// Where [`Store::export`] sends each entry.
pub type ExportSink<'a> = dyn FnMut(Table, &[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Keys and values, in key order, as [`Store::scan`] gives them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The interface every backend implements.
pub trait Store: Send + Sync {
    /// The value under `key` in `table`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values under several keys, read from one snapshot (so an event's
    /// entities, record and hold are read as of one commit), in the order
    /// asked.
    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Every key and value of `table`, in key order, from one snapshot: for
    /// the tables read whole at start (holds, lists, rulesets, meta), which
    /// are bounded.
    fn scan(&self, table: Table) -> Result<Entries, StoreError> {
        self.scan_from(table, None, usize::MAX)
    }
    /// Up to `limit` entries of `table` with keys after `after` (from the
    /// first when `None`), in key order, from one snapshot: a sweep's page.
    fn scan_from(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Every entry of every table, read from one snapshot, to `sink`: a
    /// backup. The default reads table by table, which is one snapshot
    /// only for a store nothing writes meanwhile; the backends override it.
    fn export(&self, sink: &mut ExportSink<'_>) -> Result<(), StoreError> {
        for table in Table::ALL {
            for (k, v) in self.scan(table)? {
                sink(table, &k, &v)?;
            }
        }
        Ok(())
    }
    /// Apply `batches`, in order, in one transaction: all or nothing, and
    /// durable when it returns `Ok`.
    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError>;
}

/// A store in memory: for tests and benchmarks (`--store memory`), and the
/// reference the durable backends are tested against. Durable as long as
/// the process lives.
///
/// One lock over every table, rather than one per table, so that `commit`
/// and `get_many` are atomic across tables with no lock ordering to get
/// wrong; the writer is one thread, so the lock is contended only by reads.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<[BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()]>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn poisoned() -> StoreError {
        StoreError::Poisoned {
            path: PathBuf::from("memory"),
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = self.tables.lock().map_err(|_| MemoryStore::poisoned())?;
        Ok(tables[table.index()].get(key).cloned())
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let tables = self.tables.lock().map_err(|_| MemoryStore::poisoned())?;
        Ok(keys
            .iter()
            .map(|(table, key)| tables[table.index()].get(*key).cloned())
            .collect())
    }

    fn scan_from(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        use std::ops::Bound;
        let tables = self.tables.lock().map_err(|_| MemoryStore::poisoned())?;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_vec()));
        Ok(tables[table.index()]
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn export(&self, sink: &mut ExportSink<'_>) -> Result<(), StoreError> {
        // One lock held throughout: one snapshot.
        let tables = self.tables.lock().map_err(|_| MemoryStore::poisoned())?;
        for table in Table::ALL {
            for (k, v) in &tables[table.index()] {
                sink(table, k, v)?;
            }
        }
        Ok(())
    }
    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().map_err(|_| MemoryStore::poisoned())?;
        // Nothing below fails, so the batches apply whole.
        for change in batches.iter().flat_map(Batch::changes) {
            let table = &mut tables[change.table.index()];
            if !change.applies_over(table.get(&change.key).map(Vec::as_slice)) {
                continue;
            }
            match &change.value {
                Some(value) => {
                    table.insert(change.key.clone(), value.clone());
                }
                None => {
                    table.remove(&change.key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The round trip every backend must pass: put, overwrite, delete,
    /// get_many, on every table, with tables kept apart.
    pub(crate) fn round_trip(store: &dyn Store) {
        let mut first = Batch::new();
        for table in Table::ALL {
            first.put(table, *b"k1", table.name());
            first.put(table, *b"k2", b"two".to_vec());
        }
        store.commit(&[first]).expect("commit");
        for table in Table::ALL {
            assert_eq!(
                store.get(table, b"k1").expect("get").as_deref(),
                Some(table.name().as_bytes())
            );
        }
        // Two batches in one commit: the later change to a key wins.
        let mut second = Batch::new();
        let mut third = Batch::new();
        for table in Table::ALL {
            second.put(table, *b"k1", b"overwritten".to_vec());
            second.delete(table, *b"k2");
            third.put(table, *b"k1", b"last".to_vec());
            third.delete(table, *b"absent");
        }
        store.commit(&[second, third]).expect("commit");
        for table in Table::ALL {
            let got = store
                .get_many(&[(table, b"k1"), (table, b"k2"), (table, b"absent")])
                .expect("get_many");
            assert_eq!(got, vec![Some(b"last".to_vec()), None, None], "{table}");
        }
        assert_eq!(store.commit(&[]).ok(), Some(()));
    }

    #[test]
    fn memory_round_trip() {
        round_trip(&MemoryStore::new());
    }

    #[test]
    fn batch_accounts_bytes() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.put(Table::Entities, [0u8; 32], vec![1u8; 100]);
        b.delete(Table::Records, [0u8; 16]);
        assert_eq!((b.len(), b.bytes()), (2, 32 + 100 + 16));
        assert_eq!(b.changes()[1].value, None);
    }

    #[test]
    fn errors_name_path_and_table() {
        let e = StoreError::Read {
            path: PathBuf::from("/data/portcullis.redb"),
            table: Table::Holds,
            detail: "I/O error".into(),
        };
        assert_eq!(
            e.to_string(),
            "/data/portcullis.redb: reading table holds: I/O error"
        );
    }
}
