//! A compile error (file, line, column, what is wrong, a hint), where it
//! is ([`Pos`]), and how a command prints a file's errors.

use std::fmt;

/// A 1-based position in a rules file (column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A compile error: where, what, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
    pub hint: String,
}

impl RuleError {
    pub fn at(pos: Pos, message: String, hint: &str) -> Self {
        RuleError {
            file: String::new(),
            pos,
            message,
            hint: hint.to_string(),
        }
    }
}

/// Every error on its own lines, then how many: what a command prints when
/// a rules file does not compile.
pub fn render_errors(errs: &[RuleError]) -> String {
    let mut s = String::new();
    for e in errs {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "{} error(s); the rules do not compile",
        errs.len()
    ));
    s
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}
