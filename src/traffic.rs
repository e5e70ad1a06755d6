//! Deterministic synthetic carrier traffic in contract v1 (`portcullis gen`).
//!
//! A population of subscribers (a line, an account, a SIM and a device each)
//! produces what a carrier's back office and network emit: the network
//! seeing lines on their SIM and device, device upgrades (some of them to an
//! eSIM on the new phone), in-store and remote SIM swaps, eSIM transfers,
//! port-outs, account changes, failed PIN attempts, locks and unlocks (a
//! customer who locked a line lifts the lock before asking to move it), and
//! now and then a fraud report. Mixed in are attack stories, each a short
//! sequence of events over minutes to hours that a fraud team would
//! recognise (see [`ATTACK_STORIES`]), and every request carries a
//! [`Label`]: fraud or legit, and the story it belongs to. Benchmarks,
//! tests, backtests and the sample trace use it.
//!
//! What makes the labels worth having is that the outcome each attack story
//! is promised by the default ruleset holds by construction, not by luck: a
//! story picks a line no other story is using, reserves it until its last
//! request, sets up the preconditions itself (the line is seen on its SIM
//! before an unapproved SIM shows up; the IMEI is blocked before the thief
//! names it; the lock is placed before the request), and ordinary traffic
//! stays off reserved lines. Attackers' SIMs, devices and eUICCs come from
//! identifier ranges that legitimate traffic never uses, so "a device the
//! account never moved to" is true of every attacker's EID.
//!
//! The same seed and configuration give the same bytes. Events are written
//! in time order: a story's later steps wait in a queue ordered by when they
//! are due, and each event takes the clock of the moment it is written.
//!
//! Speed: the write path never builds an [`Event`]. Each event is first a
//! draft (numbers only, no allocation) which is written straight to JSON;
//! [`Generator`]'s iterator builds the typed event from the same draft, and
//! a test checks that both give the same bytes.

use crate::contract::ident::{Eid, Iccid, Imei, Imsi, Msisdn, Token};
use crate::contract::{BLOCKED_IMEI_LIST, Change, Channel, Event, Kind, Scope, Timestamp};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub seed: u64,
    /// Subscribers in the population (clamped to 1..=[`SUBSCRIBERS_MAX`]).
    pub subscribers: u32,
    /// Unix seconds of the first event.
    pub start_unix: i64,
    /// Mean milliseconds between events.
    pub mean_gap_ms: u64,
    /// Attack stories begun per 10,000 events.
    pub attacks_per_10k: u32,
    /// The same rate in parts per billion; when set it takes the place of
    /// `attacks_per_10k`. `gen --attacks RATE` sets it, since a share such as
    /// 0.00025 has no exact count per 10,000.
    pub attacks_per_billion: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            subscribers: 10_000,
            // 2026-01-01T00:00:00Z
            start_unix: 1_767_225_600,
            mean_gap_ms: 2_000,
            attacks_per_10k: 20,
            attacks_per_billion: None,
        }
    }
}

impl Config {
    /// The chance that an event begins an attack story, in parts per billion.
    pub fn attack_ppb(&self) -> u64 {
        self.attacks_per_billion
            .map_or(u64::from(self.attacks_per_10k) * 100_000, u64::from)
    }
}

/// The largest share of events `gen --attacks` accepts: past it, stories
/// would crowd the population (each reserves its line for up to a day) and
/// the trace would stop looking like a carrier's.
pub const ATTACKS_MAX: f64 = 0.05;

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
    /// True with probability per_mille / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

// ---------------------------------------------------------------------------
// Identifier layouts. Each is computed into a fixed array of ASCII digits;
// the typed constructors below parse that text and the JSON writer copies
// it, so there is one definition of every layout.

/// The largest population the identifier layouts below have room for.
pub const SUBSCRIBERS_MAX: u32 = 10_000_000;

/// Writes the low `dst.len()` decimal digits of `v` into `dst`, zero-padded.
fn fill(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `v` in decimal.
fn put_dec(out: &mut Vec<u8>, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

/// The Luhn check digit (as ASCII) of a string of digits.
fn luhn(body: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, c) in body.iter().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// `+4470` and at least eight digits of `i`: (bytes, length).
fn msisdn_text(i: u32) -> ([u8; 15], usize) {
    let mut b = [0u8; 15];
    b[..5].copy_from_slice(b"+4470");
    let width = if i < 100_000_000 {
        8
    } else if i < 1_000_000_000 {
        9
    } else {
        10
    };
    fill(&mut b[5..5 + width], u64::from(i));
    (b, 5 + width)
}
fn imsi_text(i: u32, generation: u32) -> [u8; 15] {
    let mut b = [0u8; 15];
    b[..5].copy_from_slice(b"23415");
    fill(&mut b[5..8], u64::from(generation % 1000));
    fill(&mut b[8..], u64::from(i % SUBSCRIBERS_MAX));
    b
}
fn imei_text(i: u32, generation: u32) -> [u8; 15] {
    let mut b = [0u8; 15];
    fill(&mut b[..8], u64::from(35_693_803 + generation % 50));
    fill(&mut b[8..14], u64::from(i % 1_000_000));
    b[14] = luhn(&b[..14]);
    b
}
fn iccid_text(i: u32, generation: u32) -> [u8; 19] {
    let mut b = [0u8; 19];
    b[..4].copy_from_slice(b"8944");
    fill(&mut b[4..7], u64::from(generation % 1000));
    fill(&mut b[7..18], u64::from(i));
    b[18] = luhn(&b[..18]);
    b
}
fn eid_text(i: u32, generation: u32) -> [u8; 32] {
    let g = u128::from(generation % 1_000_000);
    let body = (89_049_032u128 * 1_000_000 + g) * 10u128.pow(16) + u128::from(i);
    // ISO/IEC 7064 MOD 97-10: the two digits that make the whole 1 mod 97.
    let check = 98 - (body * 100) % 97;
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(b"89049032");
    fill(&mut b[8..14], g as u64);
    fill(&mut b[14..30], u64::from(i));
    fill(&mut b[30..], check as u64);
    b
}
fn text(b: &[u8]) -> &str {
    // The layouts above write ASCII digits and '+' only.
    std::str::from_utf8(b).unwrap_or("")
}

// Subscriber `i` is below SUBSCRIBERS_MAX (Generator::new clamps), so every
// layout has its exact digit count.

pub fn msisdn(i: u32) -> Msisdn {
    let (b, len) = msisdn_text(i);
    // Invariant: "+4470" and 8 to 10 digits is a valid E.164 number.
    Msisdn::parse(text(&b[..len])).expect("generated msisdn")
}
pub fn imsi(i: u32, generation: u32) -> Imsi {
    // Invariant: 5 + 3 + 7 digits is a 15-digit IMSI.
    Imsi::parse(text(&imsi_text(i, generation))).expect("generated imsi")
}
pub fn imei(i: u32, generation: u32) -> Imei {
    // Invariant: 8 + 6 digits and a Luhn digit is a valid IMEI.
    Imei::parse(text(&imei_text(i, generation))).expect("generated imei")
}
pub fn iccid(i: u32, generation: u32) -> Iccid {
    // Invariant: "8944" + 3 + 11 digits and a Luhn digit is a valid ICCID.
    Iccid::parse(text(&iccid_text(i, generation))).expect("generated iccid")
}
pub fn eid(i: u32, generation: u32) -> Eid {
    // Invariant: 30 digits and their ISO 7064 MOD 97-10 check digits.
    Eid::parse(text(&eid_text(i, generation))).expect("generated eid")
}
pub fn account(i: u32) -> Token {
    token("acct-", u64::from(i))
}
fn token(prefix: &str, i: u64) -> Token {
    let mut b = Vec::with_capacity(prefix.len() + 20);
    b.extend_from_slice(prefix.as_bytes());
    put_dec(&mut b, i);
    // Invariant: callers pass short token-safe prefixes; digits are token-safe.
    Token::parse(text(&b)).expect("generated token")
}

// Legitimate traffic and attackers draw identifiers from disjoint ranges, so
// an attacker's SIM, device or eUICC is never one a customer had.

/// Legitimate SIM generations are 0..900; attackers' SIMs use 900..1000.
const LEGIT_SIMS: u16 = 900;
/// Legitimate device generations (type allocation codes) are 0..45;
/// attackers' devices use 45..50.
const LEGIT_DEVICES: u16 = 45;
/// Attackers' eUICCs use generations from here (legitimate ones stay below
/// 65,536, the width of [`Sub::esim`]).
const ATTACKER_EIDS: u32 = 900_000;

// ---------------------------------------------------------------------------
// Labels and stories.

/// What a request was, as the generator knows it: the ground truth a
/// backtest scores rules against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// An attacker made the request.
    pub fraud: bool,
    /// The story it belongs to: one of [`ATTACK_STORIES`] or [`LEGIT_STORIES`].
    pub story: &'static str,
    /// The request of its story that the default ruleset promises to stop
    /// (hold or deny); see [`ATTACK_STORIES`]. Not written to labels files.
    pub payload: bool,
}

impl Label {
    /// The word a labels file uses.
    pub fn as_str(&self) -> &'static str {
        if self.fraud { "fraud" } else { "legit" }
    }
}

