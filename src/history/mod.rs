//! Per-entity history: what the compiled rules ask to keep, and nothing more.
//!
//! Each line, account, agent, device and store that appears in traffic has
//! one [`EntityState`]: a small vector of entries, each tagged with the
//! [series](crate::rules::Series) it belongs to. Windowed series keep events
//! within their longest window (and at most `series_items_max` per entity);
//! `ever` sets keep distinct values (at most `ever_items_max`); `latest`
//! keeps one value. Lines also carry the expected-IMSI state that detects
//! unapproved SIM changes.
//!
//! Sans-IO: time comes in as a parameter; nothing here reads a clock, a file
//! or a socket, and nothing allocates per query.

use crate::contract::ident::{Imei, Imsi, Msisdn, Token};
use crate::contract::{Event, Timestamp};
use crate::rules::{
    CompiledRules, Entity, Keep, Query, Series, Subject, Val, key_of, presence_bit, slot, truth,
};
use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

pub mod codec;
pub use codec::{EntityId, ListChange};

/// Fast, seeded, deterministic hashing (foldhash): the core draws no
/// randomness, and a replay must behave the same on every run.
pub(crate) type Hasher = foldhash::fast::FixedState;
pub(crate) type Map<K, V> = HashMap<K, V, Hasher>;

/// One recorded fact. 32 bytes: memory per subscriber is the budget that
/// matters at a carrier's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    value: u128,
    secs: i64,
    nanos: u32,
    series: u16,
}

impl Entry {
    fn new(series: u16, value: u128, at: Timestamp) -> Entry {
        Entry {
            value,
            secs: at.unix_secs(),
            nanos: at.subsec_nanos(),
            series,
        }
    }
    fn nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }
    /// The time as (seconds, nanoseconds): ordered as the time is.
    fn at(&self) -> (i64, u32) {
        (self.secs, self.nanos)
    }
}

/// The history of one entity.
/// Entries are kept sorted by (series, time): a query finds its series and
/// its window by binary search, so a busy agent's long history costs a
/// lookup, not a scan.
#[derive(Debug, Clone, Default)]
pub struct EntityState {
    /// Most entities hold a few entries: keeping them inside the hash
    /// table's bucket saves a cache miss per lookup on the decision path.
    entries: SmallVec<[Entry; INLINE_ENTRIES]>,
    /// Which series have entries here: bit `s` for series `s` below 31, bit
    /// 31 for the rest. A clear bit answers "none" without reading the
    /// entries, which past two are a pointer away: most requests ask about
    /// what a line rarely has (locks, recent SIM changes, unlocks), so most
    /// decisions never touch a line's spilled entries. Invariant: a series
    /// with entries has its bit set (a set bit may be stale until the next
    /// removal recounts).
    present: u32,
}

/// Entries kept inline per entity before spilling to the heap.
const INLINE_ENTRIES: usize = 2;

impl EntityState {
    /// Where the entries of `series` are.
    fn range(&self, series: u16) -> std::ops::Range<usize> {
        let entries: &[Entry] = &self.entries;
        if entries.len() <= 8 {
            // Most entities hold a few entries: a straight scan beats halving.
            let mut lo = 0;
            while lo < entries.len() && entries[lo].series < series {
                lo += 1;
            }
            let mut hi = lo;
            while hi < entries.len() && entries[hi].series == series {
                hi += 1;
            }
            return lo..hi;
        }
        let lo = entries.partition_point(|e| e.series < series);
        let hi = lo + entries[lo..].partition_point(|e| e.series == series);
        lo..hi
    }

    /// Whether `series` may have entries (no false negatives).
    fn may_have(&self, series: u16) -> bool {
        self.present & presence_bit(series) != 0
    }

    /// Recounts `present` after entries were removed.
    fn recount(&mut self) {
        self.present = self
            .entries
            .iter()
            .fold(0, |m, e| m | presence_bit(e.series));
    }

    /// Entries of `series` that count at `now` for a window `w`:
    /// `now - w <= t <= now`, times as (seconds, nanoseconds).
    fn window(&self, series: u16, w: (i64, u32), now: (i64, u32)) -> &[Entry] {
        if !self.may_have(series) {
            return &[];
        }
        let s = &self.entries[self.range(series)];
        let lo = window_start(now, w);
        let (start, end) = if s.len() <= 8 {
            let start = s.iter().take_while(|e| e.at() < lo).count();
            // Entries after `now` are rare (a decision evaluated at an
            // earlier time): check the last first.
            let end = match s.last() {
                Some(e) if e.at() <= now => s.len(),
                _ => start + s[start..].iter().take_while(|e| e.at() <= now).count(),
            };
            (start, end)
        } else {
            let start = s.partition_point(|e| e.at() < lo);
            (start, s.partition_point(|e| e.at() <= now))
        };
        s.get(start..end).unwrap_or(&[])
    }

    fn count(&self, q: &Query, now: (i64, u32)) -> i64 {
        self.window(q.series, q.window_parts, now).len() as i64
    }

