//! The requests of a load run, generated before the run starts so the
//! timed part only copies bytes: realistic carrier traffic from
//! [`traffic::Generator`], each event written as one frame.
//!
//! Ids must be new to the server on every run, even when the load
//! generator runs twice against the same server (a repeated id with the
//! same content is an idempotent retry, answered from a record, which is
//! not the work being measured). So every `id` is prefixed with a run tag,
//! `lg<unix nanoseconds in base 36>-`, and every `verification`'s `ref`
//! becomes `NAME:TAG-ID`, NAME being the identity of the certificate the
//! load generator presents (the wire contract names a hold `CLIENT:ID`).
//! The rewriting is done on the typed [`Event`] before it is written, and
//! the tag has a fixed width, so a later run re-tags the same frames in
//! place ([`Payloads::retag`]) without generating them again.

use crate::contract::{Event, Kind};
use crate::edge::quic::frame::{FrameError, LENGTH_BYTES, encode};
use crate::traffic::{self, Generator};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Base-36 digits of a tag: 36^13 > 2^64, so any `u64` fits.
const TAG_DIGITS: usize = 13;

/// Bytes of a run tag: `lg`, `TAG_DIGITS` digits, `-`.
pub const TAG_BYTES: usize = 2 + TAG_DIGITS + 1;

/// The most requests one load generator keeps ready: about 2 GB of frames.
/// More would be a mistyped rate or duration.
pub const PAYLOADS_MAX: usize = 10_000_000;

/// The prefix that makes one run's ids its own: `lg` and a number in
/// base 36, zero-padded to a fixed width so that re-tagging rewrites
/// bytes in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunTag([u8; TAG_BYTES]);

impl RunTag {
    /// The tag of `n`.
    pub fn from_number(mut n: u64) -> RunTag {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut t = [b'0'; TAG_BYTES];
        t[0] = b'l';
        t[1] = b'g';
        t[TAG_BYTES - 1] = b'-';
        for i in (2..2 + TAG_DIGITS).rev() {
            t[i] = DIGITS[(n % 36) as usize];
            n /= 36;
        }
        RunTag(t)
    }

    /// A tag no earlier run has used: the Unix time in nanoseconds, and
    /// within one process always greater than the last tag made, so two
    /// runs in the same nanosecond still differ.
    pub fn fresh() -> RunTag {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return RunTag::from_number(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        // Every byte is ASCII (`lg`, base-36 digits, `-`), so this never
        // falls back.
        std::str::from_utf8(&self.0).unwrap_or("lg")
    }
}

/// A generated event could not be made into a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// More requests than [`PAYLOADS_MAX`].
    TooMany { wanted: usize },
    /// An event's JSON does not fit a frame.
    Frame { index: usize, error: FrameError },
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::TooMany { wanted } => write!(
                f,
                "{wanted} requests is more than the {PAYLOADS_MAX} a run may prepare; lower --rate or --duration"
            ),
            PayloadError::Frame { index, error } => {
                write!(f, "generated request #{}: {error}", index + 1)
            }
        }
    }
}

impl std::error::Error for PayloadError {}

/// Generated requests, framed, back to back in one buffer (a few hundred
/// bytes each, no allocation per request), with where each frame ends and
/// where each tag sits.
pub struct Payloads {
    generator: Generator,
    /// The client identity verifications name holds in (`NAME:TAG-ID`).
    name: String,
    tag: RunTag,
    /// Frames back to back.
    frames: Vec<u8>,
    /// Where each frame ends in `frames` (its start is the previous end).
    ends: Vec<usize>,
    /// Where each tag starts in `frames`.
    tag_at: Vec<usize>,
    /// One event's JSON line, reused.
    line: Vec<u8>,
}

impl std::fmt::Debug for Payloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payloads")
            .field("name", &self.name)
            .field("tag", &self.tag.as_str())
            .field("requests", &self.ends.len())
            .field("bytes", &self.frames.len())
            .finish()
    }
}