pub const PIN_BRUTE_FORCE: &str = "pin_brute_force";
pub const CREDENTIAL_CHANGE_THEN_SIM_SWAP: &str = "credential_change_then_sim_swap";
pub const INSIDER_AGENT_BURST: &str = "insider_agent_burst";
pub const STOLEN_DEVICE: &str = "stolen_device";
pub const UNAPPROVED_SIM_CHANGE: &str = "unapproved_sim_change";
pub const REMOTE_ESIM_TO_NEW_DEVICE: &str = "remote_esim_to_new_device";
pub const LOCKED_LINE: &str = "locked_line";
pub const UNLOCK_THEN_PORT: &str = "unlock_then_port";
pub const UNLOCK_THEN_SIM_SWAP: &str = "unlock_then_sim_swap";

/// The attack stories. Each names a payload: the request of the story
/// that the default ruleset promises to stop (hold or deny), by the rule
/// written for that pattern. (Which rule, by name, is in
/// `tests/it/generate.rs`, which checks every promise: no rule of the
/// default set is named in `src/`.)
///
/// - `pin_brute_force`: port-outs with wrong PINs a few seconds to a minute
///   apart, then one with the right PIN. Payloads: every one; the wrong
///   ones are denied for the PIN, the last is held for the failures before
///   it (at least three in the hour).
/// - `credential_change_then_sim_swap`: an email, password, contact or PIN
///   change, then minutes to hours later a SIM swap to the attacker's SIM.
///   Payload: the swap, held for the recent credential change, when that
///   change was allowed.
/// - `insider_agent_burst`: one agent swaps 12 to 16 different lines to
///   SIMs or eSIMs they hold, within the hour. Payloads: the requests after
///   the agent's tenth line, held for the agent's velocity.
/// - `stolen_device`: a customer's phone is stolen and its IMEI blocked;
///   the customer moves to a new phone, and the thief asks for a SIM swap
///   naming the stolen one. Payload: the swap, denied for the blocked IMEI.
/// - `unapproved_sim_change`: the network sees the line on its SIM, then on
///   a SIM no request put there, then the number is asked to port out.
///   Payload: the port-out, held for the SIM change before it.
/// - `remote_esim_to_new_device`: a line seen on its device is moved by an
///   online, app or care eSIM transfer to the attacker's eUICC. Payload: the
///   transfer, held for going remotely to an eUICC the account never used.
/// - `locked_line`: the customer locks the line against port-outs or SIM
///   changes; then such a request comes. Payload: it, denied for the lock.
/// - `unlock_then_port`, `unlock_then_sim_swap`: the lock is lifted (an
///   agent talked into it), and within the day a port-out (or SIM swap)
///   follows. Payload: it, held for the recent unlock.
///
/// Every request of a story is labeled fraud; its signals carry no id and
/// so no label.
pub const ATTACK_STORIES: [&str; 9] = [
    PIN_BRUTE_FORCE,
    CREDENTIAL_CHANGE_THEN_SIM_SWAP,
    INSIDER_AGENT_BURST,
    STOLEN_DEVICE,
    UNAPPROVED_SIM_CHANGE,
    REMOTE_ESIM_TO_NEW_DEVICE,
    LOCKED_LINE,
    UNLOCK_THEN_PORT,
    UNLOCK_THEN_SIM_SWAP,
];

pub const ORDINARY: &str = "ordinary";
pub const DEVICE_UPGRADE: &str = "device_upgrade";
pub const IN_STORE_SWAP: &str = "in_store_swap";

/// The stories of legitimate requests: `device_upgrade` (an eSIM transfer
/// to a customer's new phone), `in_store_swap` (a SIM swap at a store's
/// counter, the customer's phone in hand), and `ordinary` (everything else).
pub const LEGIT_STORIES: [&str; 3] = [ORDINARY, DEVICE_UPGRADE, IN_STORE_SWAP];

const fn fraud(story: &'static str, payload: bool) -> Option<Label> {
    Some(Label {
        fraud: true,
        story,
        payload,
    })
}
const fn legit(story: &'static str) -> Option<Label> {
    Some(Label {
        fraud: false,
        story,
        payload: false,
    })
}

// ---------------------------------------------------------------------------
// Drafts: events as numbers.

/// An identifier of the layouts above: index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ident {
    i: u32,
    g: u32,
}

const fn ident(i: u32, g: u32) -> Option<Ident> {
    Some(Ident { i, g })
}

/// An event before it is text or an [`Event`]: what the generator decided,
/// as numbers, so that writing it allocates nothing. `sub` names the line
/// (`msisdn`) and the account when those are set; a list change keeps it
/// too, for the reservation of its story's line.
#[derive(Debug, Clone, Copy)]
struct Draft {
    kind: Kind,
    sub: u32,
    msisdn: bool,
    account: bool,
    iccid: Option<Ident>,
    eid: Option<Ident>,
    imsi: Option<Ident>,
    imei: Option<Ident>,
    recipient: Option<u8>,
    channel: Option<Channel>,
    agent: Option<u16>,
    store: Option<u16>,
    change: Option<Change>,
    scope: Option<Scope>,
    pin_ok: Option<bool>,
    /// A `list_add` to `blocked_imei` of this IMEI.
    blocked: Option<Ident>,
    /// Every request has one (ordinary and legit unless a story says
    /// otherwise); signals have none.
    label: Option<Label>,
}

