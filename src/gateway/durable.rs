//! Opening the service's state: the redb file under `--data DIR` (or a
//! store in memory), the rulesets its records name, its pending holds and
//! list values, and the writer in front of it.
//!
//! Restart reads only what is bounded and needed before the first request
//! (rulesets, pending holds, list values); entity states and records are
//! read when a request names them, so a store of millions of subscribers
//! opens in the time redb takes to open its file.

use crate::engine::{Engine, FingerprintKey, ReloadError};
use crate::gateway::error::GatewayError;
use crate::keys::Keys;
use crate::rules::{CompiledRules, Limits as RuleLimits};
use crate::store::{
    Batch, GroupCommit, MemoryStore, Persist, RedbStore, Restored, Store, Table, WriterLimits,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store behind the engine: what a request needs is read before the
/// lock, what it changed is written in decision order, and its answer
/// waits for the commit.
pub struct Durable {
    pub store: Arc<dyn Store>,
    pub writer: GroupCommit,
    pub persist: Persist,
}

/// The store file's name in the data directory.
pub const STORE_FILE: &str = "portcullis.redb";

/// The meta key of the store's format version, and the version.
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"1";

/// A ruleset as the store keeps it: enough to compile it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredRuleset {
    pub file: String,
    pub source: String,
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// `DIR/portcullis.redb`.
    Redb(PathBuf),
    /// In memory, lost at exit (tests and benchmarks).
    Memory,
}

impl Backing {
    pub fn describe(&self) -> String {
        match self {
            Backing::Redb(p) => p.display().to_string(),
            Backing::Memory => "memory".into(),
        }
    }
}

