//! Between the engine and a [`Store`]: what an event needs read before it
//! is handled ([`Persist::read`], outside the decider's lock), put in place
//! ([`Persist::admit`], under it), and what it changed as one [`Batch`]
//! ([`Persist::batch`], under it, so batches reach the writer in decision
//! order).
//!
//! Nothing leaves here in clear: entity states are stored under the keyed
//! pseudonym of their identifier and sealed with that key as associated
//! data (they hold the identifier, for re-keying, and the values of
//! series, which may be IMEIs or IMSIs); holds are sealed under the key of
//! their id (the held request names the line); list values under their
//! list and the pseudonym of the value. Records hold no identifier (the
//! content's keyed fingerprint, rule bits, the outcome) and are stored
//! plain under the key of their id.
//!
//! Table keys:
//!
//! | table      | key                                   | value                  |
//! |------------|---------------------------------------|------------------------|
//! | `entities` | pseudonym of the identifier (32)      | sealed entity state    |
//! | `records`  | key of the scoped id (16)             | record (48)            |
//! | `holds`    | key of the scoped id (16)             | sealed hold            |
//! | `lists`    | list name, 0, pseudonym of the value  | sealed value key (16)  |
//! | `rulesets` | index u32 BE                          | JSON: file, source     |
//! | `meta`     | name                                  | value                  |

use super::{Batch, Store, StoreError, Table};
use crate::contract::{Event, Kind};
use crate::engine::{Changes, Engine, FingerprintKey, record_key};
use crate::history::{EntityId, ListChange};
use crate::keys::{IdKind, KeyError, Keys, Pseudonym};
use std::fmt;
use std::sync::Arc;

/// What went wrong reading or writing the engine's state. Names the table
/// and what failed, never a key or a value.
#[derive(Debug)]
pub enum PersistError {
    Store(StoreError),
    /// A sealed value that does not open (wrong key, tampered, unknown key
    /// id), or a seal that failed.
    Keys {
        table: Table,
        source: KeyError,
    },
    /// A value that opened but does not decode.
    Decode {
        table: Table,
        detail: String,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Store(e) => e.fmt(f),
            PersistError::Keys { table, source } => write!(f, "table {table}: {source}"),
            PersistError::Decode { table, detail } => write!(f, "table {table}: {detail}"),
        }
    }
}

impl std::error::Error for PersistError {}

impl From<StoreError> for PersistError {
    fn from(e: StoreError) -> PersistError {
        PersistError::Store(e)
    }
}

/// What [`Persist::read`] found for one event, opened, not yet in place.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records by the key of their id.
    records: Vec<([u8; 16], Option<Vec<u8>>)>,
    /// Entity states (plain), with the pseudonyms they are stored under.
    entities: Vec<(EntityId, Pseudonym, Option<Vec<u8>>)>,
    /// Entities found only under the previous pseudonym master (a
    /// migration runs): their old key, deleted when they are written.
    old_keys: Vec<(EntityId, Pseudonym)>,
}

impl Loaded {
    /// Whether `id` was read (found or not).
    pub fn has(&self, id: &EntityId) -> bool {
        self.entities.iter().any(|(e, _, _)| e == id)
    }

    /// Forgets what was read for `ids` (to read them again).
    pub fn forget_entities(&mut self, ids: &[EntityId]) {
        self.entities.retain(|(e, _, _)| !ids.contains(e));
        self.old_keys.retain(|(e, _)| !ids.contains(e));
    }

    /// The entities read (found or not).
    pub fn entity_ids(&self) -> impl Iterator<Item = &EntityId> {
        self.entities.iter().map(|(e, _, _)| e)
    }

    /// The pseudonym `id` was read under, if it was.
    fn pseudonym(&self, id: &EntityId) -> Option<Pseudonym> {
        self.entities
            .iter()
            .find(|(e, _, _)| e == id)
            .map(|(_, p, _)| *p)
    }
}

/// What a list value's pseudonym is made of: the list, a 0, the value's
/// key in hex.
fn list_text(list: &str, value: u128) -> String {
    format!("{list}\u{0}{value:032x}")
}

fn list_key_of(list: &str, p: &Pseudonym) -> Vec<u8> {
    let mut key = Vec::with_capacity(list.len() + 1 + 32);
    key.extend_from_slice(list.as_bytes());
    key.push(0);
    key.extend_from_slice(&p.0);
    key
}

/// The key kind an entity's pseudonym is made under.
fn id_kind(id: &EntityId) -> IdKind {
    match id {
        EntityId::Line(_) => IdKind::Msisdn,
        EntityId::Device(_) => IdKind::Imei,
        EntityId::Account(_) => IdKind::Account,
        EntityId::Agent(_) => IdKind::Agent,
        EntityId::Store(_) => IdKind::Store,
    }
}

