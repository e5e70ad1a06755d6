//! The backtest's HTML report: one self-contained page (no script, no
//! style sheet or font from elsewhere, no URL at all), its charts drawn as
//! inline SVG so that they show in any browser, offline, and in a mail.
//!
//! Every text that comes from input (ids, rule names, labels, stories) is
//! escaped: an id may hold any character.

use super::tally::{Backtest, HISTORY_NOTE, OUTCOMES, Outcomes, names, percent, share};
use crate::rules::Outcome;
use std::fmt::Write as _;

/// The baseline's colour in every chart (and its darker shade for denies).
pub const BASELINE_COLOUR: &str = "#2563eb";
const BASELINE_DENY: &str = "#1e3a8a";
/// The new ruleset's colour (and its darker shade for denies).
pub const NEW_COLOUR: &str = "#f97316";
const NEW_DENY: &str = "#9a3412";
/// The colour of changed decisions.
pub const CHANGED_COLOUR: &str = "#7c3aed";

/// Days drawn in the per-day chart; a longer trace shows its last days.
pub const CHART_DAYS_MAX: usize = 120;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report as one page.
pub fn render(bt: &Backtest, hot_share: f64) -> String {
    let p = &bt.paired;
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Portcullis backtest</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111;max-width:1100px}\
         table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         td:first-child,th:first-child{text-align:left}.note{color:#444;background:#f4f4f5;padding:8px}\
         .chart{margin:8px 0 24px}.k{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        h,
        "<h1>Backtest</h1><p>baseline <b>{}</b> ({}) &middot; new <b>{}</b> ({})</p>\
         <p>{} lines, {} events, {} requests decided; {} changed.</p>\
         <p class=\"note\">{}</p>",
        escape(&p.baseline.label),
        escape(&p.baseline.hash),
        escape(&p.new.label),
        escape(&p.new.hash),
        bt.lines,
        bt.events,
        bt.requests,
        bt.changed,
        HISTORY_NOTE,
    );
    outcome_table(&mut h, bt);
    days_chart(&mut h, bt);
    rules_chart(&mut h, bt, hot_share);
    changes_chart(&mut h, bt);
    labels_table(&mut h, bt);
    h.push_str("</body></html>\n");
    h
}

fn legend(h: &mut String, items: &[(&str, &str)]) {
    h.push_str("<div>");
    for (colour, name) in items {
        let _ = write!(
            h,
            "<span class=\"k\" style=\"background:{colour}\"></span>{}",
            escape(name)
        );
    }
    h.push_str("</div>");
}

fn outcome_table(h: &mut String, bt: &Backtest) {
    h.push_str("<h2>Outcomes</h2><table><tr><th>outcome</th><th>baseline</th><th>new</th><th>change</th></tr>");
    for (o, a, b, change) in bt.outcome_rows() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{a}</td><td>{b}</td><td>{change:+}</td></tr>",
            o.as_str()
        );
    }
    h.push_str("</table>\n");
}

/// Held and denied requests per day, the baseline's bar beside the new
/// one's (allowed requests are the rest, in the table).
fn days_chart(h: &mut String, bt: &Backtest) {
    h.push_str("<h2>Held and denied per day</h2>");
    legend(
        h,
        &[
            (BASELINE_COLOUR, "baseline hold"),
            (BASELINE_DENY, "baseline deny"),
            (NEW_COLOUR, "new hold"),
            (NEW_DENY, "new deny"),
        ],
    );
    let days: Vec<_> = bt.days.iter().collect();
    let days = &days[days.len().saturating_sub(CHART_DAYS_MAX)..];
    let stopped = |o: &Outcomes| o[Outcome::Hold as usize] + o[Outcome::Deny as usize];
    let top = days
        .iter()
        .map(|(_, (a, b))| stopped(a).max(stopped(b)))
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, ht, left, bottom) = (1000.0, 260.0, 50.0, 40.0);
    let slot = (w - left - 10.0) / days.len().max(1) as f64;
    let bar = (slot * 0.4).clamp(1.0, 30.0);
    let y = |v: u64| (ht - bottom) * (1.0 - v as f64 / top as f64);
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"days\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"held and denied per day\">"
    );
    axis(h, left, ht - bottom, w, top);
    for (i, (day, (a, b))) in days.iter().enumerate() {
        let x0 = left + i as f64 * slot + slot * 0.1;
        for (k, (o, hold_c, deny_c)) in [
            (a, BASELINE_COLOUR, BASELINE_DENY),
            (b, NEW_COLOUR, NEW_DENY),
        ]
        .into_iter()
        .enumerate()
        {
            let x = x0 + k as f64 * bar;
            let (hold, deny) = (o[Outcome::Hold as usize], o[Outcome::Deny as usize]);
            let yh = y(hold);
            let yd = y(hold + deny);
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{yh:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{hold_c}\"><title>{hold} held</title></rect>\
                 <rect x=\"{x:.1}\" y=\"{yd:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{deny_c}\"><title>{deny} denied</title></rect>",
                (ht - bottom) - yh,
                yh - yd,
            );
        }
        if days.len() <= 31 || i % days.len().div_ceil(31) == 0 {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x0 + bar,
                ht - bottom + 14.0,
                day_label(**day)
            );
        }
    }
    h.push_str("</svg>\n<table><tr><th>day (UTC)</th><th>baseline allow</th><th>hold</th><th>deny</th><th>new allow</th><th>hold</th><th>deny</th></tr>");
    for (day, (a, b)) in days {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            day_label(**day),
            a[0],
            a[1],
            a[2],
            b[0],
            b[1],
            b[2]
        );
    }
    h.push_str("</table>\n");
}

