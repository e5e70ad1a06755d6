//! Length-prefixed frames (see `proto/wire.md`), sans-IO.
//!
//! A frame is a 4-byte unsigned big-endian length `N`, then `N` bytes of
//! body, with `1 <= N <= frame_bytes_max` (at most [`FRAME_BYTES_MAX_LIMIT`]).
//! Requests and responses use the same framing and the same limit.
//!
//! The decoder takes bytes as they arrive from a stream, in chunks of any
//! size, and hands back whole bodies. Its memory is bounded whatever a peer
//! sends: the length prefix is checked the moment its 4 bytes are in, before
//! anything is reserved for the body, and the decoder never buffers more
//! than one maximal frame (`4 + frame_bytes_max` bytes) of unread input, so
//! a peer that announces 4 GiB gets an error, not an allocation. A length of
//! 0 or over the limit is an error after which the decoder is finished: the
//! bytes after such a prefix cannot be trusted to start a frame, so the
//! stream cannot be resynchronised and is to be closed (the server answers
//! `bad_frame`, finishes its side and stops reading).
//!
//! This module does no I/O and never panics on any input.

use bytes::Bytes;
use std::fmt;

/// The largest `frame_bytes_max` there may be: the default, and an upper
/// bound a configuration cannot raise. It keeps one stream's buffer at
/// 64 KiB and makes every length fit the 4-byte prefix with room to spare.
pub const FRAME_BYTES_MAX_LIMIT: usize = 65536;

/// The default `frame_bytes_max`.
pub const FRAME_BYTES_MAX_DEFAULT: usize = FRAME_BYTES_MAX_LIMIT;

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix of 0: a frame holds one JSON object, never nothing.
    Empty,
    /// A length prefix (or a body to encode) over `max` bytes.
    TooLong { len: u64, max: usize },
    /// The stream ended `buffered` bytes into a frame (prefix included).
    Truncated { buffered: usize },
}

impl FrameError {
    /// True for the errors after which the stream cannot go on
    /// ([`FrameError::Empty`], [`FrameError::TooLong`]); a truncated frame
    /// is only found at the end of the stream anyway.
    pub const fn is_fatal(self) -> bool {
        matches!(self, FrameError::Empty | FrameError::TooLong { .. })
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("a frame length of 0; frames hold 1 or more bytes"),
            FrameError::TooLong { len, max } => {
                write!(
                    f,
                    "a frame length of {len} bytes is over frame_bytes_max ({max})"
                )
            }
            FrameError::Truncated { buffered } => write!(
                f,
                "the stream ended {buffered} bytes into a frame, before its end"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// A `frame_bytes_max` outside `1..=FRAME_BYTES_MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrameLimit(pub usize);

impl fmt::Display for BadFrameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame_bytes_max {} is outside 1 to {FRAME_BYTES_MAX_LIMIT}",
            self.0
        )
    }
}

impl std::error::Error for BadFrameLimit {}

/// Reads the length prefix at the start of `input`, if all 4 bytes are there,
/// and checks it against `max`.
fn length(input: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = input.first_chunk::<LENGTH_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    match usize::try_from(len) {
        Ok(0) => Err(FrameError::Empty),
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(FrameError::TooLong {
            len: u64::from(len),
            max,
        }),
    }
}

/// Finds the first frame at the start of `input` without copying (the
/// stateless core of [`FrameDecoder`], in the style of mini-redis's
/// `Frame::check`): `Ok(Some((body, used)))` for a whole frame, where `used`
/// counts the prefix and body; `Ok(None)` when more bytes are needed; an
/// error as soon as the prefix is known to be bad, before its body arrives.
pub fn split_frame(
    input: &[u8],
    frame_bytes_max: usize,
) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(n) = length(input, frame_bytes_max)? else {
        return Ok(None);
    };
    // `n <= frame_bytes_max <= FRAME_BYTES_MAX_LIMIT`, so this cannot overflow.
    let used = LENGTH_BYTES + n;
    Ok(input.get(LENGTH_BYTES..used).map(|body| (body, used)))
}

