//! Deterministic synthetic carrier traffic in contract v1.
//!
//! A population of subscribers (a line, an account, a SIM and a device each)
//! produces what a carrier's back office and network emit: the network
//! seeing lines on their SIM and device, device upgrades, in-store SIM swaps,
//! eSIM transfers, port-outs, account changes, failed PIN attempts, locks,
//! fraud reports, and now and then an attack (a burst of failed PINs, a
//! credential change then a SIM swap, an insider agent's burst of swaps, a
//! SIM change that no request explains). The same seed gives the same bytes.
//! Benchmarks, tests and the sample trace use it.

use crate::contract::ident::{Eid, Iccid, Imei, Imsi, Msisdn, Token};
use crate::contract::{Change, Channel, Event, Kind, Scope, Timestamp};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub seed: u64,
    /// Subscribers in the population.
    pub subscribers: u32,
    /// Unix seconds of the first event.
    pub start_unix: i64,
    /// Mean seconds between events.
    pub mean_gap_ms: u64,
    /// Attack stories per 10,000 events.
    pub attacks_per_10k: u32,
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
        }
    }
}

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

/// Appends the Luhn check digit to a string of digits.
fn with_luhn(body: &str) -> String {
    let mut sum = 0u32;
    for (i, c) in body.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// The largest population the identifier layouts below have room for.
pub const SUBSCRIBERS_MAX: u32 = 10_000_000;

// Subscriber `i` is below SUBSCRIBERS_MAX (Generator::new clamps), so every
// layout below has its exact digit count.

pub fn msisdn(i: u32) -> Msisdn {
    // Invariant: "+4470" and 8 digits (i < 10^8) is a valid E.164 number.
    Msisdn::parse(&format!("+4470{i:08}")).expect("generated msisdn")
}
pub fn imsi(i: u32, generation: u32) -> Imsi {
    let i = i % SUBSCRIBERS_MAX;
    // Invariant: 5 + 3 + 7 digits is a 15-digit IMSI.
    Imsi::parse(&format!("23415{:03}{i:07}", generation % 1000)).expect("generated imsi")
}
pub fn imei(i: u32, generation: u32) -> Imei {
    let tac = 35_693_803 + generation % 50;
    // Invariant: 8 + 6 digits and a Luhn digit is a valid IMEI.
    Imei::parse(&with_luhn(&format!("{tac:08}{:06}", i % 1_000_000))).expect("generated imei")
}
pub fn iccid(i: u32, generation: u32) -> Iccid {
    // Invariant: "8944" + 3 + 11 digits and a Luhn digit is a valid ICCID.
    Iccid::parse(&with_luhn(&format!("8944{:03}{i:011}", generation % 1000)))
        .expect("generated iccid")
}
pub fn eid(i: u32, generation: u32) -> Eid {
    let body = format!("89049032{:06}{i:016}", generation % 1_000_000);
    let n: u128 = body.parse::<u128>().unwrap_or(0) * 100;
    let check = 98 - (n % 97);
    // Invariant: 30 digits and their ISO 7064 MOD 97-10 check digits.
    Eid::parse(&format!("{body}{check:02}")).expect("generated eid")
}
pub fn account(i: u32) -> Token {
    // Invariant: "acct-" and digits is a token.
    Token::parse(&format!("acct-{i}")).expect("generated account")
}
fn token(prefix: &str, i: u64) -> Token {
    // Invariant: callers pass token-safe prefixes; digits are token-safe.
    Token::parse(&format!("{prefix}{i}")).expect("generated token")
}

/// One subscriber's current SIM and device.
#[derive(Debug, Clone, Copy, Default)]
struct Sub {
    sim: u32,
    device: u32,
    esim: u32,
}

/// An infinite, deterministic stream of events.
pub struct Generator {
    cfg: Config,
    rng: Rng,
    subs: Vec<Sub>,
    now_ms: i64,
    seq: u64,
    queue: std::collections::VecDeque<Event>,
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
            now_ms: cfg.start_unix * 1000,
            seq: 0,
            queue: Default::default(),
            cfg,
        }
    }

    fn at(&self) -> Timestamp {
        Timestamp::from_unix(
            self.now_ms.div_euclid(1000),
            (self.now_ms.rem_euclid(1000) * 1_000_000) as u32,
        )
        .unwrap_or(Timestamp::MIN)
    }

    fn id(&mut self) -> Box<str> {
        self.seq += 1;
        format!("g{}-{}", self.cfg.seed, self.seq).into()
    }

    fn pick(&mut self) -> u32 {
        self.rng.below(u64::from(self.cfg.subscribers.max(1))) as u32
    }

    fn base(&mut self, kind: Kind, s: u32) -> Event {
        let mut e = Event::empty(kind);
        e.at = Some(self.at());
        if kind.is_decision() {
            e.id = Some(self.id());
        }
        match kind {
            Kind::AuthFailure | Kind::FraudReport | Kind::AccountChange => {
                e.account = Some(account(s));
            }
            _ => {
                e.msisdn = Some(msisdn(s));
                e.account = Some(account(s));
            }
        }
        e
    }

    fn place(&mut self, e: &mut Event) {
        let ch = Channel::ALL[self.rng.below(Channel::ALL.len() as u64) as usize];
        e.channel = Some(ch);
        if matches!(ch, Channel::Retail | Channel::Care | Channel::Dealer) {
            e.agent = Some(token("ag", self.rng.below(500)));
        }
        if matches!(ch, Channel::Retail | Channel::Dealer) {
            e.store = Some(token("st", self.rng.below(200)));
        }
    }

    fn device_seen(&mut self, s: u32) -> Event {
        let sub = self.subs[s as usize];
        let mut e = self.base(Kind::DeviceSeen, s);
        e.account = None;
        e.imsi = Some(imsi(s, sub.sim));
        e.imei = Some(imei(s, sub.device));
        e
    }

    fn sim_swap(&mut self, s: u32) -> Event {
        self.subs[s as usize].sim += 1;
        let sub = self.subs[s as usize];
        let mut e = self.base(Kind::SimSwap, s);
        e.iccid = Some(iccid(s, sub.sim));
        if self.rng.chance(700) {
            e.imsi = Some(imsi(s, sub.sim));
        }
        self.place(&mut e);
        if e.channel != Some(Channel::Retail) && self.rng.chance(500) {
            e.channel = Some(Channel::Retail);
            e.agent = Some(token("ag", self.rng.below(500)));
            e.store = Some(token("st", self.rng.below(200)));
        }
        e
    }

    fn esim_transfer(&mut self, s: u32) -> Event {
        self.subs[s as usize].sim += 1;
        self.subs[s as usize].esim += 1;
        let sub = self.subs[s as usize];
        let mut e = self.base(Kind::EsimTransfer, s);
        e.eid = Some(eid(s, sub.esim));
        e.imsi = Some(imsi(s, sub.sim));
        self.place(&mut e);
        e
    }

    fn port_out(&mut self, s: u32, pin_ok: bool) -> Event {
        let mut e = self.base(Kind::PortOut, s);
        e.pin_ok = Some(pin_ok);
        e.recipient = Some(token("carrier", self.rng.below(8)));
        self.place(&mut e);
        e
    }

    fn account_change(&mut self, s: u32) -> Event {
        let mut e = self.base(Kind::AccountChange, s);
        e.change = Some(Change::ALL[self.rng.below(Change::ALL.len() as u64) as usize]);
        if self.rng.chance(500) {
            e.msisdn = Some(msisdn(s));
        }
        self.place(&mut e);
        e
    }

    fn lock(&mut self, s: u32, kind: Kind) -> Event {
        let mut e = self.base(kind, s);
        e.scope = Some(if self.rng.chance(500) {
            Scope::PortOut
        } else {
            Scope::SimChange
        });
        e
    }

    /// The everyday mix, by weight out of 1000.
    fn ordinary(&mut self) -> Event {
        let s = self.pick();
        let r = self.rng.below(1000);
        match r {
            0..=599 => {
                if self.rng.chance(20) {
                    self.subs[s as usize].device += 1;
                }
                self.device_seen(s)
            }
            600..=699 => self.account_change(s),
            700..=759 => self.sim_swap(s),
            760..=789 => self.esim_transfer(s),
            790..=839 => {
                let ok = self.rng.chance(950);
                self.port_out(s, ok)
            }
            840..=929 => {
                let mut e = self.base(Kind::AuthFailure, s);
                self.place(&mut e);
                e
            }
            930..=959 => self.lock(s, Kind::Lock),
            960..=989 => self.lock(s, Kind::Unlock),
            _ => {
                let mut e = self.base(Kind::FraudReport, s);
                e.channel = Some(Channel::Care);
                e
            }
        }
    }

    /// Queues an attack story; its events come out over the next minutes.
    fn attack(&mut self) {
        let s = self.pick();
        match self.rng.below(5) {
            0 => {
                // PIN brute force, then a port-out.
                for _ in 0..3 + self.rng.below(10) {
                    let e = self.port_out(s, false);
                    self.queue.push_back(e);
                }
                let e = self.port_out(s, true);
                self.queue.push_back(e);
            }
            1 => {
                // Credential change, then a SIM swap.
                let mut c = self.account_change(s);
                c.change = Some(Change::Email);
                self.queue.push_back(c);
                let e = self.sim_swap(s);
                self.queue.push_back(e);
            }
            2 => {
                // An insider agent swapping many lines.
                let agent = token("ag", 500 + self.rng.below(20));
                for _ in 0..12 {
                    let t = self.pick();
                    let mut e = self.sim_swap(t);
                    e.channel = Some(Channel::Retail);
                    e.agent = Some(agent.clone());
                    self.queue.push_back(e);
                }
            }
            3 => {
                // A stolen device is blocked, then used for a SIM swap.
                let stolen = imei(s, 900 + self.rng.below(50) as u32);
                let mut block = Event::empty(Kind::ListAdd);
                block.at = Some(self.at());
                // Invariant: the contract's list name is a valid token.
                block.list =
                    Some(Token::parse(crate::contract::BLOCKED_IMEI_LIST).expect("list name"));
                block.value = Some(stolen.to_string().into());
                self.queue.push_back(block);
                let mut e = self.sim_swap(s);
                e.imei = Some(stolen);
                self.queue.push_back(e);
            }
            _ => {
                // A SIM no request explains, then a port-out.
                self.subs[s as usize].sim += 1;
                let e = self.device_seen(s);
                self.queue.push_back(e);
                let e = self.port_out(s, true);
                self.queue.push_back(e);
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        let gap = self.rng.below(2 * self.cfg.mean_gap_ms + 1) as i64;
        self.now_ms += gap;
        let at = self.at();
        if let Some(mut e) = self.queue.pop_front() {
            e.at = Some(at);
            return Some(e);
        }
        if self.rng.below(10_000) < u64::from(self.cfg.attacks_per_10k) {
            self.attack();
            if let Some(mut e) = self.queue.pop_front() {
                e.at = Some(at);
                return Some(e);
            }
        }
        Some(self.ordinary())
    }
}

/// Writes `n` events as JSON lines.
pub fn write<W: Write>(cfg: &Config, n: u64, w: &mut W) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for ev in Generator::new(cfg.clone()).take(n as usize) {
        ev.write_json(&mut buf);
        if buf.len() > (1 << 16) - 512 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
}

/// What `portcullis gen` was asked for.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    pub events: u64,
    pub subscribers: u32,
    /// Share of events that begin an attack story.
    pub attacks: f64,
    pub out: Option<PathBuf>,
    pub labels: Option<PathBuf>,
}

/// `portcullis gen`.
pub fn command(o: &GenOptions) -> ExitCode {
    let (seed, events, subscribers, out) = (o.seed, o.events, o.subscribers, o.out.as_deref());
    let cfg = Config {
        seed,
        subscribers,
        ..Config::default()
    };
    let result = match out {
        Some(p) => std::fs::File::create(p).and_then(|f| {
            let mut w = io::BufWriter::with_capacity(1 << 16, f);
            write(&cfg, events, &mut w)?;
            w.flush()
        }),
        None => {
            let stdout = io::stdout();
            let mut w = io::BufWriter::with_capacity(1 << 16, stdout.lock());
            write(&cfg, events, &mut w).and_then(|_| w.flush())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen: {e}");
            ExitCode::FAILURE
        }
    }
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
}