fn axis(h: &mut String, left: f64, base: f64, w: f64, top: u64) {
    let _ = write!(
        h,
        "<line x1=\"{left}\" y1=\"0\" x2=\"{left}\" y2=\"{base}\" stroke=\"#888\"/>\
         <line x1=\"{left}\" y1=\"{base}\" x2=\"{w}\" y2=\"{base}\" stroke=\"#888\"/>\
         <text x=\"{:.1}\" y=\"10\" font-size=\"10\" text-anchor=\"end\">{top}</text>\
         <text x=\"{:.1}\" y=\"{base}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        left - 4.0,
        left - 4.0
    );
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
fn day_label(day: i64) -> String {
    crate::contract::Timestamp::from_unix(day * 86_400, 0)
        .map(|t| t.to_rfc3339_utc().chars().take(10).collect())
        .unwrap_or_else(|| day.to_string())
}

/// Hits per rule: every rule of either ruleset, the baseline's bar above
/// the new one's.
fn rules_chart(h: &mut String, bt: &Backtest, hot_share: f64) {
    let p = &bt.paired;
    let mut rows: Vec<(&str, Option<u64>, Option<u64>, bool)> = Vec::new();
    for (r, st) in p.baseline.rules.iter().zip(&bt.baseline.rules) {
        rows.push((&r.name, Some(st.hits), None, r.shadow));
    }
    for (r, st) in p.new.rules.iter().zip(&bt.new.rules) {
        match rows.iter_mut().find(|row| row.0 == r.name) {
            Some(row) => row.2 = Some(st.hits),
            None => rows.push((&r.name, None, Some(st.hits), r.shadow)),
        }
    }
    h.push_str("<h2>Hits per rule</h2>");
    legend(h, &[(BASELINE_COLOUR, "baseline"), (NEW_COLOUR, "new")]);
    let top = rows
        .iter()
        .map(|r| r.1.unwrap_or(0).max(r.2.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, row_h, left) = (1000.0, 26.0, 290.0);
    let ht = row_h * rows.len() as f64 + 10.0;
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"rules\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"hits per rule\">"
    );
    let scale = (w - left - 80.0) / top as f64;
    for (i, (name, base, new, _)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + 14.0,
            escape(name)
        );
        for (k, (v, colour)) in [(base, BASELINE_COLOUR), (new, NEW_COLOUR)]
            .into_iter()
            .enumerate()
        {
            let Some(v) = v else { continue };
            let by = y + k as f64 * 10.0;
            let bw = (*v as f64 * scale).max(if *v > 0 { 1.0 } else { 0.0 });
            let _ = write!(
                h,
                "<rect x=\"{left}\" y=\"{by:.1}\" width=\"{bw:.1}\" height=\"9\" fill=\"{colour}\"><title>{v}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{v}</text>",
                left + bw + 4.0,
                by + 8.0
            );
        }
    }
    h.push_str(
        "</svg>\n<table><tr><th>rule</th><th>baseline hits</th><th>new hits</th><th>note</th></tr>",
    );
    for (name, base, new, shadow) in &rows {
        let mut notes = Vec::new();
        if *shadow {
            notes.push("shadow".to_string());
        }
        for (side, v) in [("baseline", base), ("new", new)] {
            match v {
                Some(0) => notes.push(format!("never fires ({side})")),
                Some(n) if share(*n, bt.requests) > hot_share => notes.push(format!(
                    "fires on over {:.1}% of requests ({side})",
                    hot_share * 100.0
                )),
                None => notes.push(format!("not in {side}")),
                _ => {}
            }
        }
        let cell = |v: &Option<u64>| v.map_or("&ndash;".to_string(), |n| n.to_string());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            cell(base),
            cell(new),
            escape(&notes.join("; "))
        );
    }
    h.push_str("</table>\n");
}