/// An incremental frame decoder for one direction of one stream.
///
/// Feed it with [`push`](FrameDecoder::push) and drain it with
/// [`next`](FrameDecoder::next) until that returns `None`, then push the
/// rest of the chunk:
///
/// ```
/// use portcullis::edge::quic::frame::{FrameDecoder, encode};
/// let mut wire = Vec::new();
/// encode(br#"{"kind":"lock"}"#, &mut wire).unwrap();
/// encode(br#"{"kind":"unlock"}"#, &mut wire).unwrap();
/// let mut dec = FrameDecoder::default();
/// let mut bodies = Vec::new();
/// let mut rest = &wire[..];
/// while !rest.is_empty() {
///     let used = dec.push(rest);
///     rest = &rest[used..];
///     while let Some(frame) = dec.next() {
///         bodies.push(frame.unwrap());
///     }
/// }
/// assert_eq!(bodies.len(), 2);
/// ```
///
/// `push` takes only what fits in one maximal frame of unread input, so it
/// may take less than it is given; it takes nothing only when a whole frame
/// or an error is waiting for `next`, so the loop above always progresses.
///
/// After [`FrameError::Empty`] or [`FrameError::TooLong`] the decoder is
/// finished: `next` returns `None` from then on and `push` discards all it
/// is given (and says it took it all), as the stream is to be closed.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
    /// Input not yet returned, from `start`.
    buf: Vec<u8>,
    start: usize,
    finished: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            buf: Vec::new(),
            start: 0,
            finished: false,
        }
    }
}

