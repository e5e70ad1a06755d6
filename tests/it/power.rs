//! Power loss and I/O errors, injected through the store's storage seam
//! (redb's `StorageBackend`, `store::fault::Disk`): the group-commit writer
//! over a simulated disk, 16 submitters, and at a seeded moment the power
//! goes (every write not yet synced is lost, or one is torn). The disk is
//! reopened from what survived: every acknowledged batch is there whole,
//! and no batch is there in part.

use portcullis::store::fault::{Disk, Fault};
use portcullis::store::{Batch, GroupCommit, RedbStore, Store, Table, Unavailable, WriterLimits};
use portcullis::traffic::Rng;
use std::path::Path;
use std::sync::{Arc, Mutex};

const SUBMITTERS: u64 = 16;

/// Batch `n`: a record and two entity states, each naming `n`, so a batch
/// present in part is seen.
fn batch(n: u64) -> Batch {
    let mut b = Batch::new();
    b.put(Table::Records, n.to_be_bytes(), n.to_le_bytes().repeat(6));
    for e in 0..2u8 {
        let mut key = [e; 32];
        key[..8].copy_from_slice(&n.to_be_bytes());
        b.put(Table::Entities, key, vec![e ^ n as u8; 150]);
    }
    b
}

fn keys_of(n: u64) -> [(Table, Vec<u8>); 3] {
    let key = |e: u8| {
        let mut k = [e; 32];
        k[..8].copy_from_slice(&n.to_be_bytes());
        k.to_vec()
    };
    [
        (Table::Records, n.to_be_bytes().to_vec()),
        (Table::Entities, key(0)),
        (Table::Entities, key(1)),
    ]
}

fn open(disk: &Disk) -> RedbStore {
    RedbStore::open_backend(Path::new("simulated-disk"), disk.backend()).expect("the store opens")
}

/// Runs submitters against a store on `disk` until `cut` batches were
/// acknowledged (or `fault` stops them), then cuts the power; returns what
/// survived and the numbers acknowledged and submitted.
fn run_until_cut(
    disk: &Disk,
    cut: u64,
    fault_at: Option<(u64, Fault)>,
    tear: Option<usize>,
) -> (Vec<u8>, Vec<u64>, u64) {
    let store = Arc::new(open(disk));
    let writer = Arc::new(GroupCommit::start(store, WriterLimits::default()));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let submitted: Arc<Mutex<u64>> = Arc::default();
    let image: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let threads: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (writer, acked, submitted, image, disk) = (
                writer.clone(),
                acked.clone(),
                submitted.clone(),
                image.clone(),
                disk.clone(),
            );
            std::thread::spawn(move || {
                for i in 0.. {
                    if image.lock().expect("lock").is_some() {
                        return;
                    }
                    let n = t + SUBMITTERS * i;
                    let ticket = match writer.submit(batch(n)) {
                        Ok(ticket) => ticket,
                        Err(_) => return,
                    };
                    *submitted.lock().expect("lock") += 1;
                    if ticket.wait() == Err(Unavailable) {
                        return;
                    }
                    // Acknowledgements and the power cut are ordered by this
                    // lock: one that comes after the cut was never seen.
                    let mut a = acked.lock().expect("lock");
                    if image.lock().expect("lock").is_some() {
                        return;
                    }
                    a.push(n);
                    let done = a.len() as u64;
                    if let Some((at, fault)) = fault_at
                        && done == at
                    {
                        disk.set_fault(fault);
                    }
                    if done == cut {
                        // The power goes while the others keep writing.
                        *image.lock().expect("lock") = Some(disk.power_loss(tear));
                        return;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a submitter");
    }
    let image = image
        .lock()
        .expect("lock")
        .take()
        .unwrap_or_else(|| disk.power_loss(tear));
    let acked = acked.lock().expect("lock").clone();
    let submitted = *submitted.lock().expect("lock");
    (image, acked, submitted)
}

/// Reopens what survived; returns the batches acknowledged but missing,
/// and panics on a batch present in part.
fn lost_after(image: Vec<u8>, acked: &[u64], submitted: u64) -> Vec<u64> {
    let store = open(&Disk::with_image(image));
    let mut lost = Vec::new();
    for n in 0..submitted * 2 {
        let keys = keys_of(n);
        let asked: Vec<(Table, &[u8])> = keys.iter().map(|(t, k)| (*t, &k[..])).collect();
        let got = store.get_many(&asked).expect("a read");
        let present = got.iter().filter(|v| v.is_some()).count();
        assert!(present == 0 || present == 3, "batch {n} is there in part");
        if present == 3 {
            assert_eq!(got[0].as_deref(), Some(&n.to_le_bytes().repeat(6)[..]));
        }
        if present == 0 && acked.contains(&n) {
            lost.push(n);
        }
    }
    lost
}

/// Power cuts at seeded moments, with and without a torn write: nothing
/// acknowledged is lost, nothing is half there.
#[test]
fn a_power_loss_keeps_every_acknowledged_batch_whole() {
    let mut rng = Rng::new(0x5eed_0005);
    for round in 0..8 {
        let disk = Disk::new();
        let cut = 20 + rng.below(200);
        let tear = (round % 2 == 1).then(|| rng.below(64) as usize);
        let (image, acked, submitted) = run_until_cut(&disk, cut, None, tear);
        assert!(acked.len() as u64 >= cut, "round {round}");
        let lost = lost_after(image, &acked, submitted);
        assert!(
            lost.is_empty(),
            "round {round} (cut {cut}, tear {tear:?}): lost {lost:?}"
        );
    }
}

/// The suite has teeth: on a disk whose sync does nothing, the same check
/// finds acknowledged batches lost.
#[test]
fn a_disk_that_does_not_sync_is_caught() {
    let disk = Disk::new();
    let (image, acked, submitted) = run_until_cut(&disk, 200, Some((50, Fault::SyncIsNoop)), None);
    let lost = lost_after(image, &acked, submitted);
    assert!(!lost.is_empty(), "a lying disk went unnoticed");
}

/// A failed fsync or a failed write is fatal: the batch is never
/// acknowledged, nor anything after it; the writer says so; a restart
/// finds everything acknowledged before.
#[test]
fn a_failed_sync_or_write_acknowledges_nothing_after() {
    for fault in [Fault::SyncFails, Fault::WriteFails] {
        let disk = Disk::new();
        let store = Arc::new(open(&disk));
        let writer = GroupCommit::start(store, WriterLimits::default());
        let mut acked = Vec::new();
        for n in 0..40u64 {
            acked.push(n);
            writer
                .submit(batch(n))
                .expect("queued")
                .wait()
                .expect("durable");
        }
        disk.set_fault(fault);
        let refused = writer.submit(batch(40)).expect("queued").wait();
        assert_eq!(refused, Err(Unavailable), "{fault:?}");
        assert!(writer.is_failed(), "{fault:?}");
        disk.set_fault(Fault::None);
        // Latched: a healthy disk again changes nothing until a restart.
        assert!(writer.submit(batch(41)).is_err(), "{fault:?}");
        let lost = lost_after(disk.power_loss(None), &acked, 42);
        assert!(lost.is_empty(), "{fault:?}: lost {lost:?}");
    }
}