impl Payloads {
    /// No requests yet, from a generator with `cfg`, for the client
    /// `name`, tagged with a fresh [`RunTag`].
    pub fn new(cfg: traffic::Config, name: &str) -> Payloads {
        Payloads {
            generator: Generator::new(cfg),
            name: name.to_string(),
            tag: RunTag::fresh(),
            frames: Vec::new(),
            ends: Vec::new(),
            tag_at: Vec::new(),
            line: Vec::with_capacity(512),
        }
    }

    /// Generates requests until there are at least `n`. A later, longer run
    /// extends the same stream of events rather than starting it again.
    pub fn ensure(&mut self, n: usize) -> Result<(), PayloadError> {
        if n > PAYLOADS_MAX {
            return Err(PayloadError::TooMany { wanted: n });
        }
        let more = n.saturating_sub(self.ends.len());
        self.ends.reserve(more);
        // Events are about 170 bytes with the tag and the length prefix.
        self.frames.reserve(more * 192);
        while self.ends.len() < n {
            // Invariant: the generator is an infinite stream.
            let ev = self.generator.next().expect("the generator never ends");
            self.push(ev)?;
        }
        Ok(())
    }

    /// Appends one event as a frame: its id tagged, a verification's `ref`
    /// scoped and tagged, the tags' places noted.
    pub fn push(&mut self, mut ev: Event) -> Result<(), PayloadError> {
        let tag = self.tag;
        tag_event(&mut ev, tag.as_str(), &self.name);
        self.line.clear();
        ev.write_json(&mut self.line);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        let body_at = self.frames.len() + LENGTH_BYTES;
        encode(&self.line, &mut self.frames).map_err(|error| PayloadError::Frame {
            index: self.ends.len(),
            error,
        })?;
        for at in tag_places(&self.line, &tag, &self.name) {
            self.tag_at.push(body_at + at);
        }
        self.ends.push(self.frames.len());
        Ok(())
    }

    /// Rewrites every tag to `tag`, in place: the next run's ids are new to
    /// the server, and its frames have the same sizes as the last run's.
    pub fn retag(&mut self, tag: RunTag) {
        for &at in &self.tag_at {
            self.frames[at..at + TAG_BYTES].copy_from_slice(&tag.0);
        }
        self.tag = tag;
    }

    /// The tag every frame carries now.
    pub fn tag(&self) -> RunTag {
        self.tag
    }

    /// Requests ready.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Request `i` as a frame (length prefix and body). Panics past
    /// [`Payloads::len`], like a slice.
    pub fn frame(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.frames[start..self.ends[i]]
    }

    /// Request `i`'s body.
    pub fn body(&self, i: usize) -> &[u8] {
        &self.frame(i)[LENGTH_BYTES..]
    }

    /// Bytes held by the frames.
    pub fn bytes(&self) -> usize {
        self.frames.len()
    }
}

/// Prefixes the event's `id` with `tag`, and rewrites a verification's
/// `ref` to `NAME:TAG-REF`: the held request it names was sent by this
/// client (`name`) with a tagged id.
pub fn tag_event(ev: &mut Event, tag: &str, name: &str) {
    if let Some(id) = &ev.id {
        ev.id = Some(format!("{tag}{id}").into());
    }
    if ev.kind == Kind::Verification
        && let Some(r) = &ev.reference
    {
        ev.reference = Some(format!("{name}:{tag}{r}").into());
    }
}

