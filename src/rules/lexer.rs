//! Tokens of the rules language, each with its line and column.

use super::error::{Pos, RuleError};
use super::limits::Limits;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name or a keyword; the parser tells them apart.
    Word(String),
    Int(i64),
    /// A duration in nanoseconds, with the text it was written as.
    Duration(i128, String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Plus,
    Minus,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Int(n) => format!("the number {n}"),
            Tok::Duration(_, s) => format!("the duration {s}"),
            Tok::Str(_) => "a string".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Eq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Splits a rules file into tokens. `#` starts a comment to the end of the line.
pub fn lex(src: &str, limits: &Limits) -> Result<Vec<(Tok, Pos)>, RuleError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let advance = |n: usize, i: &mut usize, col: &mut u32| {
            *i += n;
            *col += n as u32;
        };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            advance(1, &mut i, &mut col);
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                advance(1, &mut i, &mut col);
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                advance(1, &mut i, &mut col);
            }
            let word: String = chars[start..i].iter().collect();
            if word.chars().count() > limits.name_chars_max {
                return Err(RuleError::at(
                    pos,
                    format!(
                        "a name of {} characters is over name_chars_max ({})",
                        word.chars().count(),
                        limits.name_chars_max
                    ),
                    "use a shorter name",
                ));
            }
            out.push((Tok::Word(word), pos));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                advance(1, &mut i, &mut col);
            }
            let digits: String = chars[start..i].iter().collect();
            let Ok(n) = digits.parse::<i64>() else {
                return Err(RuleError::at(
                    pos,
                    format!("the number {digits} is too large"),
                    "numbers are whole and below 9223372036854775808",
                ));
            };
            let unit = chars.get(i).copied();
            if let Some(u) = unit.filter(|u| u.is_ascii_alphabetic()) {
                let per = match u {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    _ => {
                        return Err(RuleError::at(
                            pos,
                            format!("unknown duration unit `{u}` in {digits}{u}"),
                            "durations read like 30s, 15m, 48h or 7d",
                        ));
                    }
                };
                advance(1, &mut i, &mut col);
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    return Err(RuleError::at(
                        pos,
                        "a duration is a number and one unit".to_string(),
                        "durations read like 30s, 15m, 48h or 7d",
                    ));
                }
                let nanos = i128::from(n) * per * NANOS_PER_SEC;
                out.push((Tok::Duration(nanos, format!("{digits}{u}")), pos));
            } else {
                out.push((Tok::Int(n), pos));
            }
            continue;
        }
        if c == '"' {
            advance(1, &mut i, &mut col);
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None | Some('\n') => {
                        return Err(RuleError::at(
                            pos,
                            "this string is not closed".into(),
                            "end it with \" on the same line",
                        ));
                    }
                    Some('"') => {
                        advance(1, &mut i, &mut col);
                        break;
                    }
                    Some('\\') => {
                        let esc = chars.get(i + 1).copied();
                        match esc {
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            _ => {
                                return Err(RuleError::at(
                                    Pos { line, col },
                                    "unknown escape in a string".into(),
                                    "only \\\" and \\\\ are escapes",
                                ));
                            }
                        }
                        advance(2, &mut i, &mut col);
                    }
                    Some(ch) => {
                        s.push(*ch);
                        advance(1, &mut i, &mut col);
                    }
                }
            }
            out.push((Tok::Str(s), pos));
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, n) = match (c, next) {
            ('=', Some('=')) => (Tok::Eq, 2),
            ('!', Some('=')) => (Tok::Ne, 2),
            ('<', Some('=')) => (Tok::Le, 2),
            ('>', Some('=')) => (Tok::Ge, 2),
            ('<', _) => (Tok::Lt, 1),
            ('>', _) => (Tok::Gt, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            (',', _) => (Tok::Comma, 1),
            (':', _) => (Tok::Colon, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('=', _) => {
                return Err(RuleError::at(
                    pos,
                    "`=` alone is not an operator".into(),
                    "compare with == (or `is`)",
                ));
            }
            _ => {
                return Err(RuleError::at(
                    pos,
                    format!("unexpected character {c:?}"),
                    "rules use names, numbers, durations, \"strings\", ( ) [ ] , : + - and comparisons",
                ));
            }
        };
        advance(n, &mut i, &mut col);
        out.push((tok, pos));
    }
    out.push((Tok::Eof, Pos { line, col }));
    Ok(out)
}
