//! Repository hygiene that the compiler does not check, read from the
//! sources as text.
//!
//! - The decision core is sans-IO (issue 2: "no sockets, no tasks, no clock
//!   reads, no randomness; time comes in as a parameter"): `src/contract`,
//!   `src/rules`, `src/history` and `src/engine` name no `tokio`, `quinn`,
//!   `rand`, `std::net`, `std::fs`, `std::thread`, `std::process`,
//!   `std::env`, `Instant` or `SystemTime`. The check reads tokens, so words
//!   in comments and string literals do not count, and grouped imports
//!   (`use std::{fs, net}`) do.
//! - Non-test code does not `unwrap()` or `expect(...)` without saying why it
//!   cannot fail: a comment containing `Invariant` on the same line or in the
//!   comment block just above the expression (for a method chain split over
//!   lines, above the chain's first line).
//! - Every `src/**/*.rs` starts with a `//!` module doc comment, and
//!   `src/lib.rs` and `src/main.rs` forbid unsafe code.
//! - The README's quick start holds the two commands a newcomer runs, and
//!   `.ci/run` runs the tests, rustfmt and clippy as the issue says.

use crate::support::{read, repo};
use std::path::{Path, PathBuf};

/// A token of Rust source, with its 1-based line. Comments are dropped;
/// string, char and byte literals become the token `<lit>`, so that no word
/// inside them counts; lifetimes are kept as `'name`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    text: String,
    line: usize,
}