impl Draft {
    fn new(kind: Kind, sub: u32) -> Draft {
        let (msisdn, account) = match kind {
            Kind::AuthFailure | Kind::FraudReport | Kind::AccountChange => (false, true),
            Kind::DeviceSeen => (true, false),
            Kind::ListAdd | Kind::ListRemove | Kind::Verification => (false, false),
            Kind::SimSwap | Kind::EsimTransfer | Kind::PortOut | Kind::Lock | Kind::Unlock => {
                (true, true)
            }
        };
        Draft {
            kind,
            sub,
            msisdn,
            account,
            iccid: None,
            eid: None,
            imsi: None,
            imei: None,
            recipient: None,
            channel: None,
            agent: None,
            store: None,
            change: None,
            scope: None,
            pin_ok: None,
            blocked: None,
            label: if kind.is_decision() {
                legit(ORDINARY)
            } else {
                None
            },
        }
    }

    /// The typed event: what [`Generator`]'s iterator yields. `id` 0 is none.
    fn event(&self, seed: u64, id: u64, at: Timestamp) -> Event {
        let mut e = Event::empty(self.kind);
        if id != 0 {
            e.id = Some(format!("g{seed}-{id}").into());
        }
        e.at = Some(at);
        if self.msisdn {
            e.msisdn = Some(msisdn(self.sub));
        }
        if self.account {
            e.account = Some(account(self.sub));
        }
        e.iccid = self.iccid.map(|x| iccid(x.i, x.g));
        e.eid = self.eid.map(|x| eid(x.i, x.g));
        e.imsi = self.imsi.map(|x| imsi(x.i, x.g));
        e.imei = self.imei.map(|x| imei(x.i, x.g));
        e.recipient = self.recipient.map(|n| token("carrier", n.into()));
        e.channel = self.channel;
        e.agent = self.agent.map(|n| token("ag", n.into()));
        e.store = self.store.map(|n| token("st", n.into()));
        e.change = self.change;
        e.scope = self.scope;
        e.pin_ok = self.pin_ok;
        if let Some(x) = self.blocked {
            // Invariant: the contract's list name is a valid token.
            e.list = Some(Token::parse(BLOCKED_IMEI_LIST).expect("list name"));
            e.value = Some(text(&imei_text(x.i, x.g)).into());
        }
        e
    }

