//! One decision against a warm history of 100k subscribers, history update
//! included: the default ruleset (target: median at most 1.5 us) and a
//! synthetic 50-rule set (at most 3 us).
//!
//! `decide_warm_100k` is the measure of those targets: after 1M events of
//! generated traffic warm the history, the same generator goes on, every
//! event is handled, and each request (a decision kind) is timed alone. The
//! history stays what traffic on 100k subscribers makes it, and the
//! requests are the ones that traffic sends, attacks included.
//!
//! `decide_hammer_100k` is a stress case beside it: a SIM swap, eSIM
//! transfer or port-out on a random subscriber every second, with nothing
//! else. At that rate each line gets a SIM change or port about once a day,
//! a hundred times a carrier's rate, so the lines' windows fill far beyond
//! what traffic leaves in them; it shows how decisions degrade as history
//! piles up.
//!
//! Also the engine alone over 1M pre-parsed events, to see what replay
//! spends outside parsing.
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portcullis::contract::{Channel, Event, Kind, Timestamp};
use portcullis::engine::{Engine, EngineLimits};
use portcullis::rules::{CompiledRules, Limits};
use portcullis::traffic::{self, Config, Generator, Rng};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBSCRIBERS: u32 = 100_000;
const WARM_EVENTS: usize = 1_000_000;

/// Records and holds bounded so that the measurement is of steady state
/// (tables at their size, reused), not of tables growing: the last 200k to
/// 400k decisions (two to four days at one a second) stay in memory for
/// retries, and up to 20k requests wait on hold (a day's holds).
fn limits() -> EngineLimits {
    EngineLimits {
        decision_records_max: 400_000,
        holds_pending_max: 20_000,
    }
}

fn warm(rules: Arc<CompiledRules>) -> (Engine, Generator, Timestamp) {
    let mut engine = Engine::with_limits(rules, limits());
    let cfg = Config {
        subscribers: SUBSCRIBERS,
        ..Config::default()
    };
    let mut traffic = Generator::new(cfg);
    let mut last = Timestamp::MIN;
    for ev in traffic.by_ref().take(WARM_EVENTS) {
        last = ev.at.unwrap_or(last);
        black_box(engine.handle(&ev, last));
    }
    (engine, traffic, last)
}

/// A fresh request on a random warm subscriber: a SIM swap, an eSIM
/// transfer or a port-out, as the back office sends them.
fn request(rng: &mut Rng, seq: u64) -> Event {
    let s = rng.below(u64::from(SUBSCRIBERS)) as u32;
    let kind = [Kind::SimSwap, Kind::EsimTransfer, Kind::PortOut][rng.below(3) as usize];
    let mut e = Event::empty(kind);
    e.id = Some(format!("bench-{seq}").into());
    e.msisdn = Some(traffic::msisdn(s));
    e.account = Some(traffic::account(s));
    e.channel = Some(Channel::Retail);
    e.agent =
        Some(portcullis::contract::ident::Token::parse(&format!("ag{}", rng.below(500))).unwrap());
    match kind {
        Kind::SimSwap => {
            e.iccid = Some(traffic::iccid(s, 900));
            e.imei = Some(traffic::imei(s, 0));
        }
        Kind::EsimTransfer => {
            e.eid = Some(traffic::eid(s, 900));
            e.imei = Some(traffic::imei(s, 0));
        }
        _ => e.pin_ok = Some(true),
    }
    e
}

/// Fifty rules: the default thirteen, then 37 more of the shapes fraud teams
/// add (see the file's header).
const FIFTY_RULES: &str = include_str!("data/fifty.rules");

fn rulesets() -> [(&'static str, Arc<CompiledRules>); 2] {
    let default = Arc::new(CompiledRules::default_rules());
    let fifty = Arc::new(
        CompiledRules::compile("fifty.rules", FIFTY_RULES, &Limits::default())
            .expect("fifty rules compile"),
    );
    assert_eq!(fifty.rules.len(), 50);
    [("default_13_rules", default), ("synthetic_50_rules", fifty)]
}

/// Traffic goes on after the warm-up; each request is timed alone (two
/// clock reads, some 40 ns, count against it), signals are handled untimed.
fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_warm_100k");
    for (name, rules) in rulesets() {
        let (mut engine, mut traffic, mut last) = warm(rules);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut decided = 0;
                while decided < iters {
                    // Invariant: the generator never ends.
                    let ev = traffic.next().expect("endless traffic");
                    last = ev.at.unwrap_or(last);
                    if ev.kind.is_decision() {
                        let t = Instant::now();
                        black_box(engine.handle(&ev, last));
                        timed += t.elapsed();
                        decided += 1;
                    } else {
                        black_box(engine.handle(&ev, last));
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

/// The stress case: a request on a random subscriber every second.
fn hammer(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_hammer_100k");
    for (name, rules) in rulesets() {
        let (mut engine, _, start) = warm(rules);
        let mut rng = Rng::new(7);
        let mut seq = 0u64;
        let mut now = start.as_nanos();
        g.bench_function(name, |b| {
            // The caller owns its request: building and freeing it are not
            // part of the decision (iter_batched_ref drops inputs untimed).
            b.iter_batched_ref(
                || {
                    seq += 1;
                    // One request a second: a busy carrier's national rate of
                    // SIM changes and ports, so agents' hourly windows hold
                    // what they would in production.
                    now += 1_000_000_000;
                    (
                        request(&mut rng, seq),
                        Timestamp::from_nanos(now).unwrap_or(start),
                    )
                },
                |(ev, at)| black_box(engine.handle(ev, *at)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn engine_only(c: &mut Criterion) {
    let rules = Arc::new(CompiledRules::default_rules());
    let cfg = Config {
        subscribers: SUBSCRIBERS,
        ..Config::default()
    };
    let events: Vec<Event> = Generator::new(cfg).take(WARM_EVENTS).collect();
    let mut g = c.benchmark_group("engine_only_1m");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("handle_pre_parsed", |b| {
        b.iter(|| {
            let mut engine = Engine::new(rules.clone());
            for ev in &events {
                black_box(engine.handle(ev, ev.at.unwrap_or(Timestamp::MIN)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decide, hammer, engine_only);
criterion_main!(benches);

/// The same allocator as the `portcullis` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
