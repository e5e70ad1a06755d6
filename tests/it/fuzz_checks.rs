//! The properties the fuzz targets check, in one copy: `fuzz/fuzz_targets/*.rs`
//! include this file by path, and `fuzz_corpus.rs` replays the committed
//! corpus and regressions through the same functions on stable Rust.
//!
//! Each check takes arbitrary bytes and panics when a property fails.

use portcullis::contract::LIST_VALUE_CHARS_MAX;
use portcullis::contract::{AtRule, Event, Timestamp, parse_line};
use portcullis::edge::quic::frame::{
    FRAME_BYTES_MAX_LIMIT, FrameDecoder, FrameError, LENGTH_BYTES, split_frame,
};
use portcullis::edge::quic::wire::{Request, parse_request};
use portcullis::engine::stored::{AdmitError, record_written_at};
use portcullis::engine::{Engine, ReloadError};
use portcullis::files::read_list;
use portcullis::history::codec::decode;
use portcullis::keys::{Keys, sealed_key_id};
use portcullis::rules::{CompiledRules, Limits};
use portcullis::server::{FileConfig, quic_transport};
use std::sync::{Arc, OnceLock};

/// The `await_timeout_ms_max` the wire check passes to `parse_request`.
pub const AWAIT_TIMEOUT_MS_MAX: u64 = 60_000;

/// How a frame input is laid out: 2 bytes of `frame_bytes_max` (little
/// endian; 0 means the default decoder, 65536), 1 byte giving the count of
/// chunk sizes (`n % 8 + 1`), that many chunk-size bytes (below 0x80: 1 to
/// 128 bytes; from 0x80: 1 to 128 KiB), then the stream.
pub struct FrameInput<'a> {
    pub frame_bytes_max: usize,
    pub chunks: Vec<usize>,
    pub stream: &'a [u8],
}

impl<'a> FrameInput<'a> {
    /// Splits fuzz bytes into a limit, chunk sizes and a stream; `None` when
    /// the header is incomplete.
    pub fn read(data: &'a [u8]) -> Option<FrameInput<'a>> {
        let (&[lo, hi, count], rest) = data.split_first_chunk::<3>()?;
        let raw = u16::from_le_bytes([lo, hi]);
        let frame_bytes_max = match raw {
            0 => FRAME_BYTES_MAX_LIMIT,
            n => usize::from(n),
        };
        let k = usize::from(count % 8) + 1;
        let (sizes, stream) = (rest.get(..k)?, rest.get(k..)?);
        let chunks = sizes
            .iter()
            .map(|&b| {
                if b & 0x80 == 0 {
                    usize::from(b) + 1
                } else {
                    (usize::from(b & 0x7f) + 1) * 1024
                }
            })
            .collect();
        Some(FrameInput {
            frame_bytes_max,
            chunks,
            stream,
        })
    }
}

/// An independent model of the framing: the frames at the start of
/// `stream`, the first error, and the bytes left over after the last frame
/// (when there is no error).
fn model(stream: &[u8], max: usize) -> (Vec<&[u8]>, Option<FrameError>, usize) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= LENGTH_BYTES {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if n == 0 {
            return (frames, Some(FrameError::Empty), 0);
        }
        if n as usize > max {
            let e = FrameError::TooLong {
                len: u64::from(n),
                max,
            };
            return (frames, Some(e), 0);
        }
        let end = LENGTH_BYTES + n as usize;
        if rest.len() < end {
            break;
        }
        frames.push(&rest[LENGTH_BYTES..end]);
        rest = &rest[end..];
    }
    (frames, None, rest.len())
}

/// `split_frame` on `input` agrees with the model on the first frame.
pub fn check_split_frame(input: &[u8], max: usize) {
    let got = split_frame(input, max);
    let (frames, err, _) = model(input, max);
    match got {
        Ok(Some((body, used))) => {
            assert_eq!(frames.first(), Some(&body), "split_frame's body");
            assert_eq!(used, LENGTH_BYTES + body.len());
            assert!(!body.is_empty() && body.len() <= max);
            assert_eq!(&input[LENGTH_BYTES..used], body);
        }
        Ok(None) => assert!(frames.is_empty() && err.is_none(), "split_frame said wait"),
        Err(e) => assert!(frames.is_empty() && err == Some(e), "split_frame's {e:?}"),
    }
}