    /// Appends the same bytes as `self.event(..).write_json(out)`, without
    /// building the event: keys in [`Event::write_json`]'s order, values
    /// that never need escaping.
    fn write_json(
        &self,
        out: &mut Vec<u8>,
        seed: &[u8],
        id: u64,
        at: Timestamp,
        clock: &mut AtWriter,
    ) {
        fn field(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(value);
            out.push(b'"');
        }
        fn numbered(out: &mut Vec<u8>, key_and_prefix: &[u8], n: u64) {
            out.extend_from_slice(key_and_prefix);
            put_dec(out, n);
            out.push(b'"');
        }
        out.push(b'{');
        if id != 0 {
            out.extend_from_slice(b"\"id\":\"g");
            out.extend_from_slice(seed);
            out.push(b'-');
            put_dec(out, id);
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(b"\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"at\":\"");
        clock.write(out, at);
        out.push(b'"');
        if self.msisdn {
            let (b, len) = msisdn_text(self.sub);
            field(out, b"msisdn", &b[..len]);
        }
        if self.account {
            numbered(out, b",\"account\":\"acct-", u64::from(self.sub));
        }
        if let Some(x) = self.iccid {
            field(out, b"iccid", &iccid_text(x.i, x.g));
        }
        if let Some(x) = self.eid {
            field(out, b"eid", &eid_text(x.i, x.g));
        }
        if let Some(x) = self.imsi {
            field(out, b"imsi", &imsi_text(x.i, x.g));
        }
        if let Some(x) = self.imei {
            field(out, b"imei", &imei_text(x.i, x.g));
        }
        if let Some(n) = self.recipient {
            numbered(out, b",\"recipient\":\"carrier", n.into());
        }
        if let Some(c) = self.channel {
            field(out, b"channel", c.as_str().as_bytes());
        }
        if let Some(n) = self.agent {
            numbered(out, b",\"agent\":\"ag", n.into());
        }
        if let Some(n) = self.store {
            numbered(out, b",\"store\":\"st", n.into());
        }
        if let Some(c) = self.change {
            field(out, b"change", c.as_str().as_bytes());
        }
        if let Some(s) = self.scope {
            field(out, b"scope", s.as_str().as_bytes());
        }
        if let Some(x) = self.blocked {
            field(out, b"list", BLOCKED_IMEI_LIST.as_bytes());
            field(out, b"value", &imei_text(x.i, x.g));
        }
        if let Some(ok) = self.pin_ok {
            out.extend_from_slice(if ok {
                b",\"pin_ok\":true"
            } else {
                b",\"pin_ok\":false"
            });
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Writes `at` as [`Timestamp::to_rfc3339_utc`] does, with the date text
/// kept for the day: formatting a calendar date per event would cost more
/// than the rest of the event.
struct AtWriter {
    day: Option<i64>,
    date: [u8; 10],
}

impl AtWriter {
    fn new() -> AtWriter {
        AtWriter {
            day: None,
            date: [0; 10],
        }
    }

    fn write(&mut self, out: &mut Vec<u8>, at: Timestamp) {
        let secs = at.unix_secs();
        let day = secs.div_euclid(86_400);
        if self.day != Some(day) {
            // Midnight of a valid instant's day is valid (the range starts
            // and ends on whole days); the date is its first ten bytes.
            let midnight = Timestamp::from_unix(day * 86_400, 0).map(Timestamp::to_rfc3339_utc);
            match midnight {
                Some(t) if t.len() > 10 => self.date.copy_from_slice(&t.as_bytes()[..10]),
                _ => {
                    out.extend_from_slice(at.to_rfc3339_utc().as_bytes());
                    return;
                }
            }
            self.day = Some(day);
        }
        out.extend_from_slice(&self.date);
        let sod = secs.rem_euclid(86_400) as u64;
        let mut hms = *b"T00:00:00";
        fill(&mut hms[1..3], sod / 3600);
        fill(&mut hms[4..6], sod % 3600 / 60);
        fill(&mut hms[7..9], sod % 60);
        out.extend_from_slice(&hms);
        let nanos = at.subsec_nanos();
        if nanos != 0 {
            let mut frac = [0u8; 10];
            frac[0] = b'.';
            fill(&mut frac[1..], u64::from(nanos));
            let mut len = frac.len();
            while frac[len - 1] == b'0' {
                len -= 1;
            }
            out.extend_from_slice(&frac[..len]);
        }
        out.push(b'Z');
    }
}

// ---------------------------------------------------------------------------
// The generator.

/// One subscriber: the generations of the SIM, device and eUICC profile
/// they use now, whether a story holds the line, and their own locks.
/// Eight bytes, so 10M subscribers fit in 80 MB.
#[derive(Debug, Clone, Copy, Default)]
struct Sub {
    sim: u16,
    device: u16,
    esim: u16,
    /// Steps of an attack story still to come on this line: while nonzero,
    /// ordinary traffic and other stories keep off it.
    busy: u8,
    /// [`PORT_LOCKED`] and [`SIM_LOCKED`]: the customer's locks, as the
    /// generator last wrote them.
    locks: u8,
}

const PORT_LOCKED: u8 = 1;
const SIM_LOCKED: u8 = 2;

fn lock_bit(scope: Scope) -> u8 {
    match scope {
        Scope::PortOut => PORT_LOCKED,
        Scope::SimChange => SIM_LOCKED,
    }
}

/// The legitimate requests a customer can have to unlock a line for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legit {
    SimSwap,
    Esim,
    Port,
}

/// A step of a story, due later. Steps that depend on the subscriber's
/// state (which SIM and device the network sees) are realized when they
/// come out, so they show the state of that moment.
#[derive(Debug, Clone, Copy)]
enum StoryStep {
    Fixed(Draft),
    /// The network sees the line on its current SIM and device.
    Seen(u32),
    /// The line shows up in a new device.
    NewDevice(u32),
    /// A legitimate request, after the customer lifted their lock.
    Legit(u32, Legit),
}

/// A step in the queue. The heap is a max-heap, so the order is reversed:
/// the earliest due (then the earliest queued) comes out first.
#[derive(Debug)]
struct Queued {
    due: i64,
    order: u64,
    /// The line whose reservation this step holds.
    reserve: Option<u32>,
    step: StoryStep,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// One generated event: the draft, its time and its request number (0 for
/// a signal).
struct Emitted {
    draft: Draft,
    at: Timestamp,
    id: u64,
}

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const AGENTS: u64 = 500;
const STORES: u64 = 200;
const CARRIERS: u64 = 8;
/// How many lines after a random one are tried for one nobody is using.
const PROBES: u32 = 64;
/// No story begins while this many steps are queued: only a rate far past
/// [`ATTACKS_MAX`] gets there, and the queue stays bounded.
const PENDING_MAX: usize = 1 << 20;
const BILLION: u64 = 1_000_000_000;

/// An infinite, deterministic stream of events.
pub struct Generator {
    cfg: Config,
    rng: Rng,
    subs: Vec<Sub>,
    now_ms: i64,
    /// Requests written so far: the next one's id is `g{seed}-{requests + 1}`.
    requests: u64,
    attack_ppb: u64,
    pending: BinaryHeap<Queued>,
    /// Steps queued so far: orders steps due at the same moment.
    queued: u64,
    /// Attacker identities handed out so far.
    attackers: u32,
}

impl Generator {
    pub fn new(cfg: Config) -> Generator {
        let cfg = Config {
            subscribers: cfg.subscribers.clamp(1, SUBSCRIBERS_MAX),
            ..cfg
        };
        let n = cfg.subscribers as usize;
        Generator {
            rng: Rng::new(cfg.seed),
            subs: vec![Sub::default(); n],
            now_ms: cfg.start_unix.saturating_mul(1000),
            requests: 0,
            attack_ppb: cfg.attack_ppb(),
            pending: BinaryHeap::new(),
            queued: 0,
            attackers: 0,
            cfg,
        }
    }

    /// The next event and, for a request, its label.
    pub fn next_labeled(&mut self) -> (Event, Option<Label>) {
        let e = self.next_emitted();
        (e.draft.event(self.cfg.seed, e.id, e.at), e.draft.label)
    }

    fn at(&self) -> Timestamp {
        let secs = self.now_ms.div_euclid(1000);
        let nanos = (self.now_ms.rem_euclid(1000) * 1_000_000) as u32;
        Timestamp::from_unix(secs, nanos).unwrap_or(if secs < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    }

    /// One event: the clock moves on by a random gap; maybe an attack story
    /// begins; then a queued step that is due comes out, or else ordinary
    /// traffic. So every event has the same chance of beginning a story,
    /// and a step comes out at the first event at or after its due time.
    fn next_emitted(&mut self) -> Emitted {
        let span = self.cfg.mean_gap_ms.saturating_mul(2).saturating_add(1);
        let gap = i64::try_from(self.rng.below(span)).unwrap_or(i64::MAX);
        self.now_ms = self.now_ms.saturating_add(gap);
        if self.rng.below(BILLION) < self.attack_ppb && self.pending.len() < PENDING_MAX {
            self.attack();
        }
        let due = self
            .pending
            .peek_mut()
            .filter(|top| top.due <= self.now_ms)
            .map(PeekMut::pop);
        let mut draft = match due {
            Some(p) => self.realize(p),
            None => self.ordinary(),
        };
        if let Some(scope) = draft.scope {
            let locks = &mut self.subs[draft.sub as usize].locks;
            match draft.kind {
                Kind::Lock => *locks |= lock_bit(scope),
                Kind::Unlock => *locks &= !lock_bit(scope),
                _ => {}
            }
        }
        let id = if draft.kind.is_decision() {
            self.requests += 1;
            self.requests
        } else {
            draft.label = None;
            0
        };
        Emitted {
            draft,
            at: self.at(),
            id,
        }
    }

    fn realize(&mut self, p: Queued) -> Draft {
        if let Some(s) = p.reserve {
            let busy = &mut self.subs[s as usize].busy;
            *busy = busy.saturating_sub(1);
        }
        match p.step {
            StoryStep::Fixed(d) => d,
            StoryStep::Seen(s) => self.seen(s),
            StoryStep::NewDevice(s) => {
                self.new_device(s);
                self.seen(s)
            }
            StoryStep::Legit(s, what) => self.legit_request(s, what),
        }
    }

    /// Queues `step` for `due`; a step with `reserve` keeps ordinary
    /// traffic and other stories off that line until it comes out.
    fn schedule(&mut self, due: i64, step: StoryStep, reserve: Option<u32>) {
        if let Some(s) = reserve {
            let busy = &mut self.subs[s as usize].busy;
            *busy = busy.saturating_add(1);
        }
        self.queued += 1;
        self.pending.push(Queued {
            due,
            order: self.queued,
            reserve,
            step,
        });
    }

    /// A story step on its reserved line.
    fn story(&mut self, due: i64, d: Draft) {
        self.schedule(due, StoryStep::Fixed(d), Some(d.sub));
    }

    /// Uniform in lo..=hi milliseconds.
    fn within(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.rng.below((hi - lo + 1) as u64) as i64
    }

    fn pick(&mut self) -> u32 {
        self.rng.below(u64::from(self.cfg.subscribers)) as u32
    }

    /// The first line from `start` on that no story holds.
    fn free_from(&self, start: u32) -> Option<u32> {
        let n = self.cfg.subscribers;
        (0..PROBES.min(n))
            .map(|k| (start + k) % n)
            .find(|&s| self.subs[s as usize].busy == 0)
    }

    /// A line for a new story, or none when the population is that busy.
    fn pick_free(&mut self) -> Option<u32> {
        let start = self.pick();
        self.free_from(start)
    }

    /// A line for ordinary traffic: one no story holds, unless (in a tiny
    /// population) there is none nearby.
    fn pick_ordinary(&mut self) -> u32 {
        let start = self.pick();
        self.free_from(start).unwrap_or(start)
    }

    fn agent(&mut self) -> u16 {
        self.rng.below(AGENTS) as u16
    }
    fn store(&mut self) -> u16 {
        self.rng.below(STORES) as u16
    }

    /// Where a request was made, and by whom: agents work at retail stores,
    /// dealers and care; stores are retail and dealer outlets.
    fn place_on(&mut self, d: &mut Draft, ch: Channel) {
        d.channel = Some(ch);
        if matches!(ch, Channel::Retail | Channel::Care | Channel::Dealer) {
            d.agent = Some(self.agent());
        }
        if matches!(ch, Channel::Retail | Channel::Dealer) {
            d.store = Some(self.store());
        }
    }
    fn place(&mut self, d: &mut Draft) {
        let ch = self.one_of(Channel::ALL);
        self.place_on(d, ch);
    }
    fn one_of<T: Copy>(&mut self, all: &[T]) -> T {
        all[self.rng.below(all.len() as u64) as usize]
    }

    // -- ordinary traffic ---------------------------------------------------

    fn seen(&mut self, s: u32) -> Draft {
        let sub = self.subs[s as usize];
        let mut d = Draft::new(Kind::DeviceSeen, s);
        d.imsi = ident(s, sub.sim.into());
        d.imei = ident(s, sub.device.into());
        d
    }

    fn new_device(&mut self, s: u32) {
        let sub = &mut self.subs[s as usize];
        sub.device = (sub.device + 1) % LEGIT_DEVICES;
    }

    /// The line moves to its next SIM (or eSIM profile).
    fn next_sim(&mut self, s: u32) -> Option<Ident> {
        let sub = &mut self.subs[s as usize];
        sub.sim = (sub.sim + 1) % LEGIT_SIMS;
        ident(s, sub.sim.into())
    }

    fn next_eid(&mut self, s: u32) -> Option<Ident> {
        let sub = &mut self.subs[s as usize];
        sub.esim = sub.esim.wrapping_add(1);
        ident(s, sub.esim.into())
    }

    fn current_device(&self, s: u32) -> Option<Ident> {
        ident(s, self.subs[s as usize].device.into())
    }

    /// The everyday mix, by weight out of 1000: mostly the network seeing
    /// lines, then account changes, SIM changes, port-outs, failed PINs,
    /// locks (fewer than unlocks, so that about a line in six is locked in
    /// each scope), and rare fraud reports (most follow attacks).
    fn ordinary(&mut self) -> Draft {
        let s = self.pick_ordinary();
        match self.rng.below(1000) {
            0..=599 => {
                if self.rng.chance(20) {
                    self.device_upgrade(s)
                } else {
                    self.seen(s)
                }
            }
            600..=699 => {
                let mut d = Draft::new(Kind::AccountChange, s);
                d.change = Some(self.one_of(Change::ALL));
                d.msisdn = self.rng.chance(500);
                self.place(&mut d);
                d
            }
            700..=759 => self.legit_change(s, Legit::SimSwap),
            760..=789 => self.legit_change(s, Legit::Esim),
            790..=839 => self.legit_change(s, Legit::Port),
            840..=929 => {
                let mut d = Draft::new(Kind::AuthFailure, s);
                self.place(&mut d);
                d
            }
            930..=939 => self.lock(s, Kind::Lock),
            940..=989 => self.lock(s, Kind::Unlock),
            _ => {
                if self.rng.chance(100) {
                    self.fraud_report(s)
                } else {
                    self.seen(s)
                }
            }
        }
    }

    fn lock(&mut self, s: u32, kind: Kind) -> Draft {
        let mut d = Draft::new(kind, s);
        d.scope = Some(self.one_of(Scope::ALL));
        d
    }

    fn fraud_report(&mut self, s: u32) -> Draft {
        let mut d = Draft::new(Kind::FraudReport, s);
        self.place_on(&mut d, Channel::Care);
        d
    }

    /// A customer's new phone. Most move their SIM card, and the network
    /// simply sees the line in a new device; a quarter move to an eSIM on
    /// the new phone, mostly in the app, and the network sees the new
    /// profile minutes later.
    fn device_upgrade(&mut self, s: u32) -> Draft {
        let sim_locked = self.subs[s as usize].locks & SIM_LOCKED != 0;
        self.new_device(s);
        if sim_locked || !self.rng.chance(250) {
            return self.seen(s);
        }
        let mut d = Draft::new(Kind::EsimTransfer, s);
        d.eid = self.next_eid(s);
        d.imsi = self.next_sim(s);
        d.imei = self.current_device(s);
        let ch = if self.rng.chance(800) {
            self.one_of(&[Channel::App, Channel::Online])
        } else {
            Channel::Retail
        };
        self.place_on(&mut d, ch);
        d.label = legit(DEVICE_UPGRADE);
        let due = self.now_ms + self.within(MIN, 15 * MIN);
        self.schedule(due, StoryStep::Seen(s), None);
        d
    }

    /// A customer's SIM change or port-out. When they locked the line
    /// against it, they lift the lock first and ask minutes to hours later.
    fn legit_change(&mut self, s: u32, what: Legit) -> Draft {
        let scope = match what {
            Legit::Port => Scope::PortOut,
            Legit::SimSwap | Legit::Esim => Scope::SimChange,
        };
        if self.subs[s as usize].locks & lock_bit(scope) == 0 {
            return self.legit_request(s, what);
        }
        let due = self.now_ms + self.within(10 * MIN, 4 * HOUR);
        self.schedule(due, StoryStep::Legit(s, what), None);
        let mut d = Draft::new(Kind::Unlock, s);
        d.scope = Some(scope);
        d
    }

    fn legit_request(&mut self, s: u32, what: Legit) -> Draft {
        match what {
            Legit::SimSwap => self.legit_sim_swap(s),
            Legit::Esim => {
                // A customer moving their line to an eSIM on their phone.
                let mut d = Draft::new(Kind::EsimTransfer, s);
                d.eid = self.next_eid(s);
                d.imsi = self.next_sim(s);
                if self.rng.chance(500) {
                    d.imei = self.current_device(s);
                }
                self.place(&mut d);
                let due = self.now_ms + self.within(MIN, 10 * MIN);
                self.schedule(due, StoryStep::Seen(s), None);
                d
            }
            Legit::Port => {
                // A customer leaving; one in twenty mistypes the PIN.
                let mut d = Draft::new(Kind::PortOut, s);
                d.pin_ok = Some(self.rng.chance(950));
                d.recipient = Some(self.rng.below(CARRIERS) as u8);
                self.place(&mut d);
                d
            }
        }
    }

    /// A new SIM card: most at a store's counter, where the agent puts it in
    /// the customer's phone and the network sees it minutes later; the rest
    /// by care or online, the card arriving by post a day or two later.
    fn legit_sim_swap(&mut self, s: u32) -> Draft {
        let mut d = Draft::new(Kind::SimSwap, s);
        let sim = self.next_sim(s);
        d.iccid = sim;
        if self.rng.chance(700) {
            d.imsi = sim;
        }
        let later = if self.rng.chance(600) {
            let ch = self.one_of(&[Channel::Retail, Channel::Retail, Channel::Dealer]);
            self.place_on(&mut d, ch);
            if self.rng.chance(800) {
                d.imei = self.current_device(s);
            }
            d.label = legit(IN_STORE_SWAP);
            self.within(2 * MIN, 20 * MIN)
        } else {
            let ch = self.one_of(&[Channel::Care, Channel::Online, Channel::App]);
            self.place_on(&mut d, ch);
            self.within(HOUR, 48 * HOUR)
        };
        let due = self.now_ms + later;
        self.schedule(due, StoryStep::Seen(s), None);
        d
    }

    // -- attack stories -----------------------------------------------------

    /// A new attacker identity: a SIM, a device and an eUICC no customer has.
    fn attacker(&mut self) -> u32 {
        self.attackers = self.attackers.wrapping_add(1);
        self.attackers
    }
    fn attacker_sim(s: u32, k: u32) -> Option<Ident> {
        ident(s, u32::from(LEGIT_SIMS) + k % 100)
    }
    fn attacker_device(k: u32) -> Option<Ident> {
        ident(
            k % 1_000_000,
            u32::from(LEGIT_DEVICES) + (k / 1_000_000) % 5,
        )
    }
    fn attacker_eid(s: u32, k: u32) -> Option<Ident> {
        ident(s, ATTACKER_EIDS + k % 100_000)
    }

    /// A SIM swap of line `s` to an attacker's SIM. It always names the
    /// SIM's IMSI: when such a swap goes through, the network expects the
    /// attacker's SIM, and the customer's own phone showing up again raises
    /// the alert, as a hijacked line should.
    fn attacker_swap(&mut self, s: u32, k: u32, ch: Channel) -> Draft {
        let mut d = Draft::new(Kind::SimSwap, s);
        d.iccid = Self::attacker_sim(s, k);
        d.imsi = d.iccid;
        self.place_on(&mut d, ch);
        d
    }
    fn attacker_esim(&mut self, s: u32, k: u32, ch: Channel) -> Draft {
        let mut d = Draft::new(Kind::EsimTransfer, s);
        d.eid = Self::attacker_eid(s, k);
        d.imsi = Self::attacker_sim(s, k);
        self.place_on(&mut d, ch);
        d
    }
    fn attacker_port(&mut self, s: u32, pin_ok: bool, ch: Channel) -> Draft {
        let mut d = Draft::new(Kind::PortOut, s);
        d.pin_ok = Some(pin_ok);
        d.recipient = Some(self.rng.below(CARRIERS) as u8);
        self.place_on(&mut d, ch);
        d
    }
    fn remote_channel(&mut self) -> Channel {
        self.one_of(&[Channel::Online, Channel::App, Channel::Care])
    }
    fn counter_channel(&mut self) -> Channel {
        self.one_of(&[Channel::Care, Channel::Retail, Channel::Dealer])
    }

    /// Begins an attack story: its steps are queued from now on.
    fn attack(&mut self) {
        match self.rng.below(ATTACK_STORIES.len() as u64) {
            0 => self.pin_brute_force(),
            1 => self.credential_change_then_sim_swap(),
            2 => self.insider_agent_burst(),
            3 => self.stolen_device(),
            4 => self.unapproved_sim_change(),
            5 => self.remote_esim_to_new_device(),
            6 => self.locked_line(),
            7 => self.unlock_then(Scope::PortOut),
            _ => self.unlock_then(Scope::SimChange),
        }
    }

    /// Wrong PINs 5 to 90 seconds apart, 3 to 12 of them, then the right
    /// one within ten minutes: the whole story inside half an hour, so the
    /// last request sees every failure in its hour.
    fn pin_brute_force(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let ch = self.remote_channel();
        let mut t = self.now_ms;
        for _ in 0..3 + self.rng.below(10) {
            let mut d = self.attacker_port(s, false, ch);
            d.label = fraud(PIN_BRUTE_FORCE, true);
            self.story(t, d);
            t += self.within(5 * SEC, 90 * SEC);
        }
        t += self.within(30 * SEC, 10 * MIN);
        let mut d = self.attacker_port(s, true, ch);
        d.label = fraud(PIN_BRUTE_FORCE, true);
        self.story(t, d);
    }

    /// Takeover: the attacker changes a credential remotely, then minutes to
    /// hours later gets the line onto their SIM. Half the victims report
    /// fraud within two days.
    fn credential_change_then_sim_swap(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        let mut c = Draft::new(Kind::AccountChange, s);
        c.change = Some(self.one_of(&[
            Change::Email,
            Change::Password,
            Change::Contact,
            Change::Pin,
        ]));
        c.msisdn = self.rng.chance(500);
        let ch = self.remote_channel();
        self.place_on(&mut c, ch);
        c.label = fraud(CREDENTIAL_CHANGE_THEN_SIM_SWAP, false);
        self.story(self.now_ms, c);
        let t = self.now_ms + self.within(5 * MIN, 6 * HOUR);
        let ch = self.counter_channel();
        let mut d = self.attacker_swap(s, k, ch);
        if self.rng.chance(500) {
            d.imei = Self::attacker_device(k);
        }
        d.label = fraud(CREDENTIAL_CHANGE_THEN_SIM_SWAP, true);
        self.story(t, d);
        if self.rng.chance(500) {
            let report = t + self.within(2 * HOUR, 48 * HOUR);
            let r = self.fraud_report(s);
            self.schedule(report, StoryStep::Fixed(r), None);
        }
    }

    /// An agent moves 12 to 16 different lines to SIMs (or eSIMs) they
    /// hold, 30 seconds to 3 minutes apart: at most 45 minutes, so from the
    /// eleventh line on, ten distinct lines are in the agent's hour.
    fn insider_agent_burst(&mut self) {
        let agent = self.agent();
        let store = self.store();
        let ch = self.one_of(&[Channel::Retail, Channel::Dealer]);
        let mut t = self.now_ms;
        for n in 0..12 + self.rng.below(5) {
            // Each victim is reserved once picked, so the lines are distinct.
            let Some(s) = self.pick_free() else { return };
            let k = self.attacker();
            let mut d = if self.rng.chance(750) {
                self.attacker_swap(s, k, ch)
            } else {
                self.attacker_esim(s, k, ch)
            };
            d.agent = Some(agent);
            d.store = Some(store);
            d.label = fraud(INSIDER_AGENT_BURST, n >= 10);
            self.story(t, d);
            t += self.within(30 * SEC, 3 * MIN);
        }
    }

    /// A customer's phone is stolen: its IMEI goes on the blocked list, the
    /// customer moves to a new phone, and the thief, holding the old one,
    /// asks for a SIM swap naming it.
    fn stolen_device(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        let stolen = self.current_device(s);
        let mut block = Draft::new(Kind::ListAdd, s);
        block.blocked = stolen;
        self.story(self.now_ms, block);
        let replaced = self.now_ms + self.within(30 * MIN, 6 * HOUR);
        self.schedule(replaced, StoryStep::NewDevice(s), Some(s));
        let t = self.now_ms + self.within(10 * MIN, 12 * HOUR);
        let ch = self.counter_channel();
        let mut d = self.attacker_swap(s, k, ch);
        d.imei = stolen;
        d.label = fraud(STOLEN_DEVICE, true);
        self.story(t, d);
    }

    /// The network sees the line on its own SIM, then (minutes to hours
    /// later) on the attacker's SIM in the attacker's phone with no request
    /// behind it, and soon after the number is asked to port out.
    fn unapproved_sim_change(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        // Seeing the line on its SIM first settles what the network expects
        // (whatever earlier traffic left), so the next SIM is unapproved.
        self.schedule(self.now_ms, StoryStep::Seen(s), Some(s));
        let mut t = self.now_ms + self.within(10 * MIN, 6 * HOUR);
        let mut seen = Draft::new(Kind::DeviceSeen, s);
        seen.imsi = Self::attacker_sim(s, k);
        seen.imei = Self::attacker_device(k);
        self.story(t, seen);
        t += self.within(5 * MIN, 2 * HOUR);
        let ch = self.remote_channel();
        let mut d = self.attacker_port(s, true, ch);
        d.label = fraud(UNAPPROVED_SIM_CHANGE, true);
        self.story(t, d);
    }

    /// A line seen on its own device is moved, online, in the app or by
    /// care, to an eSIM on the attacker's phone.
    fn remote_esim_to_new_device(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        self.schedule(self.now_ms, StoryStep::Seen(s), Some(s));
        let t = self.now_ms + self.within(MIN, 3 * HOUR);
        let ch = self.remote_channel();
        let mut d = self.attacker_esim(s, k, ch);
        if self.rng.chance(800) {
            d.imei = Self::attacker_device(k);
        }
        d.label = fraud(REMOTE_ESIM_TO_NEW_DEVICE, true);
        self.story(t, d);
    }

    /// The customer locks the line (against port-outs or SIM changes), and
    /// minutes to hours later that very request comes. The lock stays.
    fn locked_line(&mut self) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        let scope = self.one_of(Scope::ALL);
        let mut lock = Draft::new(Kind::Lock, s);
        lock.scope = Some(scope);
        self.story(self.now_ms, lock);
        let t = self.now_ms + self.within(10 * MIN, 12 * HOUR);
        let mut d = match scope {
            Scope::PortOut => {
                let ch = self.remote_channel();
                let pin_ok = self.rng.chance(800);
                self.attacker_port(s, pin_ok, ch)
            }
            Scope::SimChange if self.rng.chance(500) => {
                let ch = self.counter_channel();
                self.attacker_swap(s, k, ch)
            }
            Scope::SimChange => {
                let ch = self.remote_channel();
                self.attacker_esim(s, k, ch)
            }
        };
        d.label = fraud(LOCKED_LINE, true);
        self.story(t, d);
    }

    /// The customer's lock is lifted by an agent the attacker talked round,
    /// and within the day the port-out (or SIM swap) it was guarding comes.
    fn unlock_then(&mut self, scope: Scope) {
        let Some(s) = self.pick_free() else { return };
        let k = self.attacker();
        let mut lock = Draft::new(Kind::Lock, s);
        lock.scope = Some(scope);
        self.story(self.now_ms, lock);
        let unlocked = self.now_ms + self.within(10 * MIN, 2 * HOUR);
        let mut unlock = Draft::new(Kind::Unlock, s);
        unlock.scope = Some(scope);
        self.story(unlocked, unlock);
        let t = unlocked + self.within(5 * MIN, 20 * HOUR);
        let mut d = match scope {
            Scope::PortOut => {
                let ch = self.remote_channel();
                let mut d = self.attacker_port(s, true, ch);
                d.label = fraud(UNLOCK_THEN_PORT, true);
                d
            }
            Scope::SimChange => {
                let ch = self.counter_channel();
                let mut d = self.attacker_swap(s, k, ch);
                d.label = fraud(UNLOCK_THEN_SIM_SWAP, true);
                d
            }
        };
        if d.kind == Kind::SimSwap && self.rng.chance(500) {
            d.imei = Self::attacker_device(k);
        }
        self.story(t, d);
    }
}

impl Iterator for Generator {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        Some(self.next_labeled().0)
    }
}

// ---------------------------------------------------------------------------
// Writing.

/// Buffers are handed to the writer at about this size.
const CHUNK: usize = 1 << 16;

/// Appends one labels line: `{"id":"g1-5","label":"fraud","story":"…"}`.
fn write_label(out: &mut Vec<u8>, seed: &[u8], id: u64, label: &Label) {
    out.extend_from_slice(b"{\"id\":\"g");
    out.extend_from_slice(seed);
    out.push(b'-');
    put_dec(out, id);
    out.extend_from_slice(b"\",\"label\":\"");
    out.extend_from_slice(label.as_str().as_bytes());
    out.extend_from_slice(b"\",\"story\":\"");
    out.extend_from_slice(label.story.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

fn run<W: Write, L: Write>(
    cfg: &Config,
    n: u64,
    events: &mut W,
    mut labels: Option<&mut L>,
) -> io::Result<()> {
    let mut g = Generator::new(cfg.clone());
    let mut seed = Vec::new();
    put_dec(&mut seed, cfg.seed);
    let mut clock = AtWriter::new();
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    let mut lbuf = Vec::with_capacity(if labels.is_some() { CHUNK + 1024 } else { 0 });
    for _ in 0..n {
        let e = g.next_emitted();
        e.draft.write_json(&mut buf, &seed, e.id, e.at, &mut clock);
        if buf.len() >= CHUNK {
            events.write_all(&buf)?;
            buf.clear();
        }
        if let (Some(w), Some(label)) = (labels.as_deref_mut(), &e.draft.label) {
            write_label(&mut lbuf, &seed, e.id, label);
            if lbuf.len() >= CHUNK {
                w.write_all(&lbuf)?;
                lbuf.clear();
            }
        }
    }
    events.write_all(&buf)?;
    if let Some(w) = labels {
        w.write_all(&lbuf)?;
    }
    Ok(())
}

/// Writes `n` events as JSON lines.
pub fn write<W: Write>(cfg: &Config, n: u64, w: &mut W) -> io::Result<()> {
    run(cfg, n, w, None::<&mut io::Sink>)
}

/// Writes `n` events as JSON lines to `events`, and a label line per
/// request (`{"id","label","story"}`, in the same order) to `labels`.
pub fn write_labeled<W: Write, L: Write>(
    cfg: &Config,
    n: u64,
    events: &mut W,
    labels: &mut L,
) -> io::Result<()> {
    run(cfg, n, events, Some(labels))
}

/// What `portcullis gen` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct GenOptions {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Subscribers in the population (1 to 10,000,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(SUBSCRIBERS_MAX)))]
    pub subscribers: u32,
    /// Share of events that begin an attack story (0 to 0.05).
    #[arg(long, value_name = "RATE", default_value_t = 0.002)]
    pub attacks: f64,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a label per request here: {"id","label","story"} lines.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// A writer that remembers whether it failed, so that an error can name
/// the file it came from.
struct Watched<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Watched<W> {
    fn new(inner: W) -> Watched<W> {
        Watched {
            inner,
            failed: false,
        }
    }
    fn watch<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        self.failed |= r.is_err();
        r
    }
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.watch(r)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let r = self.inner.write_all(buf);
        self.watch(r)
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.watch(r)
    }
}

fn create(what: &str, path: &Path) -> Result<Watched<std::fs::File>, ExitCode> {
    std::fs::File::create(path).map(Watched::new).map_err(|e| {
        eprintln!("gen: cannot create {what} file {}: {e}", path.display());
        ExitCode::FAILURE
    })
}

/// `portcullis gen`: exit 0 when everything was written (or standard output
/// was closed early, as by `| head`), 2 for a bad `--attacks`, 1 when a file
/// cannot be created or written.
pub fn command(o: &GenOptions) -> ExitCode {
    if !(o.attacks.is_finite() && (0.0..=ATTACKS_MAX).contains(&o.attacks)) {
        eprintln!(
            "gen: --attacks {} is out of range: it is the share of events that begin an attack story, from 0 to {ATTACKS_MAX}",
            o.attacks
        );
        return ExitCode::from(2);
    }
    let cfg = Config {
        seed: o.seed,
        subscribers: o.subscribers,
        // In range: at most 0.05 * 10^9.
        attacks_per_billion: Some((o.attacks * BILLION as f64).round() as u32),
        ..Config::default()
    };
    let mut labels = match o.labels.as_deref().map(|p| create("labels", p)).transpose() {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (result, events_failed) = match o.out.as_deref() {
        Some(p) => {
            let mut w = match create("events", p) {
                Ok(w) => w,
                Err(code) => return code,
            };
            let r = run(&cfg, o.events, &mut w, labels.as_mut()).and_then(|()| w.flush());
            (r, w.failed)
        }
        None => {
            let mut w = Watched::new(io::stdout().lock());
            let r = run(&cfg, o.events, &mut w, labels.as_mut()).and_then(|()| w.flush());
            (r, w.failed)
        }
    };
    let result = result.and_then(|()| labels.as_mut().map_or(Ok(()), Write::flush));
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    match (&o.out, &o.labels) {
        (_, Some(p)) if labels.as_ref().is_some_and(|l| l.failed) => {
            eprintln!("gen: cannot write labels file {}: {e}", p.display());
        }
        (None, _) if events_failed && e.kind() == io::ErrorKind::BrokenPipe => {
            return ExitCode::SUCCESS;
        }
        (Some(p), _) => eprintln!("gen: cannot write events file {}: {e}", p.display()),
        (None, _) => eprintln!("gen: cannot write to standard output: {e}"),
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};

    #[test]
    fn every_line_is_valid_contract_v1_and_in_order() {
        let mut out = Vec::new();
        write(&Config::default(), 20_000, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut last = None;
        let mut kinds = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let ev = parse_line(line, AtRule::Required)
                .unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
            assert!(last <= ev.at, "line {} out of order", i + 1);
            last = ev.at;
            kinds.insert(ev.kind);
        }
        assert!(kinds.len() >= 9, "{kinds:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        write(&Config::default(), 2_000, &mut a).unwrap();
        write(&Config::default(), 2_000, &mut b).unwrap();
        write(
            &Config {
                seed: 2,
                ..Config::default()
            },
            2_000,
            &mut c,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The write path (drafts straight to JSON) and the iterator (typed
    /// events, then `Event::write_json`) give the same bytes, for every
    /// kind and story, and for times with and without fractions.
    #[test]
    fn the_fast_writer_writes_what_the_events_would() {
        let cfg = Config {
            seed: 77,
            subscribers: 3_000,
            mean_gap_ms: 1_500,
            attacks_per_10k: 400,
            ..Config::default()
        };
        let mut fast = Vec::new();
        write(&cfg, 30_000, &mut fast).unwrap();
        let mut slow = Vec::new();
        for ev in Generator::new(cfg).take(30_000) {
            ev.write_json(&mut slow);
        }
        let (fast, slow) = (
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap(),
        );
        for (i, (f, s)) in fast.lines().zip(slow.lines()).enumerate() {
            assert_eq!(f, s, "line {}", i + 1);
        }
        assert_eq!(fast.len(), slow.len());
        // Only a time's fraction has a '.'; about one time in a thousand is
        // a whole second.
        let at = |l: &str| {
            l.split("\"at\":\"")
                .nth(1)
                .map(|a| a[..a.find('Z').unwrap()].to_string())
        };
        let times: Vec<String> = fast.lines().filter_map(at).collect();
        assert!(times.iter().any(|t| t.contains('.')));
        assert!(times.iter().any(|t| !t.contains('.')));
    }

    /// The public identifier helpers keep the layouts the benchmarks and
    /// the sample trace were made with.
    #[test]
    fn identifier_layouts_are_as_before() {
        fn with_luhn(body: &str) -> String {
            format!("{body}{}", char::from(luhn(body.as_bytes())))
        }
        for (i, g) in [(0, 0), (7, 3), (9_999_999, 999), (123_456, 1_000_017)] {
            assert_eq!(msisdn(i).to_string(), format!("+4470{i:08}"));
            let want = format!("23415{:03}{:07}", g % 1000, i % SUBSCRIBERS_MAX);
            assert_eq!(imsi(i, g).to_string(), want);
            let tac = 35_693_803 + g % 50;
            let want = with_luhn(&format!("{tac:08}{:06}", i % 1_000_000));
            assert_eq!(imei(i, g).to_string(), want);
            let want = with_luhn(&format!("8944{:03}{i:011}", g % 1000));
            assert_eq!(iccid(i, g).to_string(), want);
            let body = format!("89049032{:06}{i:016}", g % 1_000_000);
            let check = 98 - (body.parse::<u128>().unwrap() * 100) % 97;
            assert_eq!(eid(i, g).to_string(), format!("{body}{check:02}"));
            assert_eq!(account(i).as_str(), format!("acct-{i}"));
        }
        assert_eq!(msisdn(u32::MAX).to_string(), format!("+4470{}", u32::MAX));
    }

    /// Every request has a label, and no signal has one; attack stories
    /// label their requests fraud.
    #[test]
    fn requests_and_only_requests_are_labeled() {
        let cfg = Config {
            subscribers: 2_000,
            attacks_per_10k: 300,
            ..Config::default()
        };
        let mut g = Generator::new(cfg);
        let mut fraud = 0;
        for _ in 0..20_000 {
            let (ev, label) = g.next_labeled();
            assert_eq!(ev.kind.is_decision(), label.is_some(), "{ev:?}");
            assert_eq!(ev.id.is_some(), label.is_some(), "{ev:?}");
            if let Some(l) = label {
                let known = if l.fraud {
                    ATTACK_STORIES.contains(&l.story)
                } else {
                    LEGIT_STORIES.contains(&l.story) && !l.payload
                };
                assert!(known, "{l:?}");
                fraud += usize::from(l.fraud);
            }
        }
        assert!(fraud > 100, "{fraud} fraud requests");
    }

    #[test]
    fn an_attack_rate_in_parts_per_billion_takes_the_place_of_per_10k() {
        let per_10k = Config::default();
        let per_billion = Config {
            attacks_per_10k: 0,
            attacks_per_billion: Some(2_000_000),
            ..Config::default()
        };
        assert_eq!(per_10k.attack_ppb(), per_billion.attack_ppb());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&per_10k, 5_000, &mut a).unwrap();
        write(&per_billion, 5_000, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
