//! `portcullis replay`: the engine over a file of recorded events.
//!
//! Each line's own `at` is the engine's clock, so a replay decides exactly as
//! the live gateway would have at those times. Output is one JSON line per
//! decision, error and alert, in input order. Bad lines get an error line and
//! processing goes on: nothing else is lost.

use crate::answer::{write_alert, write_decision, write_error};
use crate::contract::{self, AtRule, ContractError, ErrorCode, Event, Timestamp};
use crate::engine::{Answer, Engine};
use crate::files::{FileError, open_events};
use crate::rules::{CompiledRules, Outcome};
use std::io::{self, BufRead, Write};
use std::ops::ControlFlow;

/// Counts for the summary a replay prints to stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    pub decisions: [u64; 3],
    /// Hits per rule of the current ruleset (matched or shadow-matched).
    pub rule_hits: Vec<u64>,
    pub errors: Vec<(ErrorCode, u64)>,
    pub alerts: u64,
}

impl Summary {
    fn error(&mut self, code: ErrorCode) {
        match self.errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => {
                self.errors.push((code, 1));
                self.errors.sort();
            }
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// The human summary; `secs` is the wall time the caller measured.
    pub fn render(&self, rules: &CompiledRules, secs: f64) -> String {
        let mut s = String::new();
        let rate = if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        };
        s.push_str(&format!(
            "replay: {} lines, {} events in {:.3}s ({:.0} events/s)\n",
            self.lines, self.events, secs, rate
        ));
        s.push_str(&format!(
            "decisions: allow {} hold {} deny {}\n",
            self.decisions[0], self.decisions[1], self.decisions[2]
        ));
        s.push_str(&format!(
            "ruleset: {} ({})\nrule hits:\n",
            rules.label, rules.hash
        ));
        for (r, n) in rules.rules.iter().zip(&self.rule_hits) {
            let tag = if r.shadow { " (shadow)" } else { "" };
            s.push_str(&format!("  {:<36} {n}{tag}\n", r.name));
        }
        s.push_str(&format!("errors: {}\n", self.errors_total()));
        for (c, n) in &self.errors {
            s.push_str(&format!("  {:<36} {n}\n", c.as_str()));
        }
        s.push_str(&format!("alerts: unapproved_sim_change {}\n", self.alerts));
        s
    }
}

/// The typical size of an event line in bytes, to size the engine's tables
/// from an input's length.
pub const EVENT_LINE_BYTES_TYPICAL: u64 = 128;

/// Sizes `engine` for an input of `bytes` bytes ([`Engine::reserve`]).
pub fn reserve_for_input(engine: &mut Engine, bytes: u64) {
    let events = bytes / EVENT_LINE_BYTES_TYPICAL;
    engine.reserve(usize::try_from(events).unwrap_or(usize::MAX));
}

/// Opens an events file (or standard input for `-`) through
/// [`crate::files::open_events`], sizing `engine` for a file's length.
pub fn open_events_for(engine: &mut Engine, events: &str) -> Result<Box<dyn BufRead>, FileError> {
    let (input, len) = open_events(events)?;
    if let Some(len) = len {
        reserve_for_input(engine, len);
    }
    Ok(input)
}