/// Where `tag` starts in `line` as the start of the `id` value and of the
/// `ref` value after `NAME:`. Written by [`Event::write_json`], a value's
/// quotes inside a string are escaped, so `"id":"TAG` can only be the key
/// `id` itself.
fn tag_places(line: &[u8], tag: &RunTag, name: &str) -> Vec<usize> {
    let mut places = Vec::with_capacity(2);
    let id_key = [&b"\"id\":\""[..], &tag.0].concat();
    if let Some(at) = memchr::memmem::find(line, &id_key) {
        places.push(at + id_key.len() - TAG_BYTES);
    }
    let ref_key = [&b"\"ref\":\""[..], name.as_bytes(), b":", &tag.0].concat();
    if let Some(at) = memchr::memmem::find(line, &ref_key) {
        places.push(at + ref_key.len() - TAG_BYTES);
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AtRule, parse_line};
    use std::collections::HashSet;

    fn ids(p: &Payloads) -> Vec<String> {
        (0..p.len())
            .filter_map(|i| {
                let v: serde_json::Value = serde_json::from_slice(p.body(i)).unwrap();
                v["id"].as_str().map(str::to_string)
            })
            .collect()
    }

    #[test]
    fn tags_have_a_fixed_width_and_differ() {
        assert_eq!(RunTag::from_number(0).as_str(), "lg0000000000000-");
        assert_eq!(RunTag::from_number(u64::MAX).as_str(), "lg3w5e11264sgsf-");
        let (a, b) = (RunTag::fresh(), RunTag::fresh());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TAG_BYTES);
    }

    #[test]
    fn ids_are_unique_across_two_runs() {
        let cfg = traffic::Config {
            subscribers: 100_000,
            ..traffic::Config::default()
        };
        let mut p = Payloads::new(cfg, "admin");
        p.ensure(3000).unwrap();
        let first_tag = p.tag();
        let first = ids(&p);
        assert!(first.len() > 100, "{}", first.len());
        assert!(first.iter().all(|id| id.starts_with(first_tag.as_str())));
        let sizes: Vec<usize> = (0..p.len()).map(|i| p.frame(i).len()).collect();
        p.retag(RunTag::fresh());
        let second = ids(&p);
        assert_eq!(first.len(), second.len());
        let all: HashSet<&String> = first.iter().chain(&second).collect();
        assert_eq!(all.len(), 2 * first.len(), "an id repeats across runs");
        assert_eq!(
            sizes,
            (0..p.len()).map(|i| p.frame(i).len()).collect::<Vec<_>>()
        );
        // The untagged rest of each request is as generated.
        let plain: Vec<String> = second
            .iter()
            .map(|id| id[TAG_BYTES..].to_string())
            .collect();
        assert!(plain[0].starts_with("g1-"), "{}", plain[0]);
    }

    #[test]
    fn a_verification_names_its_hold_in_this_clients_scope() {
        let mut p = Payloads::new(traffic::Config::default(), "admin");
        let line = r#"{"id":"v1","kind":"verification","ref":"g1-5","result":"pass"}"#;
        let ev = parse_line(line, AtRule::Optional).unwrap();
        p.push(ev).unwrap();
        let tag = p.tag();
        let v: serde_json::Value = serde_json::from_slice(p.body(0)).unwrap();
        assert_eq!(v["id"], format!("{}v1", tag.as_str()));
        assert_eq!(v["ref"], format!("admin:{}g1-5", tag.as_str()));
        let next = RunTag::fresh();
        p.retag(next);
        let v: serde_json::Value = serde_json::from_slice(p.body(0)).unwrap();
        assert_eq!(v["id"], format!("{}v1", next.as_str()));
        assert_eq!(v["ref"], format!("admin:{}g1-5", next.as_str()));
        // A signal without an id stays without one.
        let ev = parse_line(
            r#"{"kind":"auth_failure","account":"acct-1"}"#,
            AtRule::Optional,
        )
        .unwrap();
        p.push(ev).unwrap();
        assert_eq!(p.body(1), br#"{"kind":"auth_failure","account":"acct-1"}"#);
    }

    #[test]
    fn too_many_requests_are_refused_before_any_work() {
        let mut p = Payloads::new(traffic::Config::default(), "admin");
        assert_eq!(
            p.ensure(PAYLOADS_MAX + 1),
            Err(PayloadError::TooMany {
                wanted: PAYLOADS_MAX + 1
            })
        );
        assert!(p.is_empty());
    }
}