/// Feeds the stream to a `FrameDecoder` in the input's chunk sizes and checks
/// it never panics, never holds more than one maximal frame, makes progress,
/// returns bodies of 1 to `max` bytes, stops for good after a fatal error,
/// and agrees with the model (and so with one push of everything).
pub fn check_frame(data: &[u8]) {
    let Some(input) = FrameInput::read(data) else {
        check_split_frame(data, FRAME_BYTES_MAX_LIMIT);
        return;
    };
    let max = input.frame_bytes_max;
    check_split_frame(input.stream, max);
    check_split_frame(data, max);
    let mut dec = if max == FRAME_BYTES_MAX_LIMIT {
        FrameDecoder::default()
    } else {
        FrameDecoder::new(max).expect("1..=65535 is a valid frame_bytes_max")
    };
    assert_eq!(dec.frame_bytes_max(), max);
    let window = LENGTH_BYTES + max;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut err: Option<FrameError> = None;
    let mut rest = input.stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = input.chunks[i % input.chunks.len()].min(rest.len());
        i += 1;
        let mut piece = &rest[..n];
        rest = &rest[n..];
        while !piece.is_empty() {
            let was_finished = dec.is_finished();
            let used = dec.push(piece);
            assert!(used <= piece.len(), "push took {used} of {}", piece.len());
            if was_finished {
                assert_eq!(used, piece.len(), "a finished decoder takes everything");
            }
            piece = &piece[used..];
            assert!(
                dec.buffered() <= window,
                "{} bytes buffered, over {window}",
                dec.buffered()
            );
            let mut got = false;
            while let Some(f) = dec.next() {
                got = true;
                assert!(err.is_none(), "output after the error {err:?}");
                match f {
                    Ok(body) => {
                        assert!(
                            !body.is_empty() && body.len() <= max,
                            "a body of {} bytes, max {max}",
                            body.len()
                        );
                        frames.push(body.to_vec());
                    }
                    Err(e) => {
                        assert!(e.is_fatal(), "next returned {e:?}");
                        assert!(dec.is_finished());
                        assert_eq!(dec.buffered(), 0);
                        err = Some(e);
                    }
                }
            }
            assert!(
                used > 0 || got || piece.is_empty(),
                "push took nothing and next had nothing: stuck"
            );
        }
    }
    let (want, want_err, left) = model(input.stream, max);
    assert_eq!(err, want_err, "the first error");
    assert_eq!(frames.len(), want.len(), "the number of frames");
    for (a, b) in frames.iter().zip(&want) {
        assert_eq!(a.as_slice(), *b);
    }
    if err.is_some() {
        assert!(dec.is_finished());
        assert_eq!(dec.next(), None);
        assert_eq!(dec.push(b"more"), 4);
        assert_eq!(dec.next(), None);
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.end(), Ok(()));
    } else {
        assert!(!dec.is_finished());
        assert_eq!(dec.buffered(), left);
        match left {
            0 => assert_eq!(dec.end(), Ok(())),
            n => assert_eq!(dec.end(), Err(FrameError::Truncated { buffered: n })),
        }
    }
}

/// An accepted event is written back by `write_json` as a line that parses
/// to the same event, with the same canonical form, which reads back as the
/// event less its `at`.
fn check_accepted(line: &str, ev: &Event, rule: AtRule) {
    if rule == AtRule::Required {
        assert!(ev.at.is_some(), "{line:?}: accepted without at");
    }
    let mut buf = Vec::new();
    ev.write_json(&mut buf);
    let text = String::from_utf8(buf).expect("write_json writes UTF-8");
    let body = text.strip_suffix('\n').expect("write_json ends the line");
    assert!(!body.contains('\n'), "write_json wrote two lines: {text:?}");
    let back = parse_line(body, rule);
    assert_eq!(back.as_ref(), Ok(ev), "{line:?} wrote {text:?}");
    let canonical = ev.canonical();
    assert_eq!(back.map(|b| b.canonical()).ok(), Some(canonical.clone()));
    let mut without_at = ev.clone();
    without_at.at = None;
    assert_eq!(
        Event::from_canonical(&canonical),
        Some(without_at),
        "{line:?}: the canonical form reads back"
    );
}