/// The associated data a sealed value is bound to: its table and key, so
/// a value moved to another key or table does not open.
fn aad(table: Table, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.name().len() + 1 + key.len());
    a.extend_from_slice(table.name().as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

/// The engine's state in a store: keys and codecs, no I/O of its own
/// beyond the store's calls.
#[derive(Clone)]
pub struct Persist {
    keys: Arc<Keys>,
    fingerprint: FingerprintKey,
}

impl Persist {
    pub fn new(keys: Arc<Keys>, fingerprint: FingerprintKey) -> Persist {
        Persist { keys, fingerprint }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn entity_key(&self, id: &EntityId) -> Pseudonym {
        self.keys.pseudonym(id_kind(id), &id.text())
    }

    /// Reads, in one snapshot, what handling `ev` needs from the store: the
    /// record of its id (and, for a verification, of the request it names),
    /// and the states of the entities it names. `await_ref` is the scoped id
    /// an `await` reads, instead of an event.
    pub fn read(
        &self,
        store: &dyn Store,
        ev: Option<&Event>,
        await_ref: Option<&str>,
    ) -> Result<Loaded, PersistError> {
        let mut record_keys: Vec<[u8; 16]> = Vec::with_capacity(2);
        let mut ids = Vec::new();
        if let Some(ev) = ev {
            if let Some(id) = ev.id.as_deref() {
                record_keys.push(record_key(&self.fingerprint, id));
            }
            if ev.kind == Kind::Verification
                && let Some(r) = ev.reference.as_deref()
            {
                record_keys.push(record_key(&self.fingerprint, r));
            }
            ids = EntityId::all_of(ev);
        }
        if let Some(r) = await_ref {
            record_keys.push(record_key(&self.fingerprint, r));
        }
        let pseudonyms: Vec<Pseudonym> = ids.iter().map(|id| self.entity_key(id)).collect();
        let mut asked: Vec<(Table, &[u8])> = Vec::with_capacity(record_keys.len() + ids.len());
        asked.extend(record_keys.iter().map(|k| (Table::Records, &k[..])));
        asked.extend(pseudonyms.iter().map(|p| (Table::Entities, &p.0[..])));
        let mut found = store.get_many(&asked)?.into_iter();
        let mut loaded = Loaded::default();
        for key in record_keys {
            loaded.records.push((key, found.next().flatten()));
        }
        for (id, p) in ids.into_iter().zip(pseudonyms) {
            let plain = match found.next().flatten() {
                Some(sealed) => Some(self.open(Table::Entities, &p.0, &sealed)?),
                None => None,
            };
            loaded.entities.push((id, p, plain));
        }
        self.read_previous(store, &mut loaded, 0)?;
        Ok(loaded)
    }

    /// While a pseudonym migration runs: reads the entities from the
    /// `from`-th on that were not found under the new key under the
    /// previous one (one more snapshot; what the background re-key has not
    /// moved yet).
    fn read_previous(
        &self,
        store: &dyn Store,
        loaded: &mut Loaded,
        from: usize,
    ) -> Result<(), PersistError> {
        if !self.keys.migrating() {
            return Ok(());
        }
        let missing: Vec<(usize, Pseudonym)> = loaded
            .entities
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, (_, _, plain))| plain.is_none())
            .filter_map(|(i, (id, _, _))| {
                let text = id.text();
                Some((i, self.keys.previous_pseudonym(id_kind(id), &text)?))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let asked: Vec<(Table, &[u8])> = missing
            .iter()
            .map(|(_, p)| (Table::Entities, &p.0[..]))
            .collect();
        let found = store.get_many(&asked)?;
        for ((i, old), sealed) in missing.into_iter().zip(found) {
            if let Some(sealed) = sealed {
                let plain = self.open(Table::Entities, &old.0, &sealed)?;
                let entry = &mut loaded.entities[i];
                entry.2 = Some(plain);
                loaded.old_keys.push((entry.0.clone(), old));
            }
        }
        Ok(())
    }

    /// Reads the states of `ids` (entities not in memory that an event
    /// turned out to need: a verification's held request's), adding them
    /// to `loaded`.
    pub fn read_entities(
        &self,
        store: &dyn Store,
        ids: Vec<EntityId>,
        loaded: &mut Loaded,
    ) -> Result<(), PersistError> {
        let pseudonyms: Vec<Pseudonym> = ids.iter().map(|id| self.entity_key(id)).collect();
        let asked: Vec<(Table, &[u8])> = pseudonyms
            .iter()
            .map(|p| (Table::Entities, &p.0[..]))
            .collect();
        let found = store.get_many(&asked)?;
        let first = loaded.entities.len();
        for ((id, p), sealed) in ids.into_iter().zip(pseudonyms).zip(found) {
            let plain = match sealed {
                Some(s) => Some(self.open(Table::Entities, &p.0, &s)?),
                None => None,
            };
            loaded.entities.push((id, p, plain));
        }
        // Only the entities just read are looked for under the old key.
        self.read_previous(store, loaded, first)
    }

    /// Puts what was read in place in `engine` (what the engine already
    /// holds in memory stays: it is never older).
    pub fn admit(&self, engine: &mut Engine, loaded: &Loaded) -> Result<(), PersistError> {
        for (key, value) in &loaded.records {
            if let Some(v) = value {
                engine
                    .admit_record(*key, v)
                    .map_err(|e| decode_error(Table::Records, &e))?;
            }
        }
        for (_, _, plain) in &loaded.entities {
            if let Some(p) = plain {
                engine
                    .admit_entity(p)
                    .map_err(|e| decode_error(Table::Entities, &e))?;
            }
        }
        Ok(())
    }

    /// The batch that makes `changes` durable: entity states as `engine`
    /// holds them now, sealed; records; holds, sealed; list values, sealed.
    /// `loaded` supplies the pseudonyms already computed for the event.
    pub fn batch(
        &self,
        engine: &Engine,
        changes: &Changes,
        loaded: &Loaded,
    ) -> Result<Batch, PersistError> {
        let mut batch = Batch::new();
        let mut plain = Vec::with_capacity(256);
        for id in &changes.entities {
            let p = loaded.pseudonym(id).unwrap_or_else(|| self.entity_key(id));
            plain.clear();
            if engine.encode_entity(id, &mut plain) {
                let sealed = self.seal(Table::Entities, &p.0, &plain)?;
                batch.put(Table::Entities, p.0.to_vec(), sealed);
            } else {
                batch.delete(Table::Entities, p.0.to_vec());
            }
            // Moved to the new key: the copy under the old one goes.
            if let Some((_, old)) = loaded.old_keys.iter().find(|(e, _)| e == id) {
                batch.delete(Table::Entities, old.0.to_vec());
            }
        }
        for (key, record) in &changes.records {
            batch.put(Table::Records, key.to_vec(), record.to_vec());
        }
        for (key, hold) in &changes.holds {
            match hold {
                Some(h) => {
                    let sealed = self.seal(Table::Holds, key, h)?;
                    batch.put(Table::Holds, key.to_vec(), sealed);
                }
                None => batch.delete(Table::Holds, key.to_vec()),
            }
        }
        for change in &changes.lists {
            self.list_change(change, &mut batch)?;
        }
        Ok(batch)
    }

    fn list_change(&self, change: &ListChange, batch: &mut Batch) -> Result<(), PersistError> {
        let key = self.list_key(&change.list, change.value);
        if let Some(old) = self.previous_list_key(&change.list, change.value) {
            batch.delete(Table::Lists, old);
        }
        if change.present {
            let sealed = self.seal(Table::Lists, &key, &change.value.to_be_bytes())?;
            batch.put(Table::Lists, key, sealed);
        } else {
            batch.delete(Table::Lists, key);
        }
        Ok(())
    }

    /// `NAME 0 pseudonym(value)`.
    fn list_key(&self, list: &str, value: u128) -> Vec<u8> {
        let p = self
            .keys
            .pseudonym(IdKind::ListValue, &list_text(list, value));
        list_key_of(list, &p)
    }

    /// The key of a list value under the previous pseudonym master, while
    /// a migration runs.
    fn previous_list_key(&self, list: &str, value: u128) -> Option<Vec<u8>> {
        let p = self
            .keys
            .previous_pseudonym(IdKind::ListValue, &list_text(list, value))?;
        Some(list_key_of(list, &p))
    }

    /// One page of the background re-key of a pseudonym migration: the
    /// entries of `table` (entities or lists) after `after` still under a
    /// key of the previous master, moved to the new one. Each move puts the
    /// value under the new key only if nothing is there yet (a request may
    /// have written a newer state) and deletes the old entry only if it is
    /// unchanged. Returns the batch, where the next page starts, and how
    /// many entries it moves.
    pub fn rekey_page(
        &self,
        store: &dyn Store,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Batch, Option<Vec<u8>>, usize), PersistError> {
        let page = store.scan_from(table, after, limit)?;
        let next = super::next_page(&page, limit);
        let mut batch = Batch::new();
        let mut moved = 0;
        for (key, sealed) in page {
            let plain = self.open(table, &key, &sealed)?;
            let new_key = match table {
                Table::Entities => {
                    let d = crate::history::codec::decode(&plain)
                        .map_err(|e| decode_error(table, &e))?;
                    self.entity_key(&d.id).0.to_vec()
                }
                Table::Lists => {
                    let (name, value) = Persist::list_entry(&key, &plain)?;
                    self.list_key(name, value)
                }
                _ => continue,
            };
            if new_key == key {
                continue;
            }
            let resealed = self.seal(table, &new_key, &plain)?;
            batch.put_if_absent(table, new_key, resealed);
            batch.delete_if(table, key, sealed);
            moved += 1;
        }
        Ok((batch, next, moved))
    }

    /// Puts every pending hold and every list value the store holds in
    /// place in `engine` (at start: both are bounded, and a verification or
    /// a rule must find them without a read).
    pub fn restore(
        &self,
        store: &dyn Store,
        engine: &mut Engine,
    ) -> Result<Restored, PersistError> {
        let mut done = Restored::default();
        for (key, sealed) in store.scan(Table::Holds)? {
            let k: [u8; 16] = key
                .as_slice()
                .try_into()
                .map_err(|_| PersistError::Decode {
                    table: Table::Holds,
                    detail: "a key that is not 16 bytes".into(),
                })?;
            let plain = self.open(Table::Holds, &key, &sealed)?;
            engine
                .admit_hold(k, &plain)
                .map_err(|e| decode_error(Table::Holds, &e))?;
            done.holds += 1;
        }
        engine.holds_admitted();
        for (key, sealed) in store.scan(Table::Lists)? {
            let plain = self.open(Table::Lists, &key, &sealed)?;
            let (name, value) = Persist::list_entry(&key, &plain)?;
            engine.admit_list_value(name, value);
            done.list_values += 1;
        }
        Ok(done)
    }

    /// A list value's entry, opened (`plain`): its list's name (from the
    /// key) and the value's key in the list's set.
    fn list_entry<'k>(key: &'k [u8], plain: &[u8]) -> Result<(&'k str, u128), PersistError> {
        let bad = |detail: &str| PersistError::Decode {
            table: Table::Lists,
            detail: detail.into(),
        };
        let split = key
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("a key without a list name"))?;
        let name =
            std::str::from_utf8(&key[..split]).map_err(|_| bad("a list name that is not UTF-8"))?;
        let value: [u8; 16] = plain
            .try_into()
            .map_err(|_| bad("a value that is not 16 bytes"))?;
        Ok((name, u128::from_be_bytes(value)))
    }

    /// The entry an alert is kept under: its number, and its line and time
    /// sealed (`MSISDN` `\n` RFC 3339).
    pub fn alert_entry(
        &self,
        seq: u64,
        alert: &crate::engine::Alert,
    ) -> Result<(Vec<u8>, Vec<u8>), PersistError> {
        let key = seq.to_be_bytes().to_vec();
        let plain = format!("{}\n{}", alert.msisdn, alert.at.to_rfc3339_utc());
        let sealed = self.seal(Table::Alerts, &key, plain.as_bytes())?;
        Ok((key, sealed))
    }

    /// The alerts the store keeps, oldest first, with their numbers.
    pub fn alerts(
        &self,
        store: &dyn Store,
    ) -> Result<Vec<(u64, crate::engine::Alert)>, PersistError> {
        let bad = |detail: &str| PersistError::Decode {
            table: Table::Alerts,
            detail: detail.into(),
        };
        let mut out = Vec::new();
        for (key, sealed) in store.scan(Table::Alerts)? {
            let seq: [u8; 8] = key
                .as_slice()
                .try_into()
                .map_err(|_| bad("a key that is not 8 bytes"))?;
            let plain = self.open(Table::Alerts, &key, &sealed)?;
            let text = std::str::from_utf8(&plain).map_err(|_| bad("not UTF-8"))?;
            let (line, at) = text.split_once('\n').ok_or_else(|| bad("no time"))?;
            let alert = crate::engine::Alert {
                msisdn: line.parse().map_err(|_| bad("a bad line"))?,
                at: crate::contract::Timestamp::parse(at).map_err(|_| bad("a bad time"))?,
            };
            out.push((u64::from_be_bytes(seq), alert));
        }
        Ok(out)
    }

    /// Opens an entity state stored under `key`.
    pub fn open_entity(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, PersistError> {
        self.open(Table::Entities, key, sealed)
    }

    /// Seals an entity state to be stored under `key`.
    pub fn seal_entity(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, PersistError> {
        self.seal(Table::Entities, key, plain)
    }

    fn seal(&self, table: Table, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, PersistError> {
        self.keys
            .seal(&aad(table, key), plain)
            .map_err(|source| PersistError::Keys { table, source })
    }

    fn open(&self, table: Table, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, PersistError> {
        self.keys
            .open(&aad(table, key), sealed)
            .map_err(|source| PersistError::Keys { table, source })
    }
}

fn decode_error(table: Table, e: &dyn fmt::Display) -> PersistError {
    PersistError::Decode {
        table,
        detail: e.to_string(),
    }
}

/// What [`Persist::restore`] put in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub holds: usize,
    pub list_values: usize,
}
