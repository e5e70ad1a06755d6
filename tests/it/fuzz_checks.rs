//! The properties the fuzz targets check, in one copy: `fuzz/fuzz_targets/*.rs`
//! include this file by path, and `fuzz_corpus.rs` replays the committed
//! corpus and regressions through the same functions on stable Rust.
//!
//! Each check takes arbitrary bytes and panics when a property fails.

use portcullis::contract::{AtRule, Event, parse_line};
use portcullis::rules::{CompiledRules, Limits};
use portcullis::transport::frame::{
    FRAME_BYTES_MAX_LIMIT, FrameDecoder, FrameError, LENGTH_BYTES, split_frame,
};
use portcullis::transport::wire::{Request, parse_request};

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