/// Replays `input` through `engine`, writing answers to `out`.
/// Returns an error only when the input cannot be read or the output written.
pub fn run<R: BufRead, W: Write>(
    engine: &mut Engine,
    input: R,
    out: &mut W,
) -> io::Result<Summary> {
    let mut summary = Summary {
        rule_hits: vec![0; engine.current().rules.len()],
        ..Summary::default()
    };
    let mut buf = Vec::with_capacity(OUT_FLUSH_BYTES + 1024);
    drive(engine, input, |engine, line_no, item| {
        line(engine, line_no, item, &mut summary, &mut buf);
        if buf.len() >= OUT_FLUSH_BYTES {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(summary)
}

/// What became of one input line.
#[derive(Debug)]
pub enum Item<'a> {
    /// A blank line: skipped, but counted for line numbers.
    Blank,
    /// A line refused, by the contract, the order of times, or the engine
    /// (`id_conflict`, `unknown_ref`): nothing changed.
    Refused(&'a ContractError),
    /// An event the engine answered, and the time it was decided at.
    Answered(&'a Event, Timestamp, &'a Answer),
}

/// Reads `input` line by line as replay does (the contract's parsing, the
/// order of times, retries and errors), hands each event to `engine`, and
/// calls `each` with the 1-based line number and what became of the line,
/// in input order. Replay, backtest and explain share it, so that all three
/// see exactly the same events and answers.
pub fn drive<R: BufRead>(
    engine: &mut Engine,
    input: R,
    mut each: impl FnMut(&Engine, u64, Item<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    drive_with(
        engine,
        input,
        |_, _, _, _| {},
        |engine, line_no, item| each(engine, line_no, item).map(|()| ControlFlow::Continue(())),
    )
}

/// [`drive`] for a caller that must see the engine before an event changes
/// it, and may stop early (`explain`): `before` gets each event that passed
/// the order check, with its line number and time, just before the engine
/// handles it; `each` returns `Break` to stop reading after that line.
/// Replay's own loop, so that such a caller sees the same events, in the
/// same engine states, as replay.
pub fn drive_with<R: BufRead>(
    engine: &mut Engine,
    mut input: R,
    mut before: impl FnMut(&Engine, u64, &Event, Timestamp),
    mut each: impl FnMut(&Engine, u64, Item<'_>) -> io::Result<ControlFlow<()>>,
) -> io::Result<u64> {
    let mut raw = Vec::with_capacity(512);
    let mut mark: Option<Timestamp> = None;
    let mut batch: Vec<Parsed> = Vec::with_capacity(BATCH_LINES);
    let mut lines = 0u64;
    let mut eof = false;
    while !eof {
        // Parse a batch of lines, let the engine ask for the memory each
        // event will need (their cache misses overlap, where one event at a
        // time would wait for each in turn), then decide them in order.
        batch.clear();
        while batch.len() < BATCH_LINES {
            // A line wholly inside the reader's buffer is parsed in place;
            // one that straddles the buffer's end is copied out first.
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                eof = true;
                break;
            }
            let used = match memchr::memchr(b'\n', chunk) {
                Some(pos) => {
                    batch.push(parse(&chunk[..=pos]));
                    pos + 1
                }
                None => {
                    raw.clear();
                    if read_long_line(&mut input, &mut raw)? {
                        batch.push(parse(&raw));
                    } else {
                        batch.push(Some(Err(ContractError::new(
                            ErrorCode::BadJson,
                            None,
                            format!("the line is over line_bytes_max ({LINE_BYTES_MAX} bytes)"),
                        ))));
                    }
                    0
                }
            };
            input.consume(used);
        }
        for p in &batch {
            if let Some(Ok(ev)) = p {
                engine.prefetch(ev);
            }
        }
        // By reference: an event is a few hundred bytes, not worth moving.
        for p in &batch {
            lines += 1;
            let flow = match p {
                None => each(engine, lines, Item::Blank)?,
                Some(Err(e)) => each(engine, lines, Item::Refused(e))?,
                Some(Ok(ev)) => {
                    let seen = |engine: &Engine, at| before(engine, lines, ev, at);
                    match step(engine, ev, &mut mark, seen) {
                        Ok((at, answer)) => each(engine, lines, Item::Answered(ev, at, &answer))?,
                        Err(e) => each(engine, lines, Item::Refused(&e))?,
                    }
                }
            };
            if flow.is_break() {
                return Ok(lines);
            }
            if lines.is_multiple_of(PRUNE_EVERY_LINES)
                && let Some(now) = mark
            {
                engine.prune(now);
            }
        }
    }
    Ok(lines)
}

/// Lines parsed ahead of the engine: enough for their cache misses to
/// overlap, few enough that what they ask for is still in cache when used.
const BATCH_LINES: usize = 16;

/// A line, parsed: `None` for a blank line.
type Parsed = Option<Result<Event, ContractError>>;

/// Bytes one input line may hold (contract events are far smaller); a
/// longer line is an error, read past without being kept.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// Reads a line that straddles the reader's buffer into `raw`; false when it
/// is over [`LINE_BYTES_MAX`] (then `raw` holds only its start).
fn read_long_line<R: BufRead>(input: &mut R, raw: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(raw.len() <= LINE_BYTES_MAX);
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(pos) => (pos + 1, true),
            None => (chunk.len(), false),
        };
        let room = (LINE_BYTES_MAX + 1).saturating_sub(raw.len());
        raw.extend_from_slice(&chunk[..take.min(room)]);
        input.consume(take);
        if done {
            return Ok(raw.len() <= LINE_BYTES_MAX);
        }
    }
}

/// Lines between sweeps of history that fell out of every window: a long
/// replay keeps only what the rules can still read.
const PRUNE_EVERY_LINES: u64 = 1 << 20;

/// Answers are gathered and written in blocks of about this many bytes.
const OUT_FLUSH_BYTES: usize = 1 << 16;

/// Parses one line (with its newline, if any).
fn parse(raw: &[u8]) -> Parsed {
    if raw
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return None;
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        ContractError::new(
            ErrorCode::BadJson,
            None,
            format!("the line is not UTF-8 (byte {})", e.valid_up_to() + 1),
        )
    });
    Some(text.and_then(|t| contract::parse_line(t, AtRule::Required)))
}

