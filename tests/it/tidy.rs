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
//! - The module import graph (a node per file of `src/` but the crate
//!   roots, an edge per `crate::`, `super::`, `self::` or declared-child path
//!   in non-test code, grouped imports expanded, resolved to the longest
//!   module file it names) has no loop, between files or between top-level
//!   modules: in a loop neither module can be understood, tested or changed
//!   alone. And it keeps its layers: the core (`contract`, `rules`,
//!   `history`, `engine`) imports only the core, so it stays free of the
//!   edges (I/O, transport, storage, the command line); the `gateway`
//!   imports no `edge`, `server`, `cli` or command module; nothing but `cli`
//!   imports `cli`. Each message names the import as `file:line path`.
//! - Every `src/**/*.rs` starts with a `//!` module doc comment, and the
//!   manifest's lints table forbids unsafe code in every target.
//! - The README's quick start holds the two commands a newcomer runs, and
//!   `.ci/run` runs the tests, rustfmt and clippy as the issue says.

use crate::support::{read, repo};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    // Every target of the crate forbids it through the manifest's lints
    // table (`[lints.rust]`), which the crate roots no longer repeat.
    let manifest = read(&repo().join("Cargo.toml"));
    let lints: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "[lints.rust]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .collect();
    assert!(
        lints.contains(&r#"unsafe_code = "forbid""#),
        "Cargo.toml's [lints.rust] lacks unsafe_code = \"forbid\": {lints:?}"
    );
    for root in ["src/lib.rs", "src/main.rs"] {
        let toks = lex(&read(&repo().join(root)));
        let allows = toks.windows(3).any(|w| {
            matches!(w[0].text.as_str(), "allow" | "expect") && w[2].text == "unsafe_code"
        });
        assert!(!allows, "{root} allows unsafe code");
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

/// One reference from a file's non-test code to another module's file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    /// The importing file's module path (`edge::quic::wire`).
    from: String,
    /// The imported file's module path.
    to: String,
    /// The importing file, as `src/...`.
    file: String,
    line: usize,
    /// The path as written, grouped imports expanded (`crate::b::c::Y`).
    path: String,
}

impl Import {
    fn at(&self) -> String {
        format!("{}:{} {}", self.file, self.line, self.path)
    }
}

/// The module import graph: a node per source file, named by its module
/// path, and an edge per reference from one file's non-test code to
/// another module's file.
struct Graph {
    /// The module paths of the files.
    modules: BTreeSet<String>,
    /// In file order, then token order.
    imports: Vec<Import>,
}

/// The module path of a source file: `src/a.rs` and `src/a/mod.rs` are
/// `a`, `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`. None for the crate
/// roots `src/lib.rs` (it only declares modules) and `src/main.rs` (a
/// separate crate), and for files outside `src/`.
fn module_of(rel: &str) -> Option<String> {
    let rel = rel.replace('\\', "/");
    let path = rel.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut segments: Vec<&str> = path.split('/').collect();
    if segments.len() > 1 && segments.last() == Some(&"mod") {
        segments.pop();
    }
    if segments == ["lib"] || segments == ["main"] {
        return None;
    }
    Some(segments.join("::"))
}

fn is_ident(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// For each token, the inline modules (`mod x { .. }`) it is inside.
fn inline_scopes(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut scopes = Vec::with_capacity(toks.len());
    // Each open inline module, with the brace depth inside its block.
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending = None;
    for (i, t) in toks.iter().enumerate() {
        match t.text.as_str() {
            "{" => {
                depth += 1;
                if let Some(name) = pending.take() {
                    open.push((name, depth));
                }
            }
            "}" => {
                if open.last().is_some_and(|(_, d)| *d == depth) {
                    open.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if toks.get(i + 2).is_some_and(|n| n.text == "{") => {
                pending = Some(toks[i + 1].text.clone());
            }
            _ => {}
        }
        scopes.push(open.iter().map(|(name, _)| name.clone()).collect());
    }
    scopes
}

/// The leaves of the path tree that starts at `toks[i]`, each as the
/// indices of its segments after `segments`: `a::{b, c::{d, e as f}, *}`
/// gives `a::b`, `a::c::d`, `a::c::e` and `a::*`. Returns the index just
/// past the tree.
fn path_tree(
    toks: &[Tok],
    mut i: usize,
    mut segments: Vec<usize>,
    leaves: &mut Vec<Vec<usize>>,
) -> usize {
    while let Some(t) = toks.get(i) {
        if t.text == "{" {
            i += 1;
            loop {
                match toks.get(i).map(|t| t.text.as_str()) {
                    None => return i,
                    Some("}") => return i + 1,
                    Some(",") => i += 1,
                    Some(_) => {
                        i = path_tree(toks, i, segments.clone(), leaves).max(i + 1);
                        // `as name`: on to this group's next `,` or its `}`.
                        while toks.get(i).is_some_and(|t| t.text != "," && t.text != "}") {
                            i += 1;
                        }
                    }
                }
            }
        }
        if !is_ident(&t.text) && t.text != "*" {
            break;
        }
        segments.push(i);
        i += 1;
        if toks.get(i).is_some_and(|t| t.text == "::") {
            i += 1;
        } else {
            break;
        }
    }
    if !segments.is_empty() {
        leaves.push(segments);
    }
    i
}

/// The absolute path (segments from the crate root) that `segments`
/// names when written in module `here` (the file's module, then the inline
/// modules around the path), or None if it does not start at `crate`,
/// `self`, `super` or one of `children` (the file's `mod x;`, seen only
/// outside inline modules).
fn absolute(
    segments: &[&str],
    mut here: Vec<String>,
    inline: bool,
    children: &[String],
) -> Option<Vec<String>> {
    let mut rest = segments;
    match *rest.first()? {
        "crate" => {
            here.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {}
        first if !inline && children.iter().any(|c| c == first) => {}
        _ => return None,
    }
    while rest.first() == Some(&"super") {
        // `super` of the crate root does not compile; it names nothing.
        here.pop()?;
        rest = &rest[1..];
    }
    here.extend(rest.iter().map(|s| s.to_string()));
    Some(here)
}

/// The module import graph of `sources` (`(path as src/..., text)`): a
/// node per file, an edge A -> B per path in A's non-test tokens that names
/// B's module (`crate::...`, `super::...`, `self::...`, or a child the file
/// declares with `mod x;`), resolved to the longest prefix that is a module
/// file. Paths to the crate root or to no module file make no edge, nor do a
/// file's paths to itself, its `mod x;` declarations, or its `pub use` of
/// its own descendants (a module's facade re-exporting its parts).
fn import_graph(sources: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = sources
        .iter()
        .filter_map(|(rel, _)| module_of(rel))
        .collect();
    let mut imports = Vec::new();
    for (rel, src) in sources {
        let Some(from) = module_of(rel) else {
            continue;
        };
        let file_module: Vec<String> = from.split("::").map(str::to_string).collect();
        let toks = non_test(&lex(src));
        let scopes = inline_scopes(&toks);
        let children: Vec<String> = toks
            .windows(3)
            .zip(&scopes)
            .filter(|(w, scope)| scope.is_empty() && w[0].text == "mod" && w[2].text == ";")
            .map(|(w, _)| w[1].text.clone())
            .collect();
        let text = |i: usize| toks.get(i).map_or("", |t| t.text.as_str());
        let mut i = 0;
        while i < toks.len() {
            let after = |w: &str| i > 0 && text(i - 1) == w;
            // A path's first segment: not its middle, nor a field or method.
            if !is_ident(text(i)) || text(i + 1) != "::" || after("::") || after(".") {
                i += 1;
                continue;
            }
            // The whole path tree, so that `std::{time::Duration}` in a
            // file with `mod time;` is one path, of `std`.
            let mut leaves = Vec::new();
            let end = path_tree(&toks, i, Vec::new(), &mut leaves).max(i + 1);
            let inline = !scopes[i].is_empty();
            let starts = matches!(text(i), "crate" | "self" | "super")
                || (!inline && children.iter().any(|c| c == text(i)));
            // `pub(in crate::a)` names an ancestor, not a dependency.
            let visibility = after("in") && i > 1 && text(i - 2) == "(";
            if !starts || visibility {
                i = end;
                continue;
            }
            // `pub use child::X;` is the facade of a module re-exporting its
            // own parts, not a dependency: a child may use its parent's
            // other items without the two making a loop.
            let reexport = after("use") && i > 1 && matches!(text(i - 2), "pub" | ")");
            let here: Vec<String> = file_module.iter().chain(&scopes[i]).cloned().collect();
            for leaf in leaves {
                let mut segments: Vec<&str> = leaf.iter().map(|&s| text(s)).collect();
                if segments.len() > 1 && segments.last() == Some(&"self") {
                    segments.pop();
                }
                let Some(abs) = absolute(&segments, here.clone(), inline, &children) else {
                    continue;
                };
                let to = (1..=abs.len())
                    .rev()
                    .map(|n| abs[..n].join("::"))
                    .find(|m| modules.contains(m));
                let Some(to) = to.filter(|to| *to != from) else {
                    continue;
                };
                if reexport && to.starts_with(&format!("{from}::")) {
                    continue;
                }
                imports.push(Import {
                    from: from.clone(),
                    to,
                    file: rel.clone(),
                    // Invariant: a leaf has at least one segment.
                    line: toks[*leaf.last().expect("a segment")].line,
                    path: segments.join("::"),
                });
            }
            i = end;
        }
    }
    Graph { modules, imports }
}

/// The sources under `src/`, as `import_graph` takes them.
fn src_sources() -> Vec<(String, String)> {
    rust_files(&repo().join("src"))
        .into_iter()
        .map(|f| (rel(&f).replace('\\', "/"), read(&f)))
        .collect()
}

/// The imports between top-level modules (the first segment of a module
/// path: `edge::quic::wire` is `edge`), each with the import behind it.
fn top_level(imports: &[Import]) -> Vec<Import> {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    imports
        .iter()
        .map(|i| Import {
            from: top(&i.from),
            to: top(&i.to),
            ..i.clone()
        })
        .filter(|i| i.from != i.to)
        .collect()
}

/// Tarjan's strongly connected components of the graph `next` (node ->
/// the nodes it has an edge to).
fn strongly_connected(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        count: usize,
        components: Vec<Vec<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.count);
            self.low[v] = self.count;
            self.count += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            let next = self.next;
            for &w in &next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if self.index[v] == Some(self.low[v]) {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort();
                self.components.push(component);
            }
        }
    }
    let n = next.len();
    let mut walk = Walk {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        count: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if walk.index[v].is_none() {
            walk.visit(v);
        }
    }
    walk.components
}

/// The loops among `imports`: for every import that lies on a loop, the
/// shortest loop through it, each loop once, as the import behind each of
/// its arrows (the first one, where a file imports a module in several
/// places), starting from its least module.
fn loops(imports: &[Import]) -> Vec<Vec<Import>> {
    let names: Vec<&str> = imports
        .iter()
        .flat_map(|i| [i.from.as_str(), i.to.as_str()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let id = |m: &str| names.binary_search(&m).unwrap_or_else(|_| unreachable!());
    let mut behind: BTreeMap<(usize, usize), &Import> = BTreeMap::new();
    for i in imports {
        behind.entry((id(&i.from), id(&i.to))).or_insert(i);
    }
    let mut next = vec![Vec::new(); names.len()];
    for &(a, b) in behind.keys() {
        next[a].push(b);
    }
    let mut found = BTreeSet::new();
    for component in strongly_connected(&next) {
        if component.len() < 2 {
            continue;
        }
        let inside = |v: &usize| component.binary_search(v).is_ok();
        for &u in &component {
            for &v in next[u].iter().filter(|v| inside(v)) {
                // The shortest way back from v to u, inside the component.
                let mut came_from = BTreeMap::from([(v, v)]);
                let mut queue = VecDeque::from([v]);
                while let Some(w) = queue.pop_front() {
                    if w == u {
                        break;
                    }
                    for &x in next[w].iter().filter(|x| inside(x)) {
                        if let std::collections::btree_map::Entry::Vacant(e) = came_from.entry(x) {
                            e.insert(w);
                            queue.push_back(x);
                        }
                    }
                }
                let mut cycle = vec![u];
                let mut w = u;
                while w != v {
                    w = came_from[&w];
                    cycle.push(w);
                }
                // cycle is u <- ... <- v, backwards; turn it to u -> v -> ...
                cycle[1..].reverse();
                let start = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                cycle.rotate_left(start);
                found.insert(cycle);
            }
        }
    }
    found
        .into_iter()
        .map(|cycle| {
            (0..cycle.len())
                .map(|k| behind[&(cycle[k], cycle[(k + 1) % cycle.len()])].clone())
                .collect()
        })
        .collect()
}

/// A loop as `a -> b -> c -> a`, then the import behind each arrow.
fn show_loop(arrows: &[Import]) -> String {
    let mut text: Vec<&str> = arrows.iter().map(|i| i.from.as_str()).collect();
    text.extend(arrows.first().map(|i| i.from.as_str()));
    let mut text = text.join(" -> ");
    for i in arrows {
        text += &format!("\n    {} -> {}: {}", i.from, i.to, i.at());
    }
    text
}

/// Both loop reports of a graph: between files, and between top-level
/// modules.
fn all_loops(graph: &Graph) -> (Vec<String>, Vec<String>) {
    let show = |imports: &[Import]| loops(imports).iter().map(|l| show_loop(l)).collect();
    (show(&graph.imports), show(&top_level(&graph.imports)))
}

/// A set of modules, by module path prefix (`server` is `server` and
/// `server::...`).
#[derive(Debug, Clone, Copy)]
enum Modules {
    Of(&'static [&'static str]),
    AllBut(&'static [&'static str]),
}

impl Modules {
    fn contains(self, module: &str) -> bool {
        let under = |prefixes: &[&str]| {
            prefixes.iter().any(|p| {
                module
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
        };
        match self {
            Modules::Of(prefixes) => under(prefixes),
            Modules::AllBut(prefixes) => !under(prefixes),
        }
    }
}

/// A layering rule: no file of `files` imports a module of `may_not_import`.
#[derive(Debug)]
struct Layer {
    name: &'static str,
    files: Modules,
    may_not_import: Modules,
}

const CORE: &[&str] = &["contract", "rules", "history", "engine"];

const LAYERS: &[Layer] = &[
    Layer {
        name: "the core imports only the core",
        files: Modules::Of(CORE),
        may_not_import: Modules::AllBut(CORE),
    },
    Layer {
        name: "the gateway imports no edge, server, command line or command",
        files: Modules::Of(&["gateway"]),
        may_not_import: Modules::Of(&[
            "edge", "server", "cli", "replay", "backtest", "explain", "traffic", "client",
            "loadgen",
        ]),
    },
    Layer {
        name: "nothing but the command line imports the command line",
        files: Modules::AllBut(&["cli"]),
        may_not_import: Modules::Of(&["cli"]),
    },
];

/// The imports that break `layer`, as `file:line path (from -> to)`.
fn layer_violations(graph: &Graph, layer: &Layer) -> Vec<String> {
    graph
        .imports
        .iter()
        .filter(|i| layer.files.contains(&i.from) && layer.may_not_import.contains(&i.to))
        .map(|i| format!("{} ({} -> {})", i.at(), i.from, i.to))
        .collect()
}

/// Checks `LAYERS[k]` on the real tree: the rule governs some file, and no
/// file it governs breaks it.
fn check_layer(k: usize) {
    let layer = &LAYERS[k];
    let graph = import_graph(&src_sources());
    assert!(
        graph.modules.iter().any(|m| layer.files.contains(m)),
        "{}: no file under src/ is one of {:?}",
        layer.name,
        layer.files
    );
    let found = layer_violations(&graph, layer);
    assert!(
        found.is_empty(),
        "{}: {} import(s) break it:\n{}",
        layer.name,
        found.len(),
        found.join("\n")
    );
}

#[test]
fn no_module_imports_another_in_a_loop() {
    let graph = import_graph(&src_sources());
    assert!(
        graph.imports.len() >= 10 && CORE.iter().all(|m| graph.modules.contains(*m)),
        "the import graph of src/ is implausibly small: {} modules, {} imports",
        graph.modules.len(),
        graph.imports.len()
    );
    let files = loops(&graph.imports);
    let top = loops(&top_level(&graph.imports));
    // Every import on a loop once: the ones to break.
    let on_loops = |loops: &[Vec<Import>]| {
        let arrows: BTreeSet<(String, usize, String, String)> = loops
            .iter()
            .flatten()
            .map(|i| {
                (
                    i.file.clone(),
                    i.line,
                    i.path.clone(),
                    format!("{} -> {}", i.from, i.to),
                )
            })
            .collect();
        let arrows: Vec<String> = arrows
            .into_iter()
            .map(|(file, line, path, arrow)| format!("{file}:{line} {path} ({arrow})"))
            .collect();
        arrows.join("\n")
    };
    let show = |loops: &[Vec<Import>]| {
        loops
            .iter()
            .map(|l| show_loop(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        files.is_empty() && top.is_empty(),
        "modules import one another in a loop, so neither can be understood or changed alone.\n\
         The imports on a loop between files:\n{}\n\n\
         The imports on a loop between top-level modules:\n{}\n\n\
         {} loop(s) between files (for each import on a loop, the shortest loop through it):\n{}\n\n\
         {} loop(s) between top-level modules:\n{}",
        on_loops(&files),
        on_loops(&top),
        files.len(),
        show(&files),
        top.len(),
        show(&top)
    );
}

#[test]
fn the_core_imports_only_the_core() {
    check_layer(0);
}

#[test]
fn the_gateway_imports_no_edge() {
    check_layer(1);
}

#[test]
fn nothing_imports_the_command_line() {
    check_layer(2);
}

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

/// A graph's edges as `from -> to` (sorted, once each).
fn edges(graph: &Graph) -> Vec<String> {
    let set: BTreeSet<String> = graph
        .imports
        .iter()
        .map(|i| format!("{} -> {}", i.from, i.to))
        .collect();
    set.into_iter().collect()
}

#[test]
fn the_loop_check_finds_a_planted_loop() {
    let graph = import_graph(&sources(&[
        ("src/lib.rs", "pub mod a; pub mod b;"),
        (
            "src/a/mod.rs",
            "//! a\nmod c;\nuse crate::{engine::X, b::{Thing, deep::Y}};\npub struct Top;\n",
        ),
        (
            "src/b.rs",
            "//! b\npub struct Thing;\n\npub fn f() -> u8 {\n    crate::a::c::run()\n}\n",
        ),
        (
            "src/a/c.rs",
            "//! c\nuse super::Top;\npub fn run() -> u8 { 1 }\n",
        ),
        ("src/engine/mod.rs", "//! engine\npub struct X;\n"),
    ]));
    assert_eq!(
        edges(&graph),
        ["a -> b", "a -> engine", "a::c -> a", "b -> a::c"]
    );
    let (files, top) = all_loops(&graph);
    assert_eq!(
        files,
        ["a -> b -> a::c -> a\n    \
             a -> b: src/a/mod.rs:3 crate::b::Thing\n    \
             b -> a::c: src/b.rs:5 crate::a::c::run\n    \
             a::c -> a: src/a/c.rs:2 super::Top"]
    );
    assert_eq!(
        top,
        ["a -> b -> a\n    \
             a -> b: src/a/mod.rs:3 crate::b::Thing\n    \
             b -> a: src/b.rs:5 crate::a::c::run"]
    );

    // A parent using its child, the child importing the parent.
    let graph = import_graph(&sources(&[
        (
            "src/m/mod.rs",
            "//! m\nmod child;\nuse child::X;\npub struct Y;\n",
        ),
        (
            "src/m/child.rs",
            "//! child\nuse super::Y;\npub struct X(pub Y);\n",
        ),
    ]));
    let (files, top) = all_loops(&graph);
    assert_eq!(
        files,
        ["m -> m::child -> m\n    \
             m -> m::child: src/m/mod.rs:3 child::X\n    \
             m::child -> m: src/m/child.rs:2 super::Y"]
    );
    assert_eq!(top, Vec::<String>::new());

    // A parent that only re-exports its child is its facade: no loop.
    let graph = import_graph(&sources(&[
        (
            "src/m/mod.rs",
            "//! m\nmod child;\npub use child::X;\npub(crate) use self::child::Z;\npub struct Y;\n",
        ),
        (
            "src/m/child.rs",
            "//! child\nuse super::Y;\npub struct X(pub Y);\npub struct Z;\n",
        ),
    ]));
    assert_eq!(edges(&graph), ["m::child -> m"]);
    assert_eq!(all_loops(&graph), (vec![], vec![]));

    // Without the re-export there is no loop: `mod child;` is no import.
    let graph = import_graph(&sources(&[
        ("src/m/mod.rs", "//! m\nmod child;\npub struct Y;\n"),
        ("src/m/child.rs", "//! child\nuse super::Y;\n"),
    ]));
    assert_eq!(edges(&graph), ["m::child -> m"]);
    assert_eq!(all_loops(&graph), (vec![], vec![]));
}

#[test]
fn the_checks_find_one_line_planted_in_the_real_tree() {
    let real = src_sources();
    let before = import_graph(&real);
    let mut planted = real.clone();
    let (_, contract) = planted
        .iter_mut()
        .find(|(p, _)| p == "src/contract/mod.rs")
        .expect("src/contract/mod.rs is read");
    if !contract.ends_with('\n') {
        contract.push('\n');
    }
    let line = contract.lines().count() + 1;
    contract.push_str("use crate::cli::Cli;\n");
    let after = import_graph(&planted);
    let import = format!("src/contract/mod.rs:{line} crate::cli::Cli");

    for k in [0, 2] {
        let was = layer_violations(&before, &LAYERS[k]);
        let now = layer_violations(&after, &LAYERS[k]);
        let new: Vec<&String> = now.iter().filter(|v| !was.contains(v)).collect();
        assert_eq!(
            new,
            [&format!("{import} (contract -> cli)")],
            "{}",
            LAYERS[k].name
        );
    }

    // The loop check reports it if the command line reaches the contract.
    let mut reached = BTreeSet::from(["cli"]);
    let mut grew = true;
    while grew {
        grew = false;
        for i in &before.imports {
            if reached.contains(i.from.as_str()) && reached.insert(i.to.as_str()) {
                grew = true;
            }
        }
    }
    let (files, _) = all_loops(&after);
    let arrow = format!("    contract -> cli: {import}");
    let reported = files.iter().any(|l| l.lines().any(|a| a == arrow));
    assert_eq!(
        reported,
        reached.contains("contract"),
        "cli reaches contract: {}; loops after planting:\n{}",
        reached.contains("contract"),
        files.join("\n")
    );
}

#[test]
fn the_graph_reads_paths_not_comments_strings_or_tests() {
    let quiet = "\
//! crate::b::X in a module doc
// use crate::b::X;
/* crate::b::X /* nested */ */
/// [`crate::b::X`]
const S: &str = \"crate::b::X\";
const R: &str = r#\"use crate::b::X;\"#;
#[cfg(test)]
use crate::b::Z;
#[cfg(test)]
mod tests {
    use crate::b::X;
    fn f() { crate::b::y(); }
}
pub fn f(v: Vec<u8>) -> usize { v.iter().collect::<Vec<_>>().len() + std::b::X + ::b::X }
";
    let b = ("src/b.rs", "//! b\n");
    assert_eq!(
        edges(&import_graph(&sources(&[("src/a.rs", quiet), b]))),
        Vec::<String>::new()
    );
    let loud = format!("{quiet}fn g() {{ crate::b::y(); }}\n");
    let graph = import_graph(&sources(&[("src/a.rs", &loud), b]));
    assert_eq!(
        graph.imports.iter().map(Import::at).collect::<Vec<_>>(),
        ["src/a.rs:15 crate::b::y"]
    );
}

#[test]
fn the_graph_resolves_paths_to_the_longest_module_file() {
    let user = "\
//! x
use crate::a::b::Item;
use crate::Root;
use crate::nowhere::Thing;
use crate::x::Me;
";
    let a = ("src/a/mod.rs", "//! a\npub mod b;\n");
    let with_b = import_graph(&sources(&[
        ("src/x.rs", user),
        a,
        ("src/a/b.rs", "//! b\n"),
    ]));
    assert_eq!(edges(&with_b), ["x -> a::b"]);
    let without_b = import_graph(&sources(&[("src/x.rs", user), a]));
    assert_eq!(edges(&without_b), ["x -> a"]);

    // super, super::super, self, a declared child, groups with `self`, and
    // super inside an inline module.
    let graph = import_graph(&sources(&[
        (
            "src/a/mod.rs",
            "//! a\npub mod b;\npub mod inner { use super::b::B; }\n",
        ),
        ("src/a/b/mod.rs", "//! a::b\npub mod c;\nuse self::c::C;\n"),
        (
            "src/a/b/c.rs",
            "//! a::b::c\nuse super::super::x::{self, X};\nfn f() { super::super::B }\n",
        ),
        ("src/a/x.rs", "//! a::x\n"),
        ("src/main.rs", "use portcullis::a::b; use crate::a::x;"),
        ("src/lib.rs", "pub mod a; use crate::a::x;"),
        (
            "src/t.rs",
            "//! t\nmod u;\nuse u::{V, w::W};\nfn f() { u::g(); }\nmod i { fn f() { u::g(); } }\nuse std::{u::Z};\n",
        ),
        ("src/t/u.rs", "//! t::u\n"),
    ]));
    let imports: Vec<String> = graph
        .imports
        .iter()
        .map(|i| format!("{} -> {}: {}", i.from, i.to, i.at()))
        .collect();
    assert_eq!(
        imports,
        [
            "a -> a::b: src/a/mod.rs:3 super::b::B",
            "a::b -> a::b::c: src/a/b/mod.rs:3 self::c::C",
            "a::b::c -> a::x: src/a/b/c.rs:2 super::super::x",
            "a::b::c -> a::x: src/a/b/c.rs:2 super::super::x::X",
            "a::b::c -> a: src/a/b/c.rs:3 super::super::B",
            "t -> t::u: src/t.rs:3 u::V",
            "t -> t::u: src/t.rs:3 u::w::W",
            "t -> t::u: src/t.rs:4 u::g",
        ]
    );
}
