//! A redb storage backend that simulates a disk and its failures, for the
//! power-loss and I/O-error tests: the store's storage seam
//! ([`::redb::StorageBackend`]).
//!
//! The disk keeps two images: what every write made (what the process
//! reads back) and what a power loss would leave (`durable`: the image as
//! of the last successful `sync_data`). [`Disk::power_loss`] gives the
//! durable image, optionally with one write issued since the last sync
//! torn (a prefix of it applied), as a power cut mid-write leaves a disk.
//! Faults are switched at any moment: a failing sync, a failing write, or
//! a sync that does nothing (a disk that lies: the tests must catch it).
//!
//! [`FailingCommits`] is the same at the `Store` interface: a store in
//! memory whose commits take a set time and fail from a set one on, for
//! the group-commit writer's tests.

use super::{Batch, Entries, MemoryStore, Store, StoreError, Table};
use ::redb::StorageBackend;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A store in memory whose commits each take `pause` (standing in for an
/// fsync) and fail from the `fail_at`th (1-based) on.
#[derive(Debug)]
pub struct FailingCommits {
    inner: MemoryStore,
    pause: Duration,
    commits: AtomicUsize,
    fail_at: usize,
}

impl FailingCommits {
    pub fn new(pause: Duration, fail_at: usize) -> FailingCommits {
        FailingCommits {
            inner: MemoryStore::new(),
            pause,
            commits: AtomicUsize::new(0),
            fail_at,
        }
    }
}

impl Store for FailingCommits {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(t, k)
    }
    fn get_many(&self, k: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.get_many(k)
    }
    fn scan_from(
        &self,
        t: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner.scan_from(t, after, limit)
    }
    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError> {
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
        if self.commits.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_at {
            return Err(StoreError::Commit {
                path: PathBuf::from("failing-commits"),
                detail: "injected failure".into(),
            });
        }
        self.inner.commit(batches)
    }
}

/// What the disk does wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// `sync_data` fails (EIO).
    SyncFails,
    /// `write` fails (EIO, as a full or failing disk).
    WriteFails,
    /// `sync_data` returns success and makes nothing durable.
    SyncIsNoop,
}

#[derive(Debug, Default)]
struct Images {
    /// What writes made: what reads see.
    live: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Writes since the last sync, in order (offset, bytes), for a torn
    /// write at a power loss. A length set since the last sync is lost
    /// with them (the durable image keeps its length).
    pending: Vec<(u64, Vec<u8>)>,
    fault: Fault,
    syncs: u64,
}

/// A simulated disk, shared by the backend redb holds and the test.
#[derive(Debug, Clone, Default)]
pub struct Disk(Arc<Mutex<Images>>);

impl Disk {
    /// An empty disk.
    pub fn new() -> Disk {
        Disk::default()
    }

    /// A disk holding `image`, all of it durable (a disk after a power
    /// loss, powered on again).
    pub fn with_image(image: Vec<u8>) -> Disk {
        Disk(Arc::new(Mutex::new(Images {
            live: image.clone(),
            durable: image,
            ..Images::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Images> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend for redb over this disk.
    pub fn backend(&self) -> DiskBackend {
        DiskBackend(self.clone())
    }

    /// Switches the disk's fault.
    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// What a power loss now leaves: the durable image, and, when `tear`
    /// is `Some(n)`, the `n`-th write since the last sync (modulo their
    /// number) applied in part, its first half. Every other unsynced
    /// write is lost.
    pub fn power_loss(&self, tear: Option<usize>) -> Vec<u8> {
        let images = self.lock();
        let mut image = images.durable.clone();
        let writes = &images.pending;
        if let Some(n) = tear
            && !writes.is_empty()
        {
            let (offset, data) = &writes[n % writes.len()];
            write_at(&mut image, *offset, &data[..data.len() / 2]);
        }
        image
    }
}

fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(data.len());
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

/// The redb side of a [`Disk`].
#[derive(Debug)]
pub struct DiskBackend(Disk);

impl StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.0.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let images = self.0.lock();
        let start = usize::try_from(offset).map_err(|_| eio("offset"))?;
        let end = start.checked_add(out.len()).ok_or_else(|| eio("length"))?;
        let bytes = images
            .live
            .get(start..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut images = self.0.lock();
        let n = usize::try_from(len).map_err(|_| eio("length"))?;
        images.live.resize(n, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut images = self.0.lock();
        match images.fault {
            Fault::SyncFails => return Err(eio("fsync")),
            Fault::SyncIsNoop => return Ok(()),
            Fault::None | Fault::WriteFails => {}
        }
        images.durable = images.live.clone();
        images.pending.clear();
        images.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut images = self.0.lock();
        if images.fault == Fault::WriteFails {
            return Err(eio("write"));
        }
        write_at(&mut images.live, offset, data);
        images.pending.push((offset, data.to_vec()));
        Ok(())
    }
}