    /// Distinct values in the window, counted up to `cap`: a rule asking
    /// `distinct(...) >= 10` stops at the eleventh.
    fn distinct(&self, q: &Query, now: (i64, u32), cap: i64) -> i64 {
        let mut seen = smallset::SmallSet::default();
        for e in self.window(q.series, q.window_parts, now) {
            seen.insert(e.value);
            if seen.len() as i64 >= cap {
                break;
            }
        }
        seen.len() as i64
    }

    fn since(&self, q: &Query, now: (i64, u32)) -> Option<i128> {
        let nanos = |(s, n): (i64, u32)| i128::from(s) * 1_000_000_000 + i128::from(n);
        self.window(q.series, q.window_parts, now)
            .last()
            .map(|e| nanos(now) - e.nanos())
    }

    fn latest(&self, series: u16) -> Option<u128> {
        if !self.may_have(series) {
            return None;
        }
        let r = self.range(series);
        self.entries
            .get(r.start)
            .filter(|_| !r.is_empty())
            .map(|e| e.value)
    }

    fn ever_contains(&self, series: u16, key: u128) -> bool {
        self.may_have(series)
            && self.entries[self.range(series)]
                .iter()
                .any(|e| e.value == key)
    }

    fn has_any(&self, series: u16) -> bool {
        self.may_have(series) && !self.range(series).is_empty()
    }

    /// Inserts `e` into its series' range, in time order.
    fn insert_sorted(&mut self, r: std::ops::Range<usize>, e: Entry) {
        let t = e.nanos();
        let pos = r.start + self.entries[r].partition_point(|x| x.nanos() <= t);
        self.present |= presence_bit(e.series);
        self.entries.insert(pos, e);
    }

    /// Appends to a windowed series: drops what fell out of the window and,
    /// at the cap, the oldest entry.
    fn append_window(&mut self, series: u16, e: Entry, window: i128, cap: usize) {
        let now = e.nanos();
        let r = self.range(series);
        let expired = self.entries[r.clone()].partition_point(|x| now - x.nanos() > window);
        self.entries.drain(r.start..r.start + expired);
        let mut r = r.start..r.end - expired;
        if r.len() >= cap {
            self.entries.remove(r.start);
            r = r.start..r.end - 1;
        }
        // Entries of this series only were removed, and one goes back in:
        // `present` stays exact.
        self.insert_sorted(r, e);
    }

    fn ever_insert(&mut self, series: u16, e: Entry, cap: usize) {
        let mut r = self.range(series);
        if self.entries[r.clone()].iter().any(|x| x.value == e.value) {
            return;
        }
        if r.len() >= cap {
            // The oldest is forgotten first (errs toward holding).
            self.entries.remove(r.start);
            r = r.start..r.end - 1;
        }
        self.insert_sorted(r, e);
    }

    fn set_latest(&mut self, series: u16, e: Entry) {
        let r = self.range(series);
        match self.entries.get_mut(r.start).filter(|_| !r.is_empty()) {
            Some(x) => *x = e,
            None => {
                self.present |= presence_bit(series);
                self.entries.insert(r.start, e);
            }
        }
    }

    /// Lays the entries out by a new ruleset's series: renumbers those of
    /// old series that `to` maps, drops the others, keeps the (series,
    /// time) order, trims each series to its new cap (`caps`, by new
    /// series), and recounts `present`. Returns how many entries went.
    fn renumber(&mut self, to: &[Option<u16>], caps: &[usize]) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| match to.get(usize::from(e.series)).copied().flatten() {
                Some(n) => {
                    e.series = n;
                    true
                }
                None => false,
            });
        // Each new series takes over exactly one old series, whose entries
        // were in time order: a stable sort by series keeps them so. Most
        // states are still sorted (numbers kept, or moved together).
        if !self.entries.is_sorted_by_key(|e| e.series) {
            self.entries.sort_by_key(|e| e.series);
        }
        self.trim(caps);
        let dropped = before - self.entries.len();
        if dropped > 0 {
            self.entries.shrink_to_fit();
        }
        self.recount();
        debug_assert!(self.entries.is_sorted_by_key(|e| (e.series, e.at())));
        dropped
    }

    /// Drops the oldest entries of each series past its cap (`caps`, by
    /// series; a series beyond it keeps none): what appending would have
    /// kept under these limits.
    fn trim(&mut self, caps: &[usize]) {
        let n = self.entries.len();
        let (mut read, mut write) = (0, 0);
        while read < n {
            let series = self.entries[read].series;
            let end = read + self.entries[read..].partition_point(|e| e.series == series);
            let cap = caps.get(usize::from(series)).copied().unwrap_or(0);
            // The newest `cap` of the run stay, in order.
            for i in end.saturating_sub(cap).max(read)..end {
                self.entries[write] = self.entries[i];
                write += 1;
            }
            read = end;
        }
        self.entries.truncate(write);
    }

    /// Bytes this state holds on the heap (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        if self.entries.spilled() {
            self.entries.capacity() * std::mem::size_of::<Entry>()
        } else {
            0
        }
    }
}

/// A set of u128 keys for `distinct`: on the stack (uninitialized until
/// used) up to 32 values, then a hash set, so that a long window stays
/// linear.
mod smallset {
    use hashbrown::HashSet;
    use smallvec::SmallVec;

