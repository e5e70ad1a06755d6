//! One decision against a warm history of 100k subscribers, history update
//! included: the default ruleset (target: median at most 1.5 us) and a
//! synthetic 50-rule set (at most 3 us). Also the engine alone over 1M
//! pre-parsed events, to see what replay spends outside parsing.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portcullis::contract::{Channel, Event, Kind, Timestamp};
use portcullis::engine::{Engine, EngineLimits};
use portcullis::rules::{CompiledRules, Limits};
use portcullis::traffic::{self, Config, Generator, Rng};
use std::hint::black_box;
use std::sync::Arc;

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

fn warm(rules: Arc<CompiledRules>) -> (Engine, Timestamp) {
    let mut engine = Engine::with_limits(rules, limits());
    let cfg = Config {
        subscribers: SUBSCRIBERS,
        ..Config::default()
    };
    let mut last = Timestamp::MIN;
    for ev in Generator::new(cfg).take(WARM_EVENTS) {
        last = ev.at.unwrap_or(last);
        black_box(engine.handle(&ev, last));
    }
    (engine, last)
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
/// add (other thresholds and windows, other entities, filters, shadow
/// drafts), with windows sized to each entity's traffic: lines and accounts
/// up to 90 days, agents and stores up to a day.
pub fn fifty_rules() -> String {
    let mut src = portcullis::rules::DEFAULT_RULES.to_string();
    let long = ["7d", "14d", "30d", "60d", "90d"];
    let short = ["15m", "1h", "4h", "12h", "24h"];
    for i in 0..37usize {
        let (l, s) = (long[i % long.len()], short[i % short.len()]);
        let n = 2 + i % 7;
        let body = match i % 8 {
            0 => format!("kind is port_out and count(auth_failure on account within {s}) >= {n}"),
            1 => format!(
                "kind in [sim_swap, esim_transfer] and count(completed [sim_swap, esim_transfer, unapproved_sim_change] on line within {l}) >= {n}"
            ),
            2 => format!(
                "kind in [sim_swap, esim_transfer] and distinct(msisdn of [sim_swap, esim_transfer] on store within {s}) >= {}",
                10 + n
            ),
            3 => format!(
                "kind is port_out and exists(completed account_change on account within {l} where change in [email, pin])"
            ),
            4 => format!(
                "kind in [esim_transfer, port_out] and channel in [online, app] and since(device_seen on line within {l} where new_device) < 2h"
            ),
            5 => format!(
                "kind is port_out and (count(port_out on account within {s} where pin_ok is false) >= {n} or exists(fraud_report on account within {l}))"
            ),
            6 => format!(
                "kind in [sim_swap, esim_transfer] and count([sim_swap, esim_transfer] on agent within {s} where decision is deny) >= {n}"
            ),
            _ => format!(
                "kind is account_change and change in [email, password] and exists(completed [sim_swap, esim_transfer] on line within {l})"
            ),
        };
        let action = match i % 5 {
            0 => "deny",
            4 => "shadow hold verify analyst_review",
            _ => "hold verify analyst_review",
        };
        src.push_str(&format!("\nrule extra_{i}\n  {action}\n  when {body}\n"));
    }
    src
}

fn decide(c: &mut Criterion) {
    let default = Arc::new(CompiledRules::default_rules());
    let fifty = Arc::new(
        CompiledRules::compile("fifty.rules", &fifty_rules(), &Limits::default())
            .expect("fifty rules compile"),
    );
    assert_eq!(fifty.rules.len(), 50);
    let mut g = c.benchmark_group("decide_warm_100k");
    for (name, rules) in [("default_13_rules", default), ("synthetic_50_rules", fifty)] {
        let (mut engine, start) = warm(rules);
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

criterion_group!(benches, decide, engine_only);
criterion_main!(benches);

/// The same allocator as the `portcullis` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