/// Changed decisions by transition, and the first of them in a table.
fn changes_chart(h: &mut String, bt: &Backtest) {
    let p = &bt.paired;
    let _ = write!(h, "<h2>Changed decisions ({})</h2>", bt.changed);
    let mut bars = Vec::new();
    for (from, row) in bt.transitions.iter().enumerate() {
        for (to, n) in row.iter().enumerate() {
            if from != to {
                bars.push((
                    format!(
                        "{} \u{2192} {}",
                        OUTCOMES[from].as_str(),
                        OUTCOMES[to].as_str()
                    ),
                    *n,
                ));
            }
        }
    }
    let top = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let (w, row_h, left) = (1000.0, 22.0, 140.0);
    let ht = row_h * bars.len() as f64 + 10.0;
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"changes\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"changed decisions\">"
    );
    let scale = (w - left - 80.0) / top as f64;
    for (i, (name, n)) in bars.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let bw = (*n as f64 * scale).max(if *n > 0 { 1.0 } else { 0.0 });
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{name}</text>\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"14\" fill=\"{CHANGED_COLOUR}\"><title>{n}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{n}</text>",
            left - 6.0,
            y + 11.0,
            left + bw + 4.0,
            y + 11.0
        );
    }
    h.push_str("</svg>\n");
    if bt.changed_sample.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<p>The first {} changed requests (<code>--changes FILE</code> writes them all):</p>\
         <table><tr><th>line</th><th>id</th><th>kind</th><th>at</th><th>baseline</th><th>new</th><th>label</th></tr>",
        bt.changed_sample.len()
    );
    for c in &bt.changed_sample {
        let label = c.label.as_ref().map_or(String::new(), |l| {
            format!(
                "{} {}",
                if l.fraud { "fraud" } else { "legit" },
                escape(&l.story)
            )
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{} {}</td><td>{label}</td></tr>",
            c.line,
            escape(&c.id),
            c.kind.as_str(),
            c.at.to_rfc3339_utc(),
            c.baseline.outcome.as_str(),
            escape(&names(&p.baseline, c.baseline.matched).join(", ")),
            c.new.outcome.as_str(),
            escape(&names(&p.new, c.new.matched).join(", ")),
        );
    }
    h.push_str("</table>\n");
}

fn labels_table(h: &mut String, bt: &Backtest) {
    if bt.labeled == 0 {
        return;
    }
    let pct = percent;
    let _ = write!(
        h,
        "<h2>Labels</h2><p>{} labeled requests; stopped means held or denied.</p>\
         <table><tr><th>ruleset</th><th>fraud caught</th><th>fraud missed</th><th>legit stopped</th><th>legit passed</th><th>precision</th><th>recall</th></tr>",
        bt.labeled
    );
    for (name, side) in [("baseline", &bt.baseline), ("new", &bt.new)] {
        let c = &side.confusion;
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.caught,
            c.missed,
            c.stopped_legit,
            c.passed_legit,
            pct(c.precision()),
            pct(c.recall())
        );
    }
    h.push_str(
        "</table><table><tr><th>rule</th><th>ruleset</th><th>on fraud</th><th>on legit</th><th>precision</th></tr>",
    );
    for (name, rules, side) in [
        ("baseline", &bt.paired.baseline, &bt.baseline),
        ("new", &bt.paired.new, &bt.new),
    ] {
        for (r, st) in rules.rules.iter().zip(&side.rules) {
            let on_labeled = st.fraud_hits + st.legit_hits;
            let precision = pct((on_labeled > 0).then(|| st.fraud_hits as f64 / on_labeled as f64));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{name}</td><td>{}</td><td>{}</td><td>{precision}</td></tr>",
                escape(&r.name),
                st.fraud_hits,
                st.legit_hits
            );
        }
    }
    h.push_str("</table>\n");
}