    const INLINE_MAX: usize = 32;

    #[derive(Default)]
    pub struct SmallSet {
        inline: SmallVec<[u128; INLINE_MAX]>,
        spill: Option<HashSet<u128, super::Hasher>>,
    }
    impl SmallSet {
        pub fn insert(&mut self, v: u128) {
            if let Some(set) = &mut self.spill {
                set.insert(v);
                return;
            }
            if self.inline.contains(&v) {
                return;
            }
            if self.inline.len() < INLINE_MAX {
                self.inline.push(v);
                return;
            }
            let mut set: HashSet<u128, super::Hasher> = self.inline.iter().copied().collect();
            set.insert(v);
            self.spill = Some(set);
        }
        pub fn len(&self) -> usize {
            self.spill.as_ref().map_or(self.inline.len(), HashSet::len)
        }
    }
}

/// `now - w`, both as (seconds, nanoseconds), nanoseconds below 10^9.
fn window_start(now: (i64, u32), w: (i64, u32)) -> (i64, u32) {
    let (mut secs, nanos) = (now.0.saturating_sub(w.0), now.1);
    let nanos = if nanos >= w.1 {
        nanos - w.1
    } else {
        secs = secs.saturating_sub(1);
        nanos + 1_000_000_000 - w.1
    };
    (secs, nanos)
}

/// Whether a recording is the request's decision or its later completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// At decision (or signal) time. `completed` says whether the event is
    /// complete now: an allowed request, or any signal.
    Decided { completed: bool },
    /// A held request released by a passed verification (at its time).
    Released,
}

/// What a `device_seen` did to the line's expected SIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimSeen {
    /// Nothing to report.
    Expected,
    /// The line shows a SIM no approved request put there.
    Unapproved,
}

/// Where a list's values come from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    Full {
        list: String,
        max: usize,
    },
    WrongType {
        list: String,
        expected: &'static str,
        why: &'static str,
    },
    /// A whole list was given for a name the ruleset does not declare:
    /// no rule could read it.
    Undeclared {
        list: String,
    },
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::Full { list, max } => {
                write!(f, "list {list} is full (list_items_max = {max})")
            }
            ListError::WrongType {
                list,
                expected,
                why,
            } => write!(f, "list {list} holds {expected}: {why}"),
            ListError::Undeclared { list } => write!(
                f,
                "the ruleset declares no list {list} (declare one with `list {list}: TYPE`)"
            ),
        }
    }
}

/// A line's history and its SIM state.
#[derive(Debug, Clone, Default)]
struct LineState {
    state: EntityState,
    /// The expected IMSI ([`Imsi::key64`]; 0 while none is expected), and
    /// in bit 63 whether the line waits for the network to show a new SIM.
    /// Kept beside the entries, not among them: the network's `device_seen`,
    /// most of all traffic, reads it on every line, and here it costs no
    /// read past the hash table's bucket.
    sim: u64,
}

const SIM_WAITING: u64 = 1 << 63;

impl LineState {
    fn expected(&self) -> Option<u64> {
        Some(self.sim & !SIM_WAITING).filter(|k| *k != 0)
    }
    fn waiting(&self) -> bool {
        self.sim & SIM_WAITING != 0
    }
    fn is_empty(&self) -> bool {
        self.sim == 0 && self.state.entries.is_empty()
    }
}

/// All history the gateway keeps in memory.
#[derive(Debug, Default)]
pub struct History {
    lines: Map<u128, LineState>,
    devices: Map<u128, EntityState>,
    by_token: [Map<TokKey, EntityState>; 3],
    lists: Map<Box<str>, HashSet<u128, Hasher>>,
    /// Whether changes are noted (a service with a store): see
    /// [`History::track_changes`].
    tracking: bool,
    /// Entities whose state changed since the last `take_changes`.
    dirty: Vec<EntityId>,
    /// List values changed since the last `take_changes`, in order.
    list_changes: Vec<ListChange>,
}