/// Counts one line in the summary and appends its answer to `buf`.
fn line(engine: &Engine, line_no: u64, item: Item<'_>, summary: &mut Summary, buf: &mut Vec<u8>) {
    summary.lines += 1;
    match item {
        Item::Blank => {}
        Item::Refused(e) => {
            summary.error(e.code);
            write_error(buf, line_no, e);
        }
        Item::Answered(ev, _, answer) => {
            summary.events += 1;
            match answer {
                Answer::Decision(d) => {
                    summary.decisions[d.outcome as usize] += 1;
                    if !d.retry {
                        count_hits(&mut summary.rule_hits, d.matched | d.shadow);
                    }
                    write_decision(buf, ev.id.as_deref(), d, engine.ruleset(d.ruleset));
                }
                Answer::Signal { alert, .. } => {
                    if let Some(a) = alert {
                        summary.alerts += 1;
                        write_alert(buf, a);
                    }
                }
                Answer::Error(e) => {
                    summary.error(e.code);
                    write_error(buf, line_no, e);
                }
            }
        }
    }
}

fn count_hits(hits: &mut [u64], bits: u128) {
    for (i, h) in hits.iter_mut().enumerate() {
        if bits & (1 << i) != 0 {
            *h += 1;
        }
    }
}

/// Checks an event's order and hands it to the engine, showing it the
/// engine first (`before`) once its order is known good.
fn step(
    engine: &mut Engine,
    ev: &Event,
    mark: &mut Option<Timestamp>,
    before: impl FnOnce(&Engine, Timestamp),
) -> Result<(Timestamp, Answer), ContractError> {
    // Invariant: AtRule::Required guarantees `at`.
    let at = ev.at.expect("replay events carry at");
    if let Some(m) = *mark
        && at < m
    {
        let mut e = ContractError::new(
            ErrorCode::OutOfOrder,
            Some("at"),
            format!(
                "at {} is earlier than the previous event's {}",
                at.to_rfc3339_utc(),
                m.to_rfc3339_utc()
            ),
        );
        e.id.clone_from(&ev.id);
        return Err(e);
    }
    before(engine, at);
    let answer = engine.handle(ev, at);
    if let Answer::Error(e) = answer {
        return Err(e);
    }
    *mark = Some(at);
    Ok((at, answer))
}

/// Outcome counters are indexed by the outcome's discriminant.
const _: () = assert!(Outcome::Allow as usize == 0 && Outcome::Deny as usize == 2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::CompiledRules;
    use std::io::BufReader;
    use std::sync::Arc;

    fn replay(input: &[u8], reader_capacity: usize) -> (String, Summary) {
        let mut engine = Engine::new(Arc::new(CompiledRules::default_rules()));
        let mut out = Vec::new();
        let summary = run(
            &mut engine,
            BufReader::with_capacity(reader_capacity, input),
            &mut out,
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), summary)
    }

    #[test]
    fn lines_across_buffer_edges_read_the_same() {
        let mut input = Vec::new();
        crate::traffic::write(&crate::traffic::Config::default(), 2_000, &mut input).unwrap();
        let (a, sa) = replay(&input, 1 << 16);
        for cap in [1, 7, 100, 333] {
            let (b, sb) = replay(&input, cap);
            assert_eq!(a, b, "reader capacity {cap}");
            assert_eq!(sa, sb);
        }
    }

    #[test]
    fn an_overlong_line_is_an_error_and_the_next_line_goes_on() {
        let mut input = b"{\"kind\":\"auth_failure\",\"account\":\"A\",\"x\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'a', LINE_BYTES_MAX + 10));
        input.extend_from_slice(b"\"}\n{\"kind\":\"lock\",\"msisdn\":\"+447700900123\",\"scope\":\"port_out\",\"at\":\"2026-01-01T00:00:00Z\"}");
        let (out, s) = replay(&input, 4096);
        assert!(out.contains("line_bytes_max"), "{out}");
        assert_eq!((s.lines, s.events, s.errors_total()), (2, 1, 1));
    }
}