/// `parse_line` under both `at` rules and `parse_request` never panic; what
/// they accept round-trips and agrees between them.
pub fn check_event(data: &[u8]) {
    let wire = parse_request(data, AWAIT_TIMEOUT_MS_MAX);
    let Ok(line) = std::str::from_utf8(data) else {
        assert!(wire.is_err(), "parse_request took a body that is not UTF-8");
        return;
    };
    let required = parse_line(line, AtRule::Required);
    let optional = parse_line(line, AtRule::Optional);
    match (&required, &optional) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{line:?}: the at rule changed the event"),
        (Ok(_), Err(e)) => panic!("{line:?}: required at accepts, optional refuses: {e}"),
        _ => {}
    }
    for (res, rule) in [(&required, AtRule::Required), (&optional, AtRule::Optional)] {
        match res {
            Ok(ev) => check_accepted(line, ev, rule),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    match (&wire, &optional) {
        (Ok(Request::Event(w)), Ok(ev)) => assert_eq!(w, ev, "{line:?}: wire and contract"),
        (Ok(Request::Event(_)), Err(e)) => {
            panic!("{line:?}: wire took an event the contract refused: {e}")
        }
        (Ok(Request::Await { timeout_ms, .. }), _) => {
            assert!(
                optional.is_err(),
                "{line:?}: an await that is also an event"
            );
            assert!(*timeout_ms <= AWAIT_TIMEOUT_MS_MAX);
        }
        (Err(_), Ok(ev)) => panic!("{line:?}: wire refused the event {ev:?}"),
        (Err(_), Err(_)) => {}
    }
}

/// Compiling any rules source never panics.
pub fn check_rules(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match CompiledRules::compile("fuzz.rules", src, &Limits::default()) {
        Ok(_) => {}
        Err(errors) => assert!(!errors.is_empty(), "refused with no error"),
    }
}

/// What an operator hands the service in files: the first byte chooses
/// (even: the TOML config; odd: a list file, the second byte giving its
/// `values_max`, 1 to 256), the rest is the file.
///
/// A config that parses and whose limits pass `ServiceLimits::check` builds the
/// QUIC transport settings without panicking. A list file is read as
/// `serve` and `replay` read one: its values are non-empty, trimmed, hold
/// no `#`, are at most `LIST_VALUE_CHARS_MAX` characters, come from
/// increasing lines and number at most `values_max`; a refusal names the
/// file and a line. Then the engine reloads the default rules with them as
/// `blocked_imei`, refusing only a value that is not an IMEI, at its line.
pub fn check_files(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        check_config(rest);
    } else if let Some((&max, file)) = rest.split_first() {
        check_list_file(file, usize::from(max) + 1);
    }
}

fn check_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(config) = FileConfig::parse(text) else {
        return;
    };
    if config.limits.check().is_ok() {
        let _ = quic_transport(&config.limits);
    }
}

fn check_list_file(file: &[u8], values_max: usize) {
    let values = match read_list(file, "fuzz.txt", values_max) {
        Ok(values) => values,
        Err(e) => {
            let e = e.to_string();
            let line = e
                .strip_prefix("fuzz.txt:")
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok());
            assert!(
                line.is_some_and(|n| n >= 1),
                "a refusal without a line: {e}"
            );
            return;
        }
    };
    assert!(values.len() <= values_max, "{} values", values.len());
    let mut last = 0;
    for v in &values {
        assert!(v.line > last, "line {} after {last}", v.line);
        last = v.line;
        assert!(
            !v.value.is_empty() && !v.value.contains('#'),
            "{:?}",
            v.value
        );
        assert_eq!(v.value.trim(), v.value, "untrimmed");
        assert!(
            v.value.chars().count() <= LIST_VALUE_CHARS_MAX,
            "{:?}",
            v.value
        );
    }
    let rules = stored_world().0.clone();
    let mut engine = Engine::new(rules.clone());
    match engine.reload(rules, &[("blocked_imei".to_string(), values.clone())]) {
        Ok(_) => {
            let kept = engine.history().list_len("blocked_imei");
            assert!(kept <= values.len(), "{kept} kept of {}", values.len());
        }
        Err(ReloadError::ListValue { line, .. }) => {
            assert!(values.iter().any(|v| v.line == line), "line {line}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

/// How a `stored` input is laid out: 1 byte choosing the decoder (mod 4:
/// an entity state, a record, a hold, a sealed value), then for a record or
/// a hold its 16-byte key, then the stored bytes.
pub const STORED_KINDS: u8 = 4;

/// What the engine does with a state read back from the store: bytes the
/// store returns went through AES-GCM, so they were written by a service,
/// but maybe by an older or broken one. Whatever the bytes, decoding and
/// admitting never panic; an entity state the decoder accepts re-encodes
/// to a form that decodes to the same encoding; and an engine holding an
/// admitted state, record or hold goes on deciding the sample trace.
pub fn check_stored(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % STORED_KINDS {
        0 => check_stored_entity(rest),
        1 => check_stored_record(rest),
        2 => check_stored_hold(rest),
        _ => check_sealed(rest),
    }
}

/// The sample trace's first events and the default rules, parsed once.
fn stored_world() -> &'static (Arc<CompiledRules>, Vec<Event>) {
    static WORLD: OnceLock<(Arc<CompiledRules>, Vec<Event>)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let src = include_str!("../../rules/default.rules");
        let rules = CompiledRules::compile("default.rules", src, &Limits::default())
            .expect("the default rules compile");
        let events = include_str!("../../samples/trace.jsonl")
            .lines()
            .take(STORED_EVENTS)
            .map(|l| parse_line(l, AtRule::Required).expect("a sample event"))
            .collect();
        (Arc::new(rules), events)
    })
}