/// The entity states a decision reads, looked up once per decision.
pub struct Facts<'h> {
    states: [Option<&'h EntityState>; 5],
    history: &'h History,
    rules: &'h CompiledRules,
    /// The decision's time as (seconds, nanoseconds).
    now_at: (i64, u32),
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Room for `lines` lines and `accounts` accounts without growing.
    pub fn reserve(&mut self, lines: usize, accounts: usize) {
        self.lines.reserve(lines);
        self.by_token[0].reserve(accounts);
    }

    fn token_map(&self, e: Entity) -> Option<&Map<TokKey, EntityState>> {
        match e {
            Entity::Account => Some(&self.by_token[0]),
            Entity::Agent => Some(&self.by_token[1]),
            Entity::Store => Some(&self.by_token[2]),
            _ => None,
        }
    }

    /// The state of the entity that `subject` names, if it has any history.
    pub fn state(&self, e: Entity, subject: &Subject<'_>) -> Option<&EntityState> {
        let ev = subject.event;
        match e {
            Entity::Line => self.lines.get(&ev.msisdn?.as_u128()).map(|l| &l.state),
            Entity::Device => self.devices.get(&ev.imei?.as_u128()),
            _ => {
                let tok = match e {
                    Entity::Account => ev.account.as_ref(),
                    Entity::Agent => ev.agent.as_ref(),
                    _ => ev.store.as_ref(),
                }?;
                self.token_map(e)?.get(tok.as_str())
            }
        }
    }

    /// Reads the state of every entity `ev` names (and its first entry),
    /// changing nothing; returns a value made of what it read, for the
    /// caller to consume so the reads are not optimized away. See
    /// [`crate::engine::Engine::prefetch`].
    pub fn touch(&self, ev: &Event) -> u64 {
        let first = |s: &EntityState| s.entries.first().map_or(0, |e| u64::from(e.series));
        let mut seen = 0;
        if let Some(l) = ev.msisdn.and_then(|m| self.lines.get(&m.as_u128())) {
            seen ^= l.sim ^ first(&l.state);
        }
        if let Some(d) = ev.imei.and_then(|i| self.devices.get(&i.as_u128())) {
            seen ^= first(d);
        }
        for (map, tok) in self
            .by_token
            .iter()
            .zip([&ev.account, &ev.agent, &ev.store])
        {
            if let Some(s) = tok.as_ref().and_then(|t| map.get(t.as_str())) {
                seen ^= first(s);
            }
        }
        seen
    }

    /// Looks up, once, every entity a decision reads: those with bits in
    /// `series` (the presence bits of the series read, per entity slot).
    pub fn facts<'h>(
        &'h self,
        rules: &'h CompiledRules,
        series: &[u32; 5],
        subject: &Subject<'_>,
        now: Timestamp,
    ) -> Facts<'h> {
        let mut states = [None; 5];
        for e in Entity::ALL {
            if series[slot(*e)] != 0 {
                states[slot(*e)] = self.state(*e, subject);
            }
        }
        // Read now, side by side, the first entry of every state that holds
        // a series the rules read: each is likely a cache miss, and asked for
        // together they overlap instead of stalling the rules one after
        // another. A state without such a series is not read at all.
        let mut first = 0u16;
        for (s, want) in states.iter().zip(series) {
            if let Some(s) = s.filter(|s| s.present & want != 0) {
                first ^= s.entries.first().map_or(0, |e| e.series);
            }
        }
        std::hint::black_box(first);
        Facts {
            states,
            history: self,
            rules,
            now_at: (now.unix_secs(), now.subsec_nanos()),
        }
    }

    /// Records `subject` in every series of its kind that its phase and the
    /// series' filter admit, at time `at`. Each entity is looked up once, and
    /// only when some series admits the event.
    pub fn record(
        &mut self,
        rules: &CompiledRules,
        subject: &Subject<'_>,
        phase: Phase,
        at: Timestamp,
    ) {
        let Some(series_ids) = rules.by_kind.get(subject.kind.0 as usize) else {
            return;
        };
        // Most kinds feed a few series: these stay on the stack.
        let mut admitted: SmallVec<[(u16, u128); 8]> = SmallVec::new();
        let mut needed = [false; 5];
        for &si in series_ids {
            let s: &Series = &rules.series[si as usize];
            let admit = match phase {
                Phase::Decided { completed } => !s.completed || completed,
                Phase::Released => s.completed,
            };
            if !admit {
                continue;
            }
            if let Some(f) = &s.filter
                && !truth(f, subject, &rules.queries, &NoHistory)
            {
                continue;
            }
            let value = match s.projection {
                Some(a) => match key_of(subject.get(a)) {
                    Some(k) => k,
                    // Nothing to project: the event adds no value to this series.
                    None => continue,
                },
                None => u128::from(subject.kind.0),
            };
            admitted.push((si, value));
            needed[slot(s.entity)] = true;
        }
        if admitted.is_empty() {
            return;
        }
        if self.tracking {
            for (slot, n) in needed.iter().enumerate() {
                if *n {
                    self.note(subject.event, slot);
                }
            }
        }
        let mut states = self.states_mut(subject, needed);
        for &(si, value) in &admitted {
            let s = &rules.series[si as usize];
            if let Some(state) = states[slot(s.entity)].as_deref_mut() {
                append(state, s, si, value, at, &rules.limits);
            }
        }
    }

    /// Mutable states of the entities `subject` names, created on first
    /// sight, for the slots marked in `needed`.
    fn states_mut(
        &mut self,
        subject: &Subject<'_>,
        needed: [bool; 5],
    ) -> [Option<&mut EntityState>; 5] {
        let ev = subject.event;
        let (lines, devices) = (&mut self.lines, &mut self.devices);
        let [accounts, agents, stores] = &mut self.by_token;
        let want = |e: Entity| needed[slot(e)];
        [
            ev.msisdn
                .filter(|_| want(Entity::Line))
                .map(|m| &mut lines.entry(m.as_u128()).or_default().state),
            ev.imei
                .filter(|_| want(Entity::Device))
                .map(|m| devices.entry(m.as_u128()).or_default()),
            token_state(
                accounts,
                ev.account.as_ref().filter(|_| want(Entity::Account)),
            ),
            token_state(agents, ev.agent.as_ref().filter(|_| want(Entity::Agent))),
            token_state(stores, ev.store.as_ref().filter(|_| want(Entity::Store))),
        ]
    }

    /// The network saw the line on `imsi` in `imei`: tells whether the
    /// IMEI is new to a line seen before (for `new_device`, when a rule reads
    /// it) and whether the SIM is one no approved request put there. Keeps
    /// the line's expected IMSI. One lookup of the line.
    pub fn device_seen(
        &mut self,
        rules: &CompiledRules,
        msisdn: Msisdn,
        imsi: Imsi,
        imei: Imei,
    ) -> (Option<bool>, SimSeen) {
        self.note_line(msisdn);
        let line = self.lines.entry(msisdn.as_u128()).or_default();
        let state = &line.state;
        let new_device = rules
            .devices
            .map(|series| state.has_any(series) && !state.ever_contains(series, imei.as_u128()));
        (new_device, sim_seen(line, imsi))
    }

    /// A completed SIM change: the line now expects `imsi`, or, without one,
    /// waits for the network to show the new SIM.
    pub fn sim_change_completed(&mut self, msisdn: Msisdn, imsi: Option<Imsi>) {
        self.note_line(msisdn);
        let line = self.lines.entry(msisdn.as_u128()).or_default();
        line.sim = match imsi {
            Some(i) => i.key64(),
            None => line.sim | SIM_WAITING,
        };
    }

    /// Adds a value to a list, parsed as the list's declared type.
    pub fn list_add(
        &mut self,
        rules: &CompiledRules,
        list: &str,
        value: &str,
    ) -> Result<(), ListError> {
        let key = list_key(rules, list, value)?;
        let max = rules.limits.list_items_max;
        let set = self.lists.entry(list.into()).or_default();
        if set.len() >= max && !set.contains(&key) {
            return Err(ListError::Full {
                list: list.to_string(),
                max,
            });
        }
        set.insert(key);
        self.note_list(list, key, true);
        Ok(())
    }

    pub fn list_remove(
        &mut self,
        rules: &CompiledRules,
        list: &str,
        value: &str,
    ) -> Result<(), ListError> {
        let key = list_key(rules, list, value)?;
        if let Some(set) = self.lists.get_mut(list) {
            set.remove(&key);
        }
        self.note_list(list, key, false);
        Ok(())
    }

    /// Lays all history out by the series of `new`, given for each series
    /// of the ruleset that recorded it the new series that records the same
    /// ([`crate::rules::SeriesMap::old_to_new`]): kept entries take their
    /// new numbers, entries of series `new` lacks are dropped, each series
    /// keeps at most `new`'s cap, and entities left with nothing go. Walks
    /// every entity once: a reload's cost, paid only when series numbers
    /// change (see [`crate::engine::Engine::reload`]).
    pub fn renumber(&mut self, old_to_new: &[Option<u16>], new: &CompiledRules) -> Renumbered {
        self.renumber_capped(old_to_new, &series_caps(new))
    }

    /// [`History::renumber`], given the new series' caps.
    fn renumber_capped(&mut self, old_to_new: &[Option<u16>], caps: &[usize]) -> Renumbered {
        let mut done = Renumbered::default();
        let mut walk = |st: &mut EntityState| {
            done.entities += 1;
            done.entries_dropped += st.renumber(old_to_new, caps);
        };
        self.lines.retain(|_, line| {
            walk(&mut line.state);
            // The SIM state has no series: a line keeps it.
            !line.is_empty()
        });
        self.devices.retain(|_, st| {
            walk(st);
            !st.entries.is_empty()
        });
        for m in &mut self.by_token {
            m.retain(|_, st| {
                walk(st);
                !st.entries.is_empty()
            });
        }
        done
    }

    /// Values the list `name` holds now.
    pub fn list_len(&self, name: &str) -> usize {
        self.lists.get(name).map_or(0, HashSet::len)
    }

    /// Names of the lists held now.
    pub fn list_names(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(|k| &**k)
    }

    /// Puts a staged list in place of the list's whole contents.
    pub fn replace_list(&mut self, staged: StagedList) {
        self.lists.insert(staged.name, staged.keys);
    }

    /// Drops every list `rules` does not declare: no rule can read it.
    /// Returns how many went.
    pub fn drop_undeclared_lists(&mut self, rules: &CompiledRules) -> usize {
        let before = self.lists.len();
        self.lists
            .retain(|name, _| rules.lists.iter().any(|d| *d.name == **name));
        before - self.lists.len()
    }

    /// Drops windowed history older than its series' window, and entities
    /// left with nothing. State without a window is never dropped by age.
    pub fn prune(&mut self, rules: &CompiledRules, now: Timestamp) {
        self.prune_part(rules, now, 0, 1);
    }

    /// [`History::prune`] for one part of the entities: those whose key
    /// falls in `part` of `parts` (a cheap split of the keys), so that a
    /// service prunes a large history a slice at a time, between requests.
    pub fn prune_part(&mut self, rules: &CompiledRules, now: Timestamp, part: usize, parts: usize) {
        let parts = parts.max(1);
        let now = now.as_nanos();
        let prune = |st: &mut EntityState| prune_state(st, rules, now);
        let num = |k: u128| (k as usize) % parts == part;
        let tok = |k: &TokKey| {
            k.as_str().bytes().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(b))
            }) % parts
                == part
        };
        self.lines.retain(|k, line| {
            if num(*k) {
                prune(&mut line.state);
            }
            // The SIM state has no window: a line keeps it however old.
            !line.is_empty()
        });
        self.devices.retain(|k, st| {
            if num(*k) {
                prune(st);
            }
            !st.entries.is_empty()
        });
        for m in &mut self.by_token {
            m.retain(|k, st| {
                if tok(k) {
                    prune(st);
                }
                !st.entries.is_empty()
            });
        }
    }

    /// Bytes the history holds: hash tables at their capacity (keys, states,
    /// control bytes), spilled entry vectors, token keys and lists. An
    /// accounting of what this module owns, beside the process's RSS.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let table = |cap: usize, slot: usize| cap * (slot + 1);
        let mut total = 0;
        total += table(self.lines.capacity(), size_of::<(u128, LineState)>());
        total += self
            .lines
            .values()
            .map(|l| l.state.heap_bytes())
            .sum::<usize>();
        total += table(self.devices.capacity(), size_of::<(u128, EntityState)>());
        total += self
            .devices
            .values()
            .map(EntityState::heap_bytes)
            .sum::<usize>();
        for m in &self.by_token {
            total += table(m.capacity(), size_of::<(TokKey, EntityState)>());
            total += m
                .iter()
                .map(|(k, v)| k.heap_bytes() + v.heap_bytes())
                .sum::<usize>();
        }
        for (name, set) in &self.lists {
            total += name.len() + table(set.capacity(), size_of::<u128>());
        }
        total
    }

    /// Entities with history, per kind (line, device, account, agent, store).
    pub fn entity_counts(&self) -> [usize; 5] {
        [
            self.lines.len(),
            self.devices.len(),
            self.by_token[0].len(),
            self.by_token[1].len(),
            self.by_token[2].len(),
        ]
    }
}