impl FrameDecoder {
    /// A decoder that accepts bodies of 1 to `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Result<FrameDecoder, BadFrameLimit> {
        if frame_bytes_max == 0 || frame_bytes_max > FRAME_BYTES_MAX_LIMIT {
            return Err(BadFrameLimit(frame_bytes_max));
        }
        Ok(FrameDecoder {
            frame_bytes_max,
            ..FrameDecoder::default()
        })
    }

    /// The largest body this decoder accepts.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// True once a bad length was returned: the stream is to be closed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes of input held and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The most unread input held at once: one maximal frame.
    fn window(&self) -> usize {
        LENGTH_BYTES + self.frame_bytes_max
    }

    /// Takes as much of `bytes` as fits and returns how many it took.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.finished {
            return bytes.len();
        }
        // Drop what was returned, so the buffer only holds unread input.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = self.window().saturating_sub(self.buf.len());
        let take = bytes.len().min(room);
        let needed = self.buf.len() + take;
        if needed > self.buf.capacity() {
            // Grow by doubling, as a Vec would, but never past one maximal
            // frame: capacity is bounded by `4 + frame_bytes_max` whatever
            // the prefix announced, and a small stream keeps a small buffer.
            let target = needed.max(self.buf.capacity() * 2).min(self.window());
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&bytes[..take]);
        take
    }

    /// The next whole frame's body, an error, or `None` when more input is
    /// needed (or the decoder is finished).
    #[allow(clippy::should_implement_trait)] // not an iterator: `None` means "push more"
    pub fn next(&mut self) -> Option<Result<Bytes, FrameError>> {
        if self.finished {
            return None;
        }
        match split_frame(&self.buf[self.start..], self.frame_bytes_max) {
            Ok(None) => None,
            Ok(Some((body, used))) => {
                // One copy of the body: the caller may keep it as long as it
                // likes without pinning the decoder's buffer.
                let body = Bytes::copy_from_slice(body);
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Some(Ok(body))
            }
            Err(e) => {
                self.finished = true;
                self.buf = Vec::new();
                self.start = 0;
                Some(Err(e))
            }
        }
    }

    /// Call when the peer finished its side of the stream: an error when
    /// the stream ended inside a frame (bytes held that make no whole frame).
    pub fn end(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            _ if self.finished => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

/// Appends `body` as one frame to `out`, with the largest limit
/// ([`FRAME_BYTES_MAX_LIMIT`]); refuses an empty or longer body, leaving
/// `out` as it was.
pub fn encode(body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_max(body, FRAME_BYTES_MAX_LIMIT, out)
}

/// [`encode`] under a configured `frame_bytes_max`.
pub fn encode_max(
    body: &[u8],
    frame_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    check_body(body.len(), frame_bytes_max)?;
    out.reserve(LENGTH_BYTES + body.len());
    // Fits: `body.len() <= FRAME_BYTES_MAX_LIMIT < u32::MAX`.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

fn check_body(len: usize, frame_bytes_max: usize) -> Result<(), FrameError> {
    let max = frame_bytes_max.min(FRAME_BYTES_MAX_LIMIT);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    Ok(())
}

/// Starts a frame in place: appends a placeholder prefix and returns where
/// the frame starts. Write the body straight into `out`, then call
/// [`end_frame`]. This saves copying a response body into its frame.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    start
}

/// Finishes the frame [`begin_frame`] started at `start`: writes its length,
/// or, when the body is empty or over `frame_bytes_max`, removes the frame
/// from `out` again and says why.
pub fn end_frame(
    out: &mut Vec<u8>,
    start: usize,
    frame_bytes_max: usize,
) -> Result<(), FrameError> {
    let len = out.len().saturating_sub(start + LENGTH_BYTES);
    if let Err(e) = check_body(len, frame_bytes_max) {
        out.truncate(start);
        return Err(e);
    }
    // `check_body` bounds `len` by FRAME_BYTES_MAX_LIMIT, which fits in u32.
    let prefix = (len as u32).to_be_bytes();
    if let Some(slot) = out.get_mut(start..start + LENGTH_BYTES) {
        slot.copy_from_slice(&prefix);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            encode(b, &mut out).unwrap();
        }
        out
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns the frames and the
    /// first error.
    fn decode_all(
        dec: &mut FrameDecoder,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut frames = Vec::new();
        let mut err = None;
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            loop {
                let used = dec.push(rest);
                rest = &rest[used..];
                while let Some(f) = dec.next() {
                    match f {
                        Ok(b) => frames.push(b.to_vec()),
                        Err(e) => err = err.or(Some(e)),
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        (frames, err)
    }

    #[test]
    fn byte_by_byte_gives_the_same_frames() {
        let bodies: [&[u8]; 3] = [b"{}", br#"{"kind":"lock"}"#, &[b'x'; 300]];
        let input = framed(&bodies);
        for chunk in [1, 2, 3, 4, 5, 7, 64, input.len()] {
            let mut dec = FrameDecoder::default();
            let (frames, err) = decode_all(&mut dec, &input, chunk);
            assert_eq!(err, None);
            assert_eq!(
                frames,
                bodies.iter().map(|b| b.to_vec()).collect::<Vec<_>>()
            );
            assert_eq!(dec.buffered(), 0);
            assert_eq!(dec.end(), Ok(()));
        }
    }

    #[test]
    fn many_frames_in_one_push() {
        let body = br#"{"kind":"auth_failure","account":"A1"}"#;
        let bodies: Vec<&[u8]> = std::iter::repeat_n(&body[..], 1000).collect();
        let input = framed(&bodies);
        assert!(input.len() < FRAME_BYTES_MAX_LIMIT);
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.push(&input), input.len());
        let mut n = 0;
        while let Some(f) = dec.next() {
            assert_eq!(&f.unwrap()[..], body);
            n += 1;
        }
        assert_eq!(n, 1000);
    }

    #[test]
    fn a_push_larger_than_the_window_is_taken_in_parts() {
        let body = [b'a'; 40_000];
        let input = framed(&[&body, &body, &body]);
        let mut dec = FrameDecoder::default();
        let first = dec.push(&input);
        assert_eq!(first, LENGTH_BYTES + FRAME_BYTES_MAX_LIMIT);
        let (frames, err) = decode_all(&mut FrameDecoder::default(), &input, input.len());
        assert_eq!((frames.len(), err), (3, None));
    }

    #[test]
    fn exactly_the_limit_passes_and_one_more_fails() {
        let body = vec![b'a'; FRAME_BYTES_MAX_LIMIT];
        let mut out = Vec::new();
        encode(&body, &mut out).unwrap();
        assert_eq!(&out[..4], &[0, 1, 0, 0]);
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.push(&out), out.len());
        assert_eq!(dec.next().unwrap().unwrap().len(), FRAME_BYTES_MAX_LIMIT);

        let long = vec![b'a'; FRAME_BYTES_MAX_LIMIT + 1];
        let mut out = b"keep".to_vec();
        assert_eq!(
            encode(&long, &mut out),
            Err(FrameError::TooLong {
                len: 65537,
                max: 65536
            })
        );
        assert_eq!(out, b"keep");

        let mut dec = FrameDecoder::default();
        dec.push(&[0, 1, 0, 1]);
        assert_eq!(
            dec.next(),
            Some(Err(FrameError::TooLong {
                len: 65537,
                max: 65536
            }))
        );
        assert!(dec.is_finished());
        assert_eq!(dec.next(), None);
    }

    #[test]
    fn a_smaller_configured_limit_applies_both_ways() {
        let mut dec = FrameDecoder::new(10).unwrap();
        dec.push(&[0, 0, 0, 10]);
        dec.push(b"0123456789");
        assert_eq!(dec.next().unwrap().unwrap(), &b"0123456789"[..]);
        dec.push(&[0, 0, 0, 11]);
        assert_eq!(
            dec.next(),
            Some(Err(FrameError::TooLong { len: 11, max: 10 }))
        );
        let mut out = Vec::new();
        assert!(encode_max(b"0123456789a", 10, &mut out).is_err());
        assert!(out.is_empty());
        assert_eq!(FrameDecoder::new(0).err(), Some(BadFrameLimit(0)));
        assert_eq!(FrameDecoder::new(65537).err(), Some(BadFrameLimit(65537)));
    }

    #[test]
    fn length_zero_is_an_error_and_finishes_the_decoder() {
        let mut dec = FrameDecoder::default();
        let mut input = vec![0, 0, 0, 0];
        input.extend(framed(&[b"{}"]));
        assert_eq!(dec.push(&input), input.len());
        assert_eq!(dec.next(), Some(Err(FrameError::Empty)));
        assert_eq!(dec.next(), None);
        assert_eq!(dec.push(b"anything"), 8);
        assert_eq!(dec.next(), None);
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.end(), Ok(()));
        let mut out = Vec::new();
        assert_eq!(encode(b"", &mut out), Err(FrameError::Empty));
    }

    #[test]
    fn a_bad_length_is_found_before_its_body_arrives_and_reserves_nothing() {
        for prefix in [[0xff; 4], [0x80, 0, 0, 0], [0, 0x10, 0, 0]] {
            let mut dec = FrameDecoder::default();
            dec.push(&prefix[..3]);
            assert_eq!(dec.next(), None);
            dec.push(&prefix[3..]);
            assert!(matches!(dec.next(), Some(Err(FrameError::TooLong { .. }))));
            assert_eq!(dec.buf.capacity(), 0);
        }
    }

    #[test]
    fn a_huge_announced_length_within_the_limit_grows_only_with_input() {
        let mut dec = FrameDecoder::default();
        dec.push(&[0, 1, 0, 0]);
        dec.push(b"{}");
        assert!(dec.buf.capacity() < 64, "{}", dec.buf.capacity());
        assert_eq!(dec.next(), None);
        assert_eq!(dec.end(), Err(FrameError::Truncated { buffered: 6 }));
    }

    #[test]
    fn in_place_frames_match_encode() {
        let mut a = Vec::new();
        encode(b"{\"ok\":true}", &mut a).unwrap();
        let mut b = Vec::new();
        let s = begin_frame(&mut b);
        b.extend_from_slice(b"{\"ok\":true}");
        end_frame(&mut b, s, FRAME_BYTES_MAX_LIMIT).unwrap();
        assert_eq!(a, b);
        let s = begin_frame(&mut b);
        assert_eq!(end_frame(&mut b, s, 10), Err(FrameError::Empty));
        assert_eq!(a, b);
        let s = begin_frame(&mut b);
        b.extend_from_slice(&[b'x'; 11]);
        assert!(end_frame(&mut b, s, 10).is_err());
        assert_eq!(a, b);
    }

    #[test]
    fn split_frame_is_stateless_and_exact() {
        let input = framed(&[b"ab", b"c"]);
        let (body, used) = split_frame(&input, 10).unwrap().unwrap();
        assert_eq!((body, used), (&b"ab"[..], 6));
        let (body, used) = split_frame(&input[used..], 10).unwrap().unwrap();
        assert_eq!((body, used), (&b"c"[..], 5));
        assert_eq!(split_frame(&input[..5], 10), Ok(None));
        assert_eq!(split_frame(&[], 10), Ok(None));
    }

    fn config(seed: u64) -> Config {
        Config {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(256),
            failure_persistence: None,
            rng_algorithm: RngAlgorithm::ChaCha,
            rng_seed: RngSeed::Fixed(
                std::env::var("PROPTEST_RNG_SEED")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(seed),
            ),
            ..Config::default()
        }
    }

    /// Bodies (some at the edges of a small limit) framed, then cut into
    /// random chunks; sometimes with garbage appended.
    fn stream() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>, Vec<usize>)> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..=40), 0..8),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(1usize..50, 1..20),
        )
    }

    proptest! {
        #![proptest_config(config(0x6672616d65))]

        /// Random bytes in random chunks never panic, never buffer more
        /// than one maximal frame, and give the same answers as one push.
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            chunks in proptest::collection::vec(1usize..40, 1..10),
            max in 1usize..64,
        ) {
            let mut dec = FrameDecoder::new(max).unwrap();
            let mut frames = Vec::new();
            let mut err = None;
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = chunks[i % chunks.len()].min(rest.len());
                i += 1;
                let mut piece = &rest[..n];
                rest = &rest[n..];
                while !piece.is_empty() {
                    let used = dec.push(piece);
                    piece = &piece[used..];
                    prop_assert!(dec.buf.capacity() <= LENGTH_BYTES + max);
                    while let Some(f) = dec.next() {
                        match f {
                            Ok(b) => {
                                prop_assert!(!b.is_empty() && b.len() <= max);
                                frames.push(b.to_vec());
                            }
                            Err(e) => {
                                prop_assert!(err.is_none());
                                err = Some(e);
                            }
                        }
                    }
                }
            }
            let mut whole = FrameDecoder::new(max).unwrap();
            let (frames1, err1) = decode_all(&mut whole, &bytes, bytes.len().max(1));
            prop_assert_eq!(frames, frames1);
            prop_assert_eq!(err, err1);
            let _ = dec.end();
        }

        /// Valid frames survive any chunking; appended garbage yields either
        /// more frames, nothing, or one error, never a panic.
        #[test]
        fn frames_survive_any_chunking((bodies, garbage, chunks) in stream()) {
            let mut input = Vec::new();
            for b in &bodies {
                encode_max(b, 40, &mut input).unwrap();
            }
            let clean = input.len();
            input.extend_from_slice(&garbage);
            let mut dec = FrameDecoder::new(40).unwrap();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < input.len() {
                let n = chunks[i % chunks.len()].min(input.len() - pos);
                i += 1;
                let mut piece = &input[pos..pos + n];
                pos += n;
                while !piece.is_empty() {
                    let used = dec.push(piece);
                    piece = &piece[used..];
                    while let Some(f) = dec.next() {
                        if let Ok(b) = f {
                            got.push(b.to_vec());
                        }
                    }
                }
            }
            prop_assert!(got.len() >= bodies.len());
            prop_assert_eq!(&got[..bodies.len()], &bodies[..]);
            if garbage.is_empty() {
                prop_assert_eq!(dec.end(), Ok(()));
                prop_assert_eq!(got.len(), bodies.len());
                prop_assert_eq!(clean, input.len());
            }
        }
    }
}