fn lex(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_start(&chars, i) {
            let line_at_start = line;
            // r"..", r#".."#, br#".."#, cr".."
            let mut j = i + len;
            let hashes = chars[i..j].iter().filter(|c| **c == '#').count();
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| at(j + 1 + h) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            toks.push(lit(line_at_start));
            i = j;
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            toks.push(lit(line));
            let mut j = if c == '"' { i + 1 } else { i + 2 };
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    if at(j + 1) == '\n' {
                        line += 1;
                    }
                    j += 1;
                } else if chars[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let q = if c == '\'' { i } else { i + 1 };
            if at(q + 1) == '\\' || at(q + 2) == '\'' {
                toks.push(lit(line));
            }
            if at(q + 1) == '\\' {
                // An escaped char literal: skip the escaped char, then to the closing quote.
                let mut j = q + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or label.
                let mut j = q + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                toks.push(Tok {
                    text: chars[q..j].iter().collect(),
                    line,
                });
                i = j;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            toks.push(Tok {
                text: chars[i..j].iter().collect(),
                line,
            });
            i = j;
        } else if c == ':' && at(i + 1) == ':' {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

fn lit(line: usize) -> Tok {
    Tok {
        text: "<lit>".into(),
        line,
    }
}

/// The length of a raw string's opening (`r"`, `r#"`, `br##"`), if one starts at `i`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(j + 1 - i)
}

/// The tokens of `src` outside `#[cfg(test)]` items.
fn non_test(toks: &[Tok]) -> Vec<Tok> {
    let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_cfg_test = toks.len() - i >= cfg_test.len()
            && cfg_test.iter().zip(&toks[i..]).all(|(w, t)| t.text == *w);
        if !is_cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        // Skip the attribute and the item it guards: up to its first `;` or
        // its first `{ ... }` block, whichever comes first at depth 0.
        i += cfg_test.len();
        while i < toks.len() && toks[i].text != ";" && toks[i].text != "{" {
            i += 1;
        }
        if i < toks.len() && toks[i].text == "{" {
            let mut depth = 0;
            while i < toks.len() {
                match toks[i].text.as_str() {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        i += 1;
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

/// Words the sans-IO core may not name, alone or after `std::`.
const FORBIDDEN_WORDS: &[&str] = &["tokio", "quinn", "rand", "Instant", "SystemTime"];
const FORBIDDEN_STD: &[&str] = &["net", "fs", "thread", "process", "env"];

/// Violations of the sans-IO rule in one file's tokens.
fn io_violations(toks: &[Tok]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if FORBIDDEN_WORDS.contains(&t.text.as_str()) {
            found.push((t.line, t.text.clone()));
        }
        if t.text == "std" && toks.get(i + 1).is_some_and(|n| n.text == "::") {
            match toks.get(i + 2).map(|n| n.text.as_str()) {
                Some("{") => {
                    // A grouped import: every first segment inside the braces.
                    let mut depth = 0;
                    let mut expect_segment = true;
                    for g in &toks[i + 2..] {
                        match g.text.as_str() {
                            "{" => {
                                depth += 1;
                                expect_segment = depth == 1;
                                continue;
                            }
                            "}" => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            "," if depth == 1 => {
                                expect_segment = true;
                                continue;
                            }
                            w if expect_segment && depth == 1 && FORBIDDEN_STD.contains(&w) => {
                                found.push((g.line, format!("std::{w}")));
                            }
                            _ => {}
                        }
                        expect_segment = false;
                    }
                }
                Some(w) if FORBIDDEN_STD.contains(&w) => found.push((t.line, format!("std::{w}"))),
                _ => {}
            }
        }
    }
    found
}

#[test]
fn the_decision_core_is_sans_io() {
    let mut violations = Vec::new();
    let mut files = 0;
    for module in ["contract", "rules", "history", "engine"] {
        let dir = repo().join("src").join(module);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        for f in rust_files(&dir) {
            files += 1;
            for (line, what) in io_violations(&lex(&read(&f))) {
                violations.push(format!("{}:{line}: {what}", rel(&f)));
            }
        }
    }
    assert!(files >= 4, "only {files} files read");
    assert!(
        violations.is_empty(),
        "the sans-IO core names I/O, clocks or randomness:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_io_check_sees_through_comments_strings_and_groups() {
    let src = r##"
        // use std::fs; in a comment is fine
        /* tokio::spawn in a block comment /* nested */ is fine */
        const S: &str = "std::net and rand in a string are fine";
        const R: &str = r#"std::thread in a raw string"#;
        fn f<'a>(x: &'a str) -> char { let _ = 'x'; let _ = '\''; x.len(); 'y' }
        use std::time::Duration;
        use std::{time::Duration as D, collections};
    "##;
    assert_eq!(io_violations(&lex(src)), vec![]);
    let bad = "use std::{collections::HashMap, fs, io};\nfn f() { let t = std::time::Instant::now(); rand::random(); }\nuse std::env;";
    let found: Vec<String> = io_violations(&lex(bad))
        .into_iter()
        .map(|(l, w)| format!("{l}:{w}"))
        .collect();
    assert_eq!(found, ["1:std::fs", "2:Instant", "2:rand", "3:std::env"]);
}

/// `unwrap()` / `expect(` calls in non-test code without an `Invariant` comment.
fn unexplained_unwraps(src: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = src.lines().collect();
    let toks = non_test(&lex(src));
    let mut found = Vec::new();
    for (i, w) in toks.windows(4).enumerate() {
        let text: Vec<&str> = w.iter().map(|t| t.text.as_str()).collect();
        let call = match text[..] {
            [".", "unwrap", "(", ")"] => true,
            // `Option::expect` and `Result::expect` take one argument; a
            // namesake method (a parser's `expect(token, what)`) takes more.
            [".", "expect", "(", _] => top_level_args(&toks[i + 2..]) == 1,
            _ => false,
        };
        if !call {
            continue;
        }
        let line = w[1].line;
        if !explained(&lines, line) {
            found.push((line, lines[line - 1].trim().to_string()));
        }
    }
    found
}

/// The number of arguments of the call whose `(` is `toks[0]`.
fn top_level_args(toks: &[Tok]) -> usize {
    let mut depth = 0;
    let mut args = 0;
    let mut in_arg = false;
    for t in toks {
        match t.text.as_str() {
            "(" | "[" | "{" => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => {
                in_arg = false;
                continue;
            }
            _ => {}
        }
        if !in_arg {
            in_arg = true;
            args += 1;
        }
    }
    args
}

/// Whether line `n` (1-based) has an `Invariant` comment on it or in the
/// comment block just above its expression. An expression split over lines
/// starts higher up: a line starting with `.` or `?` continues the one above
/// (a method chain), and so does a line after one ending with `=`, `(` or
/// `=>` (a wrapped assignment or argument). Comments may sit between the
/// parts.
fn explained(lines: &[&str], n: usize) -> bool {
    let has = |l: &str| l.find("//").is_some_and(|c| l[c..].contains("Invariant"));
    let is_comment = |l: &str| l.trim_start().starts_with("//");
    let continues = |above: &str, line: &str| {
        let (above, line) = (above.trim_end(), line.trim_start());
        line.starts_with('.')
            || line.starts_with('?')
            || above.ends_with('=')
            || above.ends_with('(')
            || above.ends_with("=>")
    };
    let mut first = n - 1;
    loop {
        if has(lines[first]) {
            return true;
        }
        // The nearest code line above, checking the comments in between.
        let mut above = first;
        while above > 0 && is_comment(lines[above - 1]) {
            above -= 1;
            if has(lines[above]) {
                return true;
            }
        }
        if above == 0 || !continues(lines[above - 1], lines[first]) {
            return false;
        }
        first = above - 1;
    }
}

#[test]
fn the_unwrap_check_finds_what_it_should() {
    let src = "\
fn a() -> u8 {
    // Invariant: the parse of a literal.
    \"1\".parse().unwrap()
}
fn b() -> u8 {
    \"1\".parse().expect(\"one\")
}
fn c() -> u8 {
    // Invariant: the parse of a literal.
    \"1\"
        .parse()
        .expect(\"one\")
}
fn d() -> u8 { \"1\".parse().unwrap() } // Invariant: a literal.
fn e() -> u8 { \"1\".parse().unwrap_or(0) }
fn f() -> u8 { let s = \".unwrap()\"; s.len() as u8 }
#[cfg(test)]
mod tests {
    fn g() { Some(1).unwrap(); }
}
fn h() -> u8 { Some(1).unwrap() }
fn i() { cursor.expect(b'-', \"a dash\")?; parser.expect(Tok::RParen, \"`)`\", \"hint\")?; }
fn j() -> u8 { Some(1).expect(&format!(\"{}, {}\", 1, 2)) }
fn k() {
    // Invariant: a literal.
    let x =
        Some(1).unwrap();
    let y = 2;
    let z = Some(3)
        .map(|v| v + 1)
        .unwrap();
}
";
    let found: Vec<usize> = unexplained_unwraps(src)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(found, [6, 21, 23, 31]);
}

#[test]
fn non_test_code_explains_every_unwrap_and_expect() {
    let mut violations = Vec::new();
    for f in rust_files(&repo().join("src")) {
        for (line, text) in unexplained_unwraps(&read(&f)) {
            violations.push(format!("{}:{line}: {text}", rel(&f)));
        }
    }
    assert!(
        violations.is_empty(),
        "{} unwrap()/expect( call(s) without an `// Invariant: ...` comment on the line or just above:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn every_source_file_starts_with_a_module_doc_comment() {
    let missing: Vec<String> = rust_files(&repo().join("src"))
        .into_iter()
        .filter(|f| !read(f).starts_with("//!"))
        .map(|f| rel(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "files that do not start with a `//!` doc comment: {missing:?}"
    );
}

#[test]
fn the_crate_roots_forbid_unsafe_code() {
    for root in ["src/lib.rs", "src/main.rs"] {
        let toks = lex(&read(&repo().join(root)));
        let want = ["#", "!", "[", "forbid", "(", "unsafe_code", ")", "]"];
        let found = toks
            .windows(want.len())
            .any(|w| w.iter().zip(want).all(|(t, s)| t.text == s));
        assert!(found, "{root} lacks #![forbid(unsafe_code)]");
    }
}

#[test]
fn the_readme_quick_start_has_the_two_commands() {
    let readme = read(&repo().join("README.md"));
    let run = readme
        .lines()
        .find(|l| l.contains("cargo run --release -- replay"))
        .unwrap_or_else(|| panic!("README.md has no `cargo run --release -- replay ...` command"));
    assert!(
        readme.contains("cargo test --locked"),
        "README.md has no `cargo test --locked` command"
    );
    // The files the replay command names exist in the repository.
    let args: Vec<&str> = run
        .split("replay")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .map(|a| a.trim_matches('`'))
        .filter(|a| !a.is_empty())
        .collect();
    let mut i = 0;
    let mut files = Vec::new();
    while i < args.len() {
        match args[i] {
            "--rules" => {
                files.extend(args.get(i + 1).copied());
                i += 2;
            }
            "--list" => {
                files.extend(
                    args.get(i + 1)
                        .and_then(|a| a.split_once('='))
                        .map(|(_, f)| f),
                );
                i += 2;
            }
            a if a.starts_with('-')
                || a.starts_with('#')
                || a.contains('|')
                || a.starts_with('>') =>
            {
                break;
            }
            a => {
                files.push(a);
                i += 1;
            }
        }
    }
    assert!(
        !files.is_empty(),
        "the replay command names no events file: {run}"
    );
    for f in files {
        assert!(
            repo().join(f).is_file(),
            "README's replay command names {f}, which is not in the repository"
        );
    }
}

#[test]
fn ci_runs_the_tests_rustfmt_and_clippy() {
    let ci = read(&repo().join(".ci/run"));
    // Commands, not comments or what the script prints.
    let lines: Vec<&str> = ci
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#') && !l.starts_with("echo ") && !l.starts_with("printf "))
        .collect();
    let has = |want: &[&str]| lines.iter().any(|l| want.iter().all(|w| l.contains(w)));
    assert!(
        has(&["cargo test", "--locked"]),
        ".ci/run does not run `cargo test --locked`"
    );
    assert!(
        has(&["cargo fmt", "--check"]),
        ".ci/run does not run `cargo fmt --check`"
    );
    assert!(
        has(&["cargo clippy", "--all-targets", "-D warnings"]),
        ".ci/run does not run `cargo clippy --all-targets ... -- -D warnings`"
    );
}

/// No rule lives in Rust: no name, threshold or window of the default
/// ruleset appears in the sources (string literals included), so the
/// default set can be edited like any other and the engine derives its
/// history from the compiled rules alone.
#[test]
fn no_default_rule_is_written_in_rust() {
    let rules = portcullis::rules::CompiledRules::default_rules();
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 13);
    // Windows and thresholds as the default file spells them.
    let literals = ["\"48h\"", "\"30d\"", "\"7d\"", "\"24h\""];
    let mut found = Vec::new();
    for path in rust_files(&repo().join("src")) {
        let full = read(&path);
        // Unit tests (at the end of each file) may name rules.
        let text = full.split("#[cfg(test)]").next().unwrap_or("");
        for name in &names {
            if text.contains(name) {
                found.push(format!("{}: rule name {name}", rel(&path)));
            }
        }
        for lit in literals {
            if text.contains(lit) {
                found.push(format!("{}: window {lit}", rel(&path)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the default ruleset leaks into Rust:\n{}",
        found.join("\n")
    );
}