fn append(
    state: &mut EntityState,
    s: &Series,
    si: u16,
    value: u128,
    at: Timestamp,
    limits: &crate::rules::Limits,
) {
    let entry = Entry::new(si, value, at);
    match s.keep {
        Keep::Window(w) => state.append_window(si, entry, w, limits.series_items_max),
        Keep::Ever => state.ever_insert(si, entry, limits.ever_items_max),
        Keep::Latest => state.set_latest(si, entry),
    }
}

/// Drops the entries of `st` past their series' window at `now` (in
/// nanoseconds), and those of series `rules` lacks; keeps the rest.
/// Returns whether anything went.
fn prune_state(st: &mut EntityState, rules: &CompiledRules, now: i128) -> bool {
    let keep = |e: &Entry| match rules.series.get(e.series as usize).map(|s| s.keep) {
        Some(Keep::Window(w)) => now - e.nanos() <= w,
        Some(_) => true,
        // No series of the ruleset: none can read it. (A reload lays
        // history out by the new ruleset's series, so there are none.)
        None => false,
    };
    let before = st.entries.len();
    st.entries.retain(|e| keep(e));
    if st.entries.len() == before {
        return false;
    }
    st.entries.shrink_to_fit();
    st.recount();
    true
}

/// The most entries one entity keeps in each series of `rules`.
pub fn series_caps(rules: &CompiledRules) -> Vec<usize> {
    rules
        .series
        .iter()
        .map(|s| series_cap(s.keep, &rules.limits))
        .collect()
}