/// Opens the store of `backing` (creating the data directory, mode 0700,
/// and the file if need be).
pub fn open(backing: &Backing) -> Result<Arc<dyn Store>, GatewayError> {
    match backing {
        Backing::Memory => Ok(Arc::new(MemoryStore::new())),
        Backing::Redb(path) => {
            if let Some(dir) = path.parent() {
                crate::files::create_private_dir(dir).map_err(|source| GatewayError::DataDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            create_private_file(path)?;
            Ok(Arc::new(RedbStore::open(path)?))
        }
    }
}

/// Creates the store file empty, mode 0600, if it is missing (redb makes
/// a new store in an empty file): what it holds is pseudonyms and sealed
/// values, and still no one else's to read.
fn create_private_file(path: &Path) -> Result<(), GatewayError> {
    match crate::files::create_new_file(path, b"", 0o600) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(GatewayError::StoreFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The rulesets `store` keeps, in index order, compiled.
pub fn stored_rulesets(store: &dyn Store) -> Result<Vec<Arc<CompiledRules>>, GatewayError> {
    let mut out = Vec::new();
    for (index, (key, value)) in store.scan(Table::Rulesets)?.into_iter().enumerate() {
        let want = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
        if key != want {
            return Err(GatewayError::RulesetMissing { index });
        }
        let stored: StoredRuleset = serde_json::from_slice(&value)
            .map_err(|source| GatewayError::RulesetUnreadable { index, source })?;
        let compiled = CompiledRules::compile(&stored.file, &stored.source, &RuleLimits::default())
            .map_err(|errors| GatewayError::RulesetStale {
                index,
                file: stored.file.clone(),
                errors,
            })?;
        out.push(Arc::new(compiled));
    }
    Ok(out)
}

/// The batch that keeps the rulesets `engine` holds from index `from` on.
pub fn rulesets_batch(engine: &Engine, from: usize) -> Batch {
    let mut batch = Batch::new();
    for i in from..engine.rulesets_len() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let rules = engine.ruleset(index);
        let stored = StoredRuleset {
            file: rules.file.clone(),
            source: rules.source.to_string(),
        };
        // Invariant: two strings always serialize.
        let value = serde_json::to_vec(&stored).expect("a ruleset serializes");
        batch.put(Table::Rulesets, index.to_be_bytes().to_vec(), value);
    }
    batch
}

/// Checks the store's format, or marks a new store with it.
pub fn check_format(store: &dyn Store) -> Result<Batch, GatewayError> {
    let mut batch = Batch::new();
    match store.get(Table::Meta, FORMAT_KEY)? {
        Some(v) if v == FORMAT => {}
        Some(v) => {
            return Err(GatewayError::Format {
                found: String::from_utf8_lossy(&v).into_owned(),
                reads: String::from_utf8_lossy(FORMAT).into_owned(),
            });
        }
        None => batch.put(Table::Meta, FORMAT_KEY.to_vec(), FORMAT.to_vec()),
    }
    Ok(batch)
}

/// Opens the state of `store` into `engine`, whose rules are the
/// configured ones: the store's rulesets first (the configured ones then
/// decide, under the next index unless equal to one kept), its pending
/// holds and list values, then `apply` (the configured rules and list
/// files, as a reload applies them). Keeps any new ruleset, and starts the
/// writer.
pub fn start(
    store: Arc<dyn Store>,
    engine: &mut Engine,
    keys: Arc<Keys>,
    apply: impl FnOnce(&mut Engine) -> Result<(), ReloadError>,
) -> Result<(Durable, Restored), GatewayError> {
    let mut batches = vec![check_format(store.as_ref())?];
    let stored = stored_rulesets(store.as_ref())?;
    let kept = stored.len();
    if !stored.is_empty() {
        engine.restore_rulesets(stored);
    }
    let persist = Persist::new(keys.clone(), FingerprintKey(keys.records_key()));
    let restored = persist.restore(store.as_ref(), engine)?;
    apply(engine)?;
    batches.push(rulesets_batch(engine, kept));
    if batches.iter().any(|b| !b.is_empty()) {
        store.commit(&batches)?;
    }
    engine.track_changes();
    let writer = GroupCommit::start(store.clone(), WriterLimits::default());
    Ok((
        Durable {
            store,
            writer,
            persist,
        },
        restored,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};
    use crate::engine::{Changes, EngineLimits};
    use crate::gateway::access::{Peer, Role};
    use crate::gateway::service::bodies::Bodies;
    use crate::gateway::service::{Prepared, Service};
    use crate::store::Loaded;

    /// A generated trace of `events` events over `subscribers`, and replay's
    /// decision lines for it.
    fn replayed(seed: u64, subscribers: u32, events: u64) -> (Vec<u8>, Vec<String>) {
        let cfg = crate::traffic::Config {
            seed,
            subscribers,
            ..crate::traffic::Config::default()
        };
        let mut input = Vec::new();
        crate::traffic::write(&cfg, events, &mut input).expect("in memory");
        let mut engine = Engine::new(Arc::new(CompiledRules::default_rules()));
        let mut out = Vec::new();
        crate::replay::run(&mut engine, &input[..], &mut out).expect("in memory");
        let want = String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .filter(|l| l.contains("\"decision\""))
            .map(str::to_string)
            .collect();
        (input, want)
    }

    fn memory_store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::new())
    }

    fn random_keys() -> Arc<Keys> {
        Arc::new(Keys::random().expect("keys"))
    }

    fn admin() -> Peer {
        Peer {
            name: "ops".into(),
            role: Role::Admin,
        }
    }

    /// A service over `store`, as `serve` opens one: a fresh engine, the
    /// store's state put back, the default rules.
    fn open_service(store: &Arc<dyn Store>, keys: &Arc<Keys>) -> (Service, Durable) {
        open_service_with(store, keys, Arc::new(CompiledRules::default_rules()))
    }

    /// [`open_service`] with `rules` configured.
    fn open_service_with(
        store: &Arc<dyn Store>,
        keys: &Arc<Keys>,
        rules: Arc<CompiledRules>,
    ) -> (Service, Durable) {
        let mut engine = Engine::with_key(
            rules.clone(),
            EngineLimits::default(),
            FingerprintKey(keys.records_key()),
        );
        let (durable, _) = start(store.clone(), &mut engine, keys.clone(), |e| {
            e.load_rules(rules).map(drop)
        })
        .expect("the store opens");
        (Service::new(engine, 30_000), durable)
    }

    /// One request as the decider handles it: read, put in place, decide,
    /// commit, answer.
    fn handle(s: &mut Service, d: &Durable, peer: &Peer, line: &str) -> String {
        handle_cached(s, d, None, peer, line)
    }

    /// [`handle`], with the entity states bounded by `cache`.
    fn handle_cached(
        s: &mut Service,
        d: &Durable,
        cache: Option<&mut crate::gateway::cache::EntityCache>,
        peer: &Peer,
        line: &str,
    ) -> String {
        let now = parse_line(line, AtRule::Required)
            .expect("generated lines are valid")
            .at
            .expect("replay lines carry at");
        let mut out = Vec::new();
        let prepared = s.prepare_body(peer, line.as_bytes(), &mut out);
        let mut loaded = match &prepared {
            Prepared::Event { ev, .. } => d
                .persist
                .read(d.store.as_ref(), Some(ev), None)
                .expect("a read"),
            _ => Loaded::default(),
        };
        d.persist
            .admit(s.engine_mut(), &loaded)
            .expect("stored state decodes");
        if let Prepared::Event { ev, .. } = &prepared {
            let missing: Vec<_> = s
                .engine()
                .missing(ev)
                .into_iter()
                .filter(|id| !loaded.has(id))
                .collect();
            d.persist
                .read_entities(d.store.as_ref(), missing, &mut loaded)
                .expect("a read");
            d.persist
                .admit(s.engine_mut(), &loaded)
                .expect("stored state decodes");
        }
        s.apply_body(prepared, now, &mut out);
        let mut changes = Changes::default();
        s.engine_mut().take_changes(&mut changes);
        let batch = d
            .persist
            .batch(s.engine(), &changes, &loaded)
            .expect("a batch");
        let ticket = d.writer.submit(batch).expect("queued");
        let seq = ticket.seq();
        ticket.wait().expect("durable");
        if let Some(cache) = cache {
            let named: Vec<_> = loaded.entity_ids().cloned().collect();
            cache.after_request(
                s.engine_mut(),
                &named,
                &changes.entities,
                seq,
                d.writer.batches(),
            );
        }
        String::from_utf8(out).expect("UTF-8")
    }

    /// A generated multi-day trace decided by a service that restarts from
    /// its store every few hundred events (memory emptied: every state,
    /// record and hold comes back from the store) is decided exactly as
    /// replay decides it, in one process that never forgets.
    #[test]
    fn restarts_from_the_store_change_no_decision() {
        let (input, want) = replayed(11, 300, 6_000);
        let (store, keys, admin) = (memory_store(), random_keys(), admin());
        let (mut s, mut d) = open_service(&store, &keys);
        let mut got = Vec::new();
        let (mut restarts, mut holds_restored) = (0, 0);
        for (i, line) in String::from_utf8(input).expect("UTF-8").lines().enumerate() {
            if i > 0 && i % 397 == 0 {
                d.writer.shutdown();
                (s, d) = open_service(&store, &keys);
                restarts += 1;
                holds_restored += s.engine().holds_pending();
            }
            let body = handle(&mut s, &d, &admin, line);
            if body.contains("\"decision\"") {
                got.push(body);
            }
        }
        assert!(
            restarts >= 10 && holds_restored > 0,
            "{restarts} {holds_restored}"
        );
        assert!(want.len() > 300, "{}", want.len());
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "decision {i}");
        }
    }

    /// A cache far smaller than the history (a few hundred entity states)
    /// evicts thousands of times, reads them back from the store, and
    /// decides a generated trace exactly as replay does.
    #[test]
    fn a_small_cache_changes_no_decision() {
        let (input, want) = replayed(12, 400, 5_000);
        let (store, keys, admin) = (memory_store(), random_keys(), admin());
        let (mut s, d) = open_service(&store, &keys);
        let bytes_max = 32 << 10;
        let mut cache = crate::gateway::cache::EntityCache::new(bytes_max);
        let mut got = Vec::new();
        for line in String::from_utf8(input).expect("UTF-8").lines() {
            let body = handle_cached(&mut s, &d, Some(&mut cache), &admin, line);
            assert!(cache.bytes() <= bytes_max, "{}", cache.bytes());
            if body.contains("\"decision\"") {
                got.push(body);
            }
        }
        let resident: usize = s.engine().history().entity_counts().iter().sum();
        assert!(cache.evicted() > 1_000, "{}", cache.evicted());
        assert!(resident < 1_000, "{resident} states in memory");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "decision {i}");
        }
    }

    /// Mid-migration, before any re-key: history written under the previous
    /// pseudonym master is found under it, and the next write moves it to
    /// the new key.
    #[test]
    fn lookups_try_the_previous_pseudonym_key() {
        use crate::keys::IdKind;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let seals = [(1, [7u8; 32])];
        let old = Arc::new(Keys::from_secrets(&[1u8; 32], &seals).expect("keys"));
        let new =
            Arc::new(Keys::from_secrets_migrating(&[2u8; 32], &[1u8; 32], &seals).expect("keys"));
        let pos = Peer {
            name: "pos".into(),
            role: Role::Caller,
        };
        let swap = |id: &str| {
            format!(
                r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+447700900001","account":"A1","iccid":"8944110000000000008","at":"2026-03-01T10:00:00Z"}}"#
            )
        };
        let (mut s, d) = open_service(&store, &old);
        let first = handle(&mut s, &d, &pos, &swap("1"));
        let listed = handle(
            &mut s,
            &d,
            &admin(),
            r#"{"id":"l1","kind":"list_add","list":"blocked_imei","value":"356938035643809","at":"2026-03-01T10:00:00Z"}"#,
        );
        assert!(listed.contains("\"ok\":true"), "{listed}");
        d.writer.shutdown();
        let line_old = old.pseudonym(IdKind::Msisdn, "+447700900001");
        let line_new = new.pseudonym(IdKind::Msisdn, "+447700900001");
        assert_eq!(
            new.previous_pseudonym(IdKind::Msisdn, "+447700900001"),
            Some(line_old)
        );
        assert!(
            store
                .get(Table::Entities, &line_old.0)
                .expect("read")
                .is_some()
        );

        let (mut s, d) = open_service(&store, &new);
        assert_eq!(handle(&mut s, &d, &pos, &swap("1")), first);
        let fresh = handle(&mut s, &d, &pos, &swap("2"));
        assert!(fresh.contains("\"hold\""), "{fresh}");
        // The background re-key moves what no write has moved yet.
        let (batch, next, moved) = d
            .persist
            .rekey_page(store.as_ref(), Table::Entities, None, 1000)
            .expect("a page");
        assert_eq!(next, None);
        assert!(moved > 0);
        d.writer
            .submit(batch)
            .expect("queued")
            .wait()
            .expect("durable");
        let (_, _, again) = d
            .persist
            .rekey_page(store.as_ref(), Table::Entities, None, 1000)
            .expect("a page");
        assert_eq!(again, 0);
        let (batch, _, moved) = d
            .persist
            .rekey_page(store.as_ref(), Table::Lists, None, 1000)
            .expect("a page");
        assert_eq!(moved, 1);
        d.writer
            .submit(batch)
            .expect("queued")
            .wait()
            .expect("durable");
        d.writer.shutdown();
        assert!(
            store
                .get(Table::Entities, &line_old.0)
                .expect("read")
                .is_none()
        );
        assert!(
            store
                .get(Table::Entities, &line_new.0)
                .expect("read")
                .is_some()
        );
        // And the moved state still decides, and the list value is back.
        let (mut s, d) = open_service(&store, &new);
        assert_eq!(s.engine().history().list_len("blocked_imei"), 1);
        let third = handle(&mut s, &d, &pos, &swap("3"));
        assert!(third.contains("\"hold\""), "{third}");
        d.writer.shutdown();
    }

    /// States written under one ruleset and read back after a restart with
    /// another (its rules reordered, one dropped: series renumbered) are
    /// laid out by the new one: the decisions after the restart are those
    /// of a service that reloaded the new rules in memory.
    #[test]
    fn states_from_an_older_ruleset_are_laid_out_by_the_current_one() {
        let src = format!(
            "{}\nrule a_only shadow hold verify analyst_review\n  when distinct(imei of device_seen on line within 6h) >= 3\n",
            crate::rules::DEFAULT_RULES
        );
        let a =
            Arc::new(CompiledRules::compile("a.rules", &src, &RuleLimits::default()).expect("a"));
        let mut blocks: Vec<String> = src.split("\nrule ").map(str::to_string).collect();
        let head = blocks.remove(0);
        blocks.retain(|b| !b.starts_with("a_only"));
        blocks.reverse();
        let b_src = format!("{head}\nrule {}", blocks.join("\nrule "));
        let b =
            Arc::new(CompiledRules::compile("b.rules", &b_src, &RuleLimits::default()).expect("b"));
        let map = crate::rules::SeriesMap::between(&a.series, &b.series);
        assert!(!map.keeps_numbers(), "the test needs renumbered series");

        let cfg = crate::traffic::Config {
            seed: 21,
            subscribers: 300,
            attacks_per_10k: 800,
            ..crate::traffic::Config::default()
        };
        let mut input = Vec::new();
        crate::traffic::write(&cfg, 4_000, &mut input).expect("in memory");
        let input = String::from_utf8(input).expect("UTF-8");
        let lines: Vec<&str> = input.lines().collect();
        let admin = Peer {
            name: "ops".into(),
            role: Role::Admin,
        };
        let at = |line: &str| {
            parse_line(line, AtRule::Required)
                .expect("valid")
                .at
                .expect("at")
        };
        // In memory: A, then B reloaded at the midpoint.
        let mut plain = Service::new(Engine::new(a.clone()), 30_000);
        let half = lines.len() / 2;
        let mut want = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if i == half {
                plain.engine_mut().load_rules(b.clone()).expect("reload");
            }
            let mut out = Vec::new();
            plain.handle_body(&admin, line.as_bytes(), at(line), &mut out);
            if i >= half {
                want.push(String::from_utf8(out).expect("UTF-8"));
            }
        }
        // Over a store: A, then a restart with B.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keys = Arc::new(Keys::random().expect("keys"));
        let (mut s, d) = open_service_with(&store, &keys, a.clone());
        for line in &lines[..half] {
            handle(&mut s, &d, &admin, line);
        }
        d.writer.shutdown();
        let (mut s, d) = open_service_with(&store, &keys, b.clone());
        assert_eq!(s.engine().current_index(), 1);
        let mut decisions = 0;
        for (i, line) in lines[half..].iter().enumerate() {
            let got = handle(&mut s, &d, &admin, line);
            decisions += usize::from(got.contains("\"decision\""));
            assert_eq!(got, want[i], "event {}", half + i);
        }
        assert!(decisions > 100, "{decisions}");
    }

    /// A retry after a restart answers as before, even though the request
    /// was decided by an engine long gone.
    #[test]
    fn a_retry_after_a_restart_answers_as_before() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keys = Arc::new(Keys::random().expect("keys"));
        let pos = Peer {
            name: "pos".into(),
            role: Role::Caller,
        };
        let swap = |id: &str, at: &str| {
            format!(
                r#"{{"id":"{id}","kind":"sim_swap","msisdn":"+447700900001","account":"A1","iccid":"8944110000000000008","at":"{at}"}}"#
            )
        };
        let (mut s, d) = open_service(&store, &keys);
        let first = handle(&mut s, &d, &pos, &swap("1", "2026-03-01T10:00:00Z"));
        let second = handle(&mut s, &d, &pos, &swap("2", "2026-03-01T10:05:00Z"));
        assert!(second.contains("\"hold\""), "{second}");
        d.writer.shutdown();
        let (mut s, d) = open_service(&store, &keys);
        assert_eq!(s.engine().holds_pending(), 1);
        let retry = handle(&mut s, &d, &pos, &swap("1", "2026-03-01T10:06:00Z"));
        assert_eq!(
            retry.replace("\"retry\":true", "\"retry\":false"),
            first,
            "{retry}"
        );
        let again = handle(&mut s, &d, &pos, &swap("2", "2026-03-01T10:07:00Z"));
        assert!(again.contains("\"hold\""), "{again}");
        // A fresh swap on the line swapped before the restart is held:
        // its history came back.
        let fresh = handle(&mut s, &d, &pos, &swap("3", "2026-03-01T10:08:00Z"));
        assert!(fresh.contains("\"hold\""), "{fresh}");
    }
}
