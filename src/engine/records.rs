//! Idempotency records: what a retry of a request needs to be answered as
//! before, kept per request id in one bounded table. The id's key
//! ([`IdKey`]) and the content's keyed fingerprint ([`FingerprintKey`])
//! decide whether an event is a retry (same content) or a conflict (other
//! content under the same id). Apart from the state machine that writes
//! the records so that their layout (one cache line per entry) and their
//! keying are read in one place.

use super::answer::Decided;
use crate::history::Map;
use crate::rules::Outcome;

/// What a retry needs, in 48 bytes: with its 16-byte key, one record is
/// one cache line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) matched: u128,
    pub(super) shadow: u128,
    /// The content's keyed fingerprint ([`FingerprintKey`]).
    pub(super) fingerprint: [u8; 12],
    pub(super) ruleset: u16,
    pub(super) outcome: Outcome,
    /// Bit 0: a signal (no decision). Bits 1-7: the generation that wrote it.
    pub(super) tags: u8,
}

impl Record {
    #[inline]
    pub(super) fn signal(fingerprint: [u8; 12]) -> Record {
        Record {
            matched: 0,
            shadow: 0,
            fingerprint,
            ruleset: 0,
            outcome: Outcome::Allow,
            tags: 1,
        }
    }
    #[inline]
    pub(super) fn decision(fingerprint: [u8; 12], d: &Decided) -> Record {
        Record {
            matched: d.matched,
            shadow: d.shadow,
            fingerprint,
            // Invariant: an engine keeps at most RULESETS_MAX (2^16)
            // rulesets, so their indexes fit u16.
            ruleset: u16::try_from(d.ruleset).unwrap_or(u16::MAX),
            outcome: d.outcome,
            tags: 0,
        }
    }
    #[inline]
    pub(super) fn is_signal(&self) -> bool {
        self.tags & 1 == 1
    }
    fn generation(&self) -> u8 {
        self.tags >> 1
    }
    fn set_generation(&mut self, g: u8) {
        self.tags = (self.tags & 1) | (g << 1);
    }
    #[inline]
    pub(super) fn decided(&self) -> Decided {
        Decided {
            outcome: self.outcome,
            matched: self.matched,
            shadow: self.shadow,
            ruleset: u32::from(self.ruleset),
            retry: true,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Record>() == 48);
const _: () = assert!(std::mem::size_of::<(IdKey, Record)>() == 64);

/// The secret key of content fingerprints.
///
/// A fingerprint is 96 bits of SipHash-2-4-128 of the event's canonical form
/// under this key: a keyed pseudorandom function, so a caller who does not
/// hold the key cannot make other content match a record and be answered
/// with its earlier `allow`; and, at a quarter of a SHA-256's cost on the
/// decision path, cheap. A service passes a secret key from its edge (drawn
/// at start while records live in memory, from its secrets once they are
/// stored); offline replay, where no caller is an adversary, uses
/// [`FingerprintKey::REPLAY`], and its answers do not depend on the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FingerprintKey(pub [u8; 16]);

impl FingerprintKey {
    /// The fixed key of offline replay, tests and benchmarks.
    pub const REPLAY: FingerprintKey = FingerprintKey(*b"replay-fp-key-v1");
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never logged.
        f.write_str("FingerprintKey(..)")
    }
}

/// The fingerprint a record keeps of a canonical form.
#[inline]
pub(super) fn fingerprint(key: &FingerprintKey, canonical: &[u8]) -> [u8; 12] {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher24::new_with_key(&key.0);
    h.write(canonical);
    let mut out = [0u8; 12];
    out.copy_from_slice(&h.finish128().as_bytes()[..12]);
    out
}

/// A request id as a key: 128 bits of two seeded fast hashes. Fixed-size
/// keys keep the record tables free of per-id allocations and cheap to grow.
/// The key need not resist forgery: a record is matched only when its
/// keyed fingerprint (which covers the id) matches too, and a verification
/// releases a hold only when the held request's own id equals its `ref`. A
/// collision can only refuse a request (`id_conflict`), never answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdKey(pub(super) u128);

impl IdKey {
    /// The key of `id`: under `secret`, 128 bits of SipHash-2-4, which no
    /// one without the secret can make collide (the service, where ids come
    /// from many clients); without it, two seeded fast hashes (replay,
    /// where no caller is an adversary).
    #[inline]
    pub(super) fn of(id: &str, secret: Option<&[u8; 16]>) -> IdKey {
        if let Some(k) = secret {
            use siphasher::sip128::Hasher128;
            use std::hash::Hasher;
            let mut h = siphasher::sip128::SipHasher24::new_with_key(k);
            h.write(id.as_bytes());
            return IdKey(h.finish128().as_u128());
        }
        use std::hash::BuildHasher;
        let lo = foldhash::fast::FixedState::with_seed(0x5eed_1d00_0000_0001).hash_one(id);
        let hi = foldhash::fast::FixedState::with_seed(0x5eed_1d00_0000_0002).hash_one(id);
        IdKey(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The key of record keys, derived from a service's fingerprint key (one
/// secret, two uses); none for [`FingerprintKey::REPLAY`].
pub(super) fn id_secret(key: &FingerprintKey) -> Option<[u8; 16]> {
    if *key == FingerprintKey::REPLAY {
        return None;
    }
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher24::new_with_key(&key.0);
    h.write(b"portcullis record keys v1");
    Some(h.finish128().as_bytes())
}

/// Records for idempotent retries, bounded without per-entry order: one
/// table whose entries carry the generation they were written in. After
/// each half of the limit is written, a sweep keeps only the latest
/// generation (and requests still on hold), so a record lives for at least
/// half the limit, and a lookup is one probe. Generations compare only for
/// equality and a sweep leaves only the current one, so wrapping is safe.
pub(super) struct Records {
    map: Map<IdKey, Record>,
    generation: u8,
    written: usize,
    generation_max: usize,
}

impl Records {
    pub(super) fn new(max: usize) -> Records {
        Records {
            map: Map::default(),
            generation: 0,
            written: 0,
            generation_max: (max / 2).max(1),
        }
    }

    #[inline]
    pub(super) fn get(&self, id: IdKey) -> Option<&Record> {
        self.map.get(&id)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, id: IdKey) -> Option<&mut Record> {
        self.map.get_mut(&id)
    }

    /// Keeps `record` under `id`, sweeping first if this generation is
    /// full. `holds` are the requests pending on hold, by key: a sweep
    /// keeps their records. Only its keys are read, so its values may be
    /// of any type: this file need not name the held request's type
    /// (`state.rs`'s), which would make the two files import each other.
    pub(super) fn insert<H>(&mut self, id: IdKey, mut record: Record, holds: &Map<IdKey, H>) {
        if self.written >= self.generation_max {
            let current = self.generation;
            // Only a record that says hold can be pending: the others go
            // without a lookup.
            self.map.retain(|k, r| {
                r.generation() == current || (r.outcome == Outcome::Hold && holds.contains_key(k))
            });
            // Seven bits of generation.
            self.generation = current.wrapping_add(1) & 0x7f;
            self.written = 0;
        }
        self.written += 1;
        record.set_generation(self.generation);
        self.map.insert(id, record);
    }

    /// Makes room for about `events` more records, at most what the table
    /// keeps (two generations), so that it does not grow while a known
    /// input is decided.
    pub(super) fn reserve(&mut self, events: usize) {
        let room = events.min(2 * self.generation_max);
        self.map.reserve(room.saturating_sub(self.map.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{engine, run, swap, verification};
    use crate::engine::{Answer, Engine, EngineLimits};
    use crate::rules::CompiledRules;
    use std::sync::Arc;

    /// Record keys under a service's secret differ from replay's and from
    /// another secret's, and change no answer.
    #[test]
    fn keyed_record_keys_change_no_answer() {
        let a = FingerprintKey(*b"service-secret-a");
        let b = FingerprintKey(*b"service-secret-b");
        let (sa, sb) = (id_secret(&a), id_secret(&b));
        assert!(sa.is_some() && sa != sb);
        assert_eq!(id_secret(&FingerprintKey::REPLAY), None);
        assert_ne!(IdKey::of("r1", sa.as_ref()), IdKey::of("r1", None));
        assert_ne!(IdKey::of("r1", sa.as_ref()), IdKey::of("r1", sb.as_ref()));
        let rules = Arc::new(CompiledRules::default_rules());
        let mut plain = Engine::new(rules.clone());
        let mut keyed = Engine::with_key(rules, EngineLimits::default(), a);
        let cfg = crate::traffic::Config {
            subscribers: 300,
            ..crate::traffic::Config::default()
        };
        for ev in crate::traffic::Generator::new(cfg).take(5_000) {
            let at = ev.at.expect("generated events carry at");
            assert_eq!(plain.handle(&ev, at), keyed.handle(&ev, at));
            // A retry answers the same way under both.
            if ev.kind.is_decision() {
                assert_eq!(plain.handle(&ev, at), keyed.handle(&ev, at));
            }
        }
    }

    #[test]
    fn records_are_bounded_and_holds_outlive_them() {
        let mut e = engine(4);
        // A held request: a second swap on the same line within 30 days.
        let first = swap("h0", "+447700900001", "2026-03-01T10:00:00Z");
        let held = swap("h1", "+447700900001", "2026-03-01T10:01:00Z");
        run(&mut e, &first);
        assert!(matches!(run(&mut e, &held), Answer::Decision(d) if d.outcome == Outcome::Hold));
        for i in 0..20 {
            let ev = swap(
                &format!("r{i}"),
                &format!("+4477009010{i:02}"),
                "2026-03-01T11:00:00Z",
            );
            run(&mut e, &ev);
        }
        // Early records were forgotten: the same id with other content is
        // decided afresh instead of conflicting.
        let reused = swap("r0", "+447700909999", "2026-03-01T12:00:00Z");
        assert!(matches!(run(&mut e, &reused), Answer::Decision(d) if !d.retry));
        // The pending hold is still known: its retry answers as before, and
        // a verification releases it.
        assert!(
            matches!(run(&mut e, &held), Answer::Decision(d) if d.retry && d.outcome == Outcome::Hold)
        );
        let pass = verification("h1", "pass", "2026-03-01T12:00:00Z");
        assert!(matches!(run(&mut e, &pass), Answer::Signal { .. }));
        assert!(matches!(run(&mut e, &held), Answer::Decision(d) if d.outcome == Outcome::Allow));
    }
}