/// The most entries one entity keeps in a series kept as `keep`.
fn series_cap(keep: Keep, limits: &crate::rules::Limits) -> usize {
    match keep {
        Keep::Window(_) => limits.series_items_max,
        Keep::Ever => limits.ever_items_max,
        Keep::Latest => 1,
    }
}

/// What [`History::renumber`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renumbered {
    /// Entity states walked.
    pub entities: usize,
    /// Entries dropped: of series the new ruleset lacks, or past its caps.
    pub entries_dropped: usize,
}

/// A list's whole new contents, each value parsed as the type a ruleset
/// declares for it, not yet in place: a reload stages every list before it
/// changes anything, so one bad value changes nothing
/// ([`History::replace_list`] puts one in place).
#[derive(Debug)]
pub struct StagedList {
    name: Box<str>,
    keys: HashSet<u128, Hasher>,
}

impl StagedList {
    /// An empty list `name`, which `rules` must declare.
    pub fn new(rules: &CompiledRules, name: &str) -> Result<StagedList, ListError> {
        if !rules.lists.iter().any(|d| d.name == name) {
            return Err(ListError::Undeclared {
                list: name.to_string(),
            });
        }
        Ok(StagedList {
            name: name.into(),
            keys: HashSet::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values staged (a value given twice counts once).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds `value`, parsed as the list's declared type in `rules` (the
    /// ruleset it was staged for), within `list_items_max`.
    pub fn push(&mut self, rules: &CompiledRules, value: &str) -> Result<(), ListError> {
        let key = list_key(rules, &self.name, value)?;
        let max = rules.limits.list_items_max;
        if self.keys.len() >= max && !self.keys.contains(&key) {
            return Err(ListError::Full {
                list: self.name.to_string(),
                max,
            });
        }
        self.keys.insert(key);
        Ok(())
    }
}

/// Keeps the line's expected IMSI and tells whether `imsi` is a SIM change
/// that no approved request explains.
fn sim_seen(line: &mut LineState, imsi: Imsi) -> SimSeen {
    let key = imsi.key64();
    let expected = line.expected();
    if line.waiting() {
        // The first SIM other than the one expected ends the wait.
        if expected != Some(key) {
            line.sim = key;
        }
        return SimSeen::Expected;
    }
    match expected {
        None => {
            line.sim = key;
            SimSeen::Expected
        }
        Some(k) if k == key => SimSeen::Expected,
        Some(_) => {
            line.sim = key;
            SimSeen::Unapproved
        }
    }
}

/// The state of a token-named entity, created on first sight.
fn token_state<'m>(
    map: &'m mut Map<TokKey, EntityState>,
    t: Option<&Token>,
) -> Option<&'m mut EntityState> {
    // One lookup; a long key is allocated only on first sight.
    Some(map.entry_ref(t?.as_str()).or_default())
}

/// A token as a hash-table key: short tokens (most account, agent and store
/// ids) sit inside the table's bucket, so comparing a key costs no pointer
/// chase to another cache line. Hashes and compares exactly like the `str`.
#[derive(Debug, Clone)]
enum TokKey {
    Inline { len: u8, bytes: [u8; TOKKEY_INLINE] },
    Heap(Box<str>),
}

const TOKKEY_INLINE: usize = 22;

impl TokKey {
    fn as_str(&self) -> &str {
        match self {
            // Invariant: inline bytes are copied from a `str` at a char
            // boundary (tokens are ASCII), so they are UTF-8.
            TokKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            TokKey::Heap(s) => s,
        }
    }
    fn heap_bytes(&self) -> usize {
        match self {
            TokKey::Inline { .. } => 0,
            TokKey::Heap(s) => s.len(),
        }
    }
}

impl From<&str> for TokKey {
    fn from(s: &str) -> TokKey {
        if s.len() <= TOKKEY_INLINE {
            let mut bytes = [0u8; TOKKEY_INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            TokKey::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            TokKey::Heap(s.into())
        }
    }
}

impl From<&&str> for TokKey {
    fn from(s: &&str) -> TokKey {
        TokKey::from(*s)
    }
}

impl PartialEq for TokKey {
    fn eq(&self, o: &TokKey) -> bool {
        self.as_str() == o.as_str()
    }
}
impl Eq for TokKey {}

impl std::hash::Hash for TokKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl hashbrown::Equivalent<TokKey> for str {
    fn equivalent(&self, key: &TokKey) -> bool {
        // Bytes, not `as_str`: a lookup compares without re-checking UTF-8.
        match key {
            TokKey::Inline { len, bytes } => self.as_bytes() == &bytes[..usize::from(*len)],
            TokKey::Heap(s) => self == &**s,
        }
    }
}

/// The type of the values list `name` holds under `rules`: its declared
/// type, or a token for a list no rule declares (any value, as given).
pub fn list_ty(rules: &CompiledRules, name: &str) -> crate::rules::Ty {
    rules
        .lists
        .iter()
        .find(|d| d.name == name)
        .map_or(crate::rules::Ty::Token, |d| d.ty)
}

fn list_key(rules: &CompiledRules, list: &str, value: &str) -> Result<u128, ListError> {
    use crate::contract::ident::{Eid, Iccid};
    use crate::rules::Ty;
    let ty = list_ty(rules, list);
    let wrong = |why: &'static str| ListError::WrongType {
        list: list.to_string(),
        expected: ty.name(),
        why,
    };
    let id = match ty {
        Ty::Msisdn => Msisdn::parse(value).map(Msisdn::as_u128),
        Ty::Imsi => Imsi::parse(value).map(Imsi::as_u128),
        Ty::Imei => Imei::parse(value).map(Imei::as_u128),
        Ty::Iccid => Iccid::parse(value).map(Iccid::as_u128),
        Ty::Eid => Eid::parse(value).map(Eid::as_u128),
        // Token lists (and lists no rule declares) keep any value as given.
        _ => return key_of(Val::Str(value)).ok_or(wrong("empty value")),
    };
    id.map_err(|e| wrong(e.0))
}

/// Filters read only the recorded event; they have no history to look up.
struct NoHistory;

impl crate::rules::Lookup for NoHistory {
    fn count(&self, _: &Query) -> i64 {
        0
    }
    fn distinct(&self, _: &Query, _: i64) -> i64 {
        0
    }
    fn exists(&self, _: &Query) -> bool {
        false
    }
    fn since(&self, _: &Query) -> Option<i128> {
        None
    }
    fn latest(&self, _: &Query) -> Option<u128> {
        None
    }
    fn ever_contains(&self, _: &Query, _: u128) -> bool {
        false
    }
    fn list_contains(&self, _: u16, _: Val<'_>) -> bool {
        false
    }
}

impl Facts<'_> {
    /// The series bits the entity in `slot` holds (none when it has no
    /// history, or was not looked up).
    pub fn present(&self, slot: usize) -> u32 {
        self.states
            .get(slot)
            .copied()
            .flatten()
            .map_or(0, |s| s.present)
    }
}