/// Events of the sample trace each stored input is decided against.
pub const STORED_EVENTS: usize = 200;

/// Decides the sample events on `engine`, each at its own time.
fn decide_samples(engine: &mut Engine) {
    for ev in &stored_world().1 {
        // Invariant: the sample trace's events all carry `at`.
        let now = ev.at.expect("a sample event with at");
        let _ = engine.handle(ev, now);
    }
}

fn stored_engine() -> Engine {
    let mut engine = Engine::new(stored_world().0.clone());
    engine.track_changes();
    engine
}

fn check_stored_entity(bytes: &[u8]) {
    let decoded = decode(bytes);
    if let Ok(d) = &decoded {
        let mut once = Vec::new();
        d.encode(&mut once);
        let again = decode(&once).unwrap_or_else(|e| panic!("a re-encoded state: {e}"));
        let mut twice = Vec::new();
        again.encode(&mut twice);
        assert_eq!(once, twice, "re-encoding is not stable");
    }
    let mut engine = stored_engine();
    let now = Timestamp::parse("2026-06-01T00:00:00Z").expect("a time");
    if let Ok(Some(pruned)) = engine.prune_encoded(bytes, now)
        && !pruned.is_empty()
    {
        decode(&pruned).unwrap_or_else(|e| panic!("a pruned state: {e}"));
    }
    // Admitting refuses what does not decode, and of what does, only a
    // state laid out by a ruleset the engine does not hold.
    match (engine.admit_entity(bytes), decoded) {
        (Ok(()), Ok(_)) | (Err(AdmitError::Entity(_)), Err(_)) => {}
        (Err(AdmitError::UnknownRuleset(n)), Ok(d)) => assert_eq!(n, d.ruleset),
        (admitted, decoded) => {
            panic!("admitting ({admitted:?}) and decoding ({decoded:?}) disagree")
        }
    }
    decide_samples(&mut engine);
    engine.prune_part(now, 0, 1);
    let mut changes = Default::default();
    engine.take_changes(&mut changes);
    for id in &changes.entities {
        let mut out = Vec::new();
        if engine.encode_entity(id, &mut out) {
            decode(&out).unwrap_or_else(|e| panic!("a state the engine wrote: {e}"));
        }
    }
}

/// The 16-byte key at the front of `rest` (zero-padded) and what follows.
fn keyed(rest: &[u8]) -> ([u8; 16], &[u8]) {
    let n = rest.len().min(16);
    let mut key = [0u8; 16];
    key[..n].copy_from_slice(&rest[..n]);
    (key, &rest[n..])
}

fn check_stored_record(rest: &[u8]) {
    let (key, bytes) = keyed(rest);
    let _ = record_written_at(bytes);
    let mut engine = stored_engine();
    let _ = engine.admit_record(key, bytes);
    decide_samples(&mut engine);
}

fn check_stored_hold(rest: &[u8]) {
    let (key, bytes) = keyed(rest);
    // A hold keeps its request's canonical form after an 8-byte number.
    if let Some(ev) = bytes.get(8..).and_then(Event::from_canonical) {
        let canonical = &bytes[8..];
        let again = ev.canonical();
        // The reader takes forms the writer never gives (fields in another
        // order or twice, numbers in fewer bytes): compare what they read
        // back to.
        if again != canonical {
            let back = Event::from_canonical(&again).expect("a canonical form reads back");
            assert_eq!(back, ev, "a canonical form read back is another event");
        }
    }
    let mut engine = stored_engine();
    let _ = engine.admit_hold(key, bytes);
    engine.holds_admitted();
    decide_samples(&mut engine);
}

/// Opening arbitrary bytes as a sealed value is an error, never a panic
/// (and never a success: the keys are fixed and the bytes are not theirs,
/// unless they are a value these keys sealed).
fn check_sealed(bytes: &[u8]) {
    let keys = Keys::from_secrets(&[1; 32], &[(1, [2; 32]), (7, [3; 32])]).expect("fuzz keys");
    let _ = sealed_key_id(bytes);
    if let Ok(plain) = keys.open(b"fuzz", bytes) {
        let resealed = keys.seal(b"fuzz", &plain).expect("a seal");
        assert_eq!(
            keys.open(b"fuzz", &resealed).expect("an open"),
            plain,
            "a value sealed again opens to something else"
        );
    }
}
