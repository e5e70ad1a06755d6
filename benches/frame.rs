//! The wire codec's cost per frame (`src/edge/quic/`): encoding and decoding
//! a typical request frame (a `sim_swap` of 271 bytes) and a decision
//! response, and the whole sans-IO path of one request body (parse) and one
//! answer (write and frame). The service spends this on every request beside
//! the engine's decision, so it should stay well under the decision's
//! microsecond.
//!
//! Decoding is measured both from one chunk per frame and from a batch of
//! 64 frames in one push, as a QUIC stream hands them over. `worst_frame`
//! times hostile bodies of the largest frame: objects at the key bound
//! nested to fill it, and one object of as many keys as fit (refused at
//! `KEYS_PER_OBJECT_MAX`); each should cost under 1 ms.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::contract::{AtRule, KEYS_PER_OBJECT_MAX, parse_line};
use portcullis::edge::quic::frame::{
    FRAME_BYTES_MAX_LIMIT, FrameDecoder, begin_frame, encode, end_frame,
};
use portcullis::edge::quic::wire::{AWAIT_TIMEOUT_MS_MAX_DEFAULT, decision_body, parse_request};
use portcullis::engine::Decided;
use portcullis::rules::{CompiledRules, Outcome};
use std::hint::black_box;

/// A request as back offices send them, every optional field set: 271 bytes.
const REQUEST: &str = r#"{"id":"swap-7f3a9c21-2026-03-01-retail-0042","kind":"sim_swap","at":"2026-03-01T10:00:00.125Z","msisdn":"+447700900123","account":"ACC-100245","iccid":"8944110000000000008","imsi":"234150123456789","imei":"260531793113837","channel":"retail","agent":"dlr-ny-0093:jsmith"}"#;

fn decision() -> (Decided, CompiledRules) {
    let rules = CompiledRules::default_rules();
    let d = Decided {
        outcome: Outcome::Hold,
        // Two matched hold rules (bits 4 and 5 of the default set).
        matched: 0b11_0000,
        shadow: 0,
        ruleset: 0,
        retry: false,
    };
    (d, rules)
}

fn frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let body = REQUEST.as_bytes();
    let mut framed = Vec::new();
    encode(body, &mut framed).expect("a small body frames");

    g.throughput(Throughput::Bytes(framed.len() as u64));
    g.bench_function("encode_request", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            encode(black_box(body), &mut out).expect("a small body frames");
            black_box(out.len())
        })
    });
    g.bench_function("decode_request", |b| {
        let mut dec = FrameDecoder::default();
        b.iter(|| {
            dec.push(black_box(&framed));
            black_box(dec.next())
        })
    });

    let batch: Vec<u8> = std::iter::repeat_n(&framed[..], 64)
        .flatten()
        .copied()
        .collect();
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("decode_request_x64_one_push", |b| {
        let mut dec = FrameDecoder::default();
        b.iter(|| {
            dec.push(black_box(&batch));
            let mut n = 0;
            while let Some(f) = dec.next() {
                n += black_box(f).map_or(0, |b| b.len());
            }
            n
        })
    });

    let (d, rules) = decision();
    let mut resp = Vec::new();
    decision_body(
        "swap-7f3a9c21-2026-03-01-retail-0042",
        &d,
        &rules,
        &mut resp,
    );
    let mut resp_framed = Vec::new();
    encode(&resp, &mut resp_framed).expect("a decision frames");
    g.throughput(Throughput::Bytes(resp_framed.len() as u64));
    g.bench_function("encode_decision_in_place", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            let start = begin_frame(&mut out);
            decision_body(
                black_box("swap-7f3a9c21-2026-03-01-retail-0042"),
                &d,
                &rules,
                &mut out,
            );
            end_frame(&mut out, start, 65536).expect("a decision frames");
            black_box(out.len())
        })
    });
    g.bench_function("decode_decision", |b| {
        let mut dec = FrameDecoder::default();
        b.iter(|| {
            dec.push(black_box(&resp_framed));
            black_box(dec.next())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_request", |b| {
        b.iter(|| black_box(parse_request(black_box(body), AWAIT_TIMEOUT_MS_MAX_DEFAULT)))
    });
    // The contract's own parser alone, for the wire's overhead beside it.
    g.bench_function("contract_parse_line", |b| {
        b.iter(|| black_box(parse_line(black_box(REQUEST), AtRule::Optional)))
    });
    g.bench_function("decode_and_parse_request", |b| {
        let mut dec = FrameDecoder::default();
        b.iter(|| {
            dec.push(black_box(&framed));
            let f = dec.next().and_then(Result::ok).expect("a whole frame");
            black_box(parse_request(&f, AWAIT_TIMEOUT_MS_MAX_DEFAULT))
        })
    });
    g.finish();
}

/// The most keys an object may hold (`KEYS_PER_OBJECT_MAX`), as short keys,
/// nested objects filling a frame of the largest `frame_bytes_max`: the
/// most key comparisons a frame the reader accepts can cost.
fn worst_accepted_frame() -> String {
    let object: String = {
        let keys: Vec<String> = (0..KEYS_PER_OBJECT_MAX)
            .map(|i| format!("\"k{i}\":0"))
            .collect();
        format!("{{{}}}", keys.join(","))
    };
    let mut line = String::from(r#"{"kind":"auth_failure","account":"A1","x":["#);
    while line.len() + object.len() + 3 < FRAME_BYTES_MAX_LIMIT {
        line.push_str(&object);
        line.push(',');
    }
    line.pop();
    line.push_str("]}");
    line
}

/// One object of as many keys as fit a frame: before `KEYS_PER_OBJECT_MAX`,
/// about 8,464 keys compared each with all before it.
fn one_object_of_keys() -> String {
    let mut line = String::from("{");
    let mut i = 0;
    while line.len() < FRAME_BYTES_MAX_LIMIT - 16 {
        line.push_str(&format!("\"{i:x}\":0,"));
        i += 1;
    }
    line.pop();
    line.push('}');
    line
}

/// Hostile frames of the largest size: what one costs the service to
/// refuse or read, against the target of 1 ms.
fn worst(c: &mut Criterion) {
    let mut g = c.benchmark_group("worst_frame");
    g.throughput(Throughput::Elements(1));
    let nested = worst_accepted_frame();
    assert!(nested.len() <= FRAME_BYTES_MAX_LIMIT);
    g.bench_function("nested_objects_at_the_key_bound", |b| {
        b.iter(|| {
            black_box(parse_request(
                black_box(nested.as_bytes()),
                AWAIT_TIMEOUT_MS_MAX_DEFAULT,
            ))
        })
    });
    let flat = one_object_of_keys();
    g.bench_function("one_object_of_8k_keys", |b| {
        b.iter(|| {
            black_box(parse_request(
                black_box(flat.as_bytes()),
                AWAIT_TIMEOUT_MS_MAX_DEFAULT,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, frame, worst);
criterion_main!(benches);