impl crate::rules::Lookup for Facts<'_> {
    fn count(&self, q: &Query) -> i64 {
        self.states[slot(q.entity)].map_or(0, |s| s.count(q, self.now_at))
    }
    fn distinct(&self, q: &Query, cap: i64) -> i64 {
        self.states[slot(q.entity)].map_or(0, |s| s.distinct(q, self.now_at, cap))
    }
    fn exists(&self, q: &Query) -> bool {
        self.states[slot(q.entity)]
            .is_some_and(|s| !s.window(q.series, q.window_parts, self.now_at).is_empty())
    }
    fn since(&self, q: &Query) -> Option<i128> {
        self.states[slot(q.entity)]?.since(q, self.now_at)
    }
    fn latest(&self, q: &Query) -> Option<u128> {
        self.states[slot(q.entity)]?.latest(q.series)
    }
    fn ever_contains(&self, q: &Query, key: u128) -> bool {
        self.states[slot(q.entity)].is_some_and(|s| s.ever_contains(q.series, key))
    }
    fn list_contains(&self, list: u16, v: Val<'_>) -> bool {
        let Some(decl) = self.rules.lists.get(list as usize) else {
            return false;
        };
        let Some(key) = key_of(v) else {
            return false;
        };
        self.history
            .lists
            .get(decl.name.as_str())
            .is_some_and(|s| s.contains(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `window_start` is `now - w` to the nanosecond, borrowing a second
    /// when the nanoseconds underflow, at either side of zero.
    #[test]
    fn window_start_subtracts_exactly() {
        let ns = |(s, n): (i64, u32)| i128::from(s) * 1_000_000_000 + i128::from(n);
        let cases = [
            ((100, 5), (10, 3)),
            ((100, 5), (10, 7)),
            ((0, 0), (0, 1)),
            ((-5, 999_999_999), (1, 999_999_999)),
            ((1_767_225_600, 0), (86_400, 0)),
            ((1_767_225_600, 1), (34_560_000, 2)),
        ];
        for (now, w) in cases {
            let lo = window_start(now, w);
            assert!(lo.1 < 1_000_000_000, "{now:?} - {w:?}");
            assert_eq!(ns(lo), ns(now) - ns(w), "{now:?} - {w:?}");
        }
    }

    fn entry(series: u16, secs: i64) -> Entry {
        Entry {
            value: u128::from(series) << 64 | secs as u128,
            secs,
            nanos: 0,
            series,
        }
    }

    fn state(entries: &[Entry]) -> EntityState {
        let mut st = EntityState {
            entries: entries.iter().copied().collect(),
            present: 0,
        };
        st.recount();
        st
    }

    /// Renumbering gives kept series their new numbers with their entries
    /// in time order, drops the series the new ruleset lacks and what is
    /// past a cap (the oldest first), and recounts the mask.
    #[test]
    fn renumbering_moves_drops_and_trims() {
        let mut st = state(&[
            entry(0, 1),
            entry(0, 2),
            entry(0, 3),
            entry(1, 5),
            entry(2, 4),
            entry(2, 6),
        ]);
        let to = [Some(2), None, Some(0)];
        let dropped = st.renumber(&to, &[5, 5, 2]);
        assert_eq!(dropped, 2);
        let moved = |series: u16, secs: i64| Entry {
            series,
            ..entry(if series == 0 { 2 } else { 0 }, secs)
        };
        assert_eq!(
            st.entries.as_slice(),
            [moved(0, 4), moved(0, 6), moved(2, 2), moved(2, 3)]
        );
        assert_eq!(st.present, presence_bit(0) | presence_bit(2));
        assert_eq!(st.range(2), 2..4);
        // A series numbered past the caps keeps nothing.
        let mut st = state(&[entry(0, 1), entry(40, 2)]);
        assert_eq!(st.renumber(&[Some(0); 41], &[1]), 1);
        assert_eq!((st.entries.len(), st.present), (1, presence_bit(0)));
    }

    /// Entities left with nothing go; a line keeps its SIM state.
    #[test]
    fn renumbering_drops_emptied_entities_but_not_sim_state() {
        let mut h = History::new();
        let line = |entries: &[Entry], sim: u64| LineState {
            state: state(entries),
            sim,
        };
        h.lines.insert(1, line(&[entry(0, 1)], 0));
        h.lines.insert(2, line(&[entry(0, 1)], 7));
        h.lines.insert(3, line(&[entry(0, 1), entry(1, 2)], 0));
        h.devices.insert(4, state(&[entry(0, 1)]));
        let done = h.renumber_capped(&[None, Some(0)], &[8]);
        assert_eq!(
            done,
            Renumbered {
                entities: 4,
                entries_dropped: 4
            }
        );
        assert_eq!(h.entity_counts(), [2, 0, 0, 0, 0]);
        assert_eq!(h.lines[&2].sim, 7);
        assert_eq!(
            h.lines[&3].state.entries.as_slice(),
            [Entry {
                series: 0,
                ..entry(1, 2)
            }]
        );
    }
}
