//! The rules grammar: tokens to a syntax tree, with depth and size limits
//! checked while parsing so that no input can exhaust the stack.
//!
//! ```text
//! file     := ('ruleset' STRING)? (list | rule)*
//! list     := 'list' NAME ':' TYPE
//! rule     := 'rule' NAME 'shadow'? action ('description' STRING)? 'when' expr
//! action   := 'allow' | 'deny' | 'hold' 'verify' NAME (',' NAME)*
//! expr     := and ('or' and)*
//! and      := not ('and' not)*
//! not      := 'not' not | compare
//! compare  := sum (OP sum | 'is' 'not'? sum | 'not'? 'in' set)?
//! sum      := atom (('+' | '-') atom)*
//! atom     := INT | DURATION | STRING | 'true' | 'false' | NAME | '(' expr ')'
//!           | '[' atom (',' atom)* ']' | FUNC '(' query ')'
//! set      := '[' ... ']' | 'list' NAME | 'ever' '(' query ')'
//! query    := (NAME 'of')? 'completed'? kinds 'on' NAME ('within' DURATION)? ('where' expr)?
//! kinds    := NAME | '[' NAME (',' NAME)* ']'
//! ```

use super::error::Pos;
use super::error::RuleError;
use super::lexer::Tok;
use super::limits::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionAst {
    Allow,
    Hold,
    Deny,
}

#[derive(Debug, Clone)]
pub struct RuleAst {
    pub name: String,
    pub pos: Pos,
    pub action: ActionAst,
    pub verify: Vec<(String, Pos)>,
    pub shadow: bool,
    pub description: Option<String>,
    pub when: Ast,
}

#[derive(Debug, Clone)]
pub struct ListDeclAst {
    pub name: String,
    pub pos: Pos,
    pub ty: (String, Pos),
}

#[derive(Debug, Clone, Default)]
pub struct FileAst {
    pub label: Option<String>,
    pub lists: Vec<ListDeclAst>,
    pub rules: Vec<RuleAst>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Count,
    Exists,
    Since,
    Distinct,
    Latest,
    Ever,
}

impl Func {
    fn from_name(s: &str) -> Option<Func> {
        Some(match s {
            "count" => Func::Count,
            "exists" => Func::Exists,
            "since" => Func::Since,
            "distinct" => Func::Distinct,
            "latest" => Func::Latest,
            "ever" => Func::Ever,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Func::Count => "count",
            Func::Exists => "exists",
            Func::Since => "since",
            Func::Distinct => "distinct",
            Func::Latest => "latest",
            Func::Ever => "ever",
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueryAst {
    pub projection: Option<(String, Pos)>,
    pub completed: bool,
    pub kinds: Vec<(String, Pos)>,
    pub entity: (String, Pos),
    pub within: Option<(i128, String, Pos)>,
    pub filter: Option<Box<Ast>>,
}

#[derive(Debug, Clone)]
pub enum Ast {
    Name(String, Pos),
    Int(i64, Pos),
    Duration(i128, Pos),
    Str(String, Pos),
    Bool(bool, Pos),
    SetLit(Vec<Ast>, Pos),
    Not(Box<Ast>, Pos),
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Cmp(CmpOp, Box<Ast>, Box<Ast>, Pos),
    /// `a is b` / `a is not b`.
    Is(bool, Box<Ast>, Box<Ast>, Pos),
    /// `a in set` / `a not in set`.
    In(bool, Box<Ast>, Box<Ast>, Pos),
    Arith(bool, Box<Ast>, Box<Ast>, Pos),
    Call(Func, Box<QueryAst>, Pos),
    ListRef(String, Pos),
}

impl Ast {
    pub fn pos(&self) -> Pos {
        match self {
            Ast::Name(_, p)
            | Ast::Int(_, p)
            | Ast::Duration(_, p)
            | Ast::Str(_, p)
            | Ast::Bool(_, p)
            | Ast::SetLit(_, p)
            | Ast::Not(_, p)
            | Ast::Cmp(_, _, _, p)
            | Ast::Is(_, _, _, p)
            | Ast::In(_, _, _, p)
            | Ast::Arith(_, _, _, p)
            | Ast::Call(_, _, p)
            | Ast::ListRef(_, p) => *p,
            Ast::And(v) | Ast::Or(v) => v.first().map(Ast::pos).unwrap_or_default(),
        }
    }
}

/// Words with a meaning of their own; they cannot name a rule or a list.
pub const KEYWORDS: &[&str] = &[
    "rule",
    "ruleset",
    "list",
    "when",
    "description",
    "shadow",
    "allow",
    "hold",
    "deny",
    "verify",
    "and",
    "or",
    "not",
    "is",
    "in",
    "on",
    "within",
    "where",
    "of",
    "completed",
    "true",
    "false",
];

pub struct Parser<'a> {
    toks: &'a [(Tok, Pos)],
    i: usize,
    limits: &'a Limits,
    depth: usize,
}

impl<'a> Parser<'a> {
    pub fn new(toks: &'a [(Tok, Pos)], limits: &'a Limits) -> Self {
        Parser {
            toks,
            i: 0,
            limits,
            depth: 0,
        }
    }

    fn peek(&self) -> &Tok {
        // Invariant: the lexer always ends the list with Eof and `bump` never passes it.
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn pos(&self) -> Pos {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn unexpected(&self, wanted: &str, hint: &str) -> RuleError {
        RuleError::at(
            self.pos(),
            format!("expected {wanted}, found {}", self.peek().describe()),
            hint,
        )
    }
    fn expect(&mut self, t: Tok, wanted: &str, hint: &str) -> Result<Pos, RuleError> {
        if *self.peek() == t {
            Ok(self.bump().1)
        } else {
            Err(self.unexpected(wanted, hint))
        }
    }
    fn expect_word(&mut self, w: &str, hint: &str) -> Result<Pos, RuleError> {
        if self.is_word(w) {
            Ok(self.bump().1)
        } else {
            Err(self.unexpected(&format!("`{w}`"), hint))
        }
    }
    fn name(&mut self, what: &str) -> Result<(String, Pos), RuleError> {
        match self.peek().clone() {
            Tok::Word(w) if !KEYWORDS.contains(&w.as_str()) => {
                let p = self.bump().1;
                Ok((w, p))
            }
            _ => Err(self.unexpected(what, "names are letters, digits and _")),
        }
    }

    pub fn file(&mut self) -> Result<FileAst, RuleError> {
        let mut file = FileAst::default();
        if self.eat_word("ruleset") {
            match self.bump() {
                (Tok::Str(s), _) => file.label = Some(s),
                (t, p) => {
                    return Err(RuleError::at(
                        p,
                        format!(
                            "expected the ruleset's label as a string, found {}",
                            t.describe()
                        ),
                        "write: ruleset \"default\"",
                    ));
                }
            }
        }
        loop {
            if self.is_word("rule") {
                let max = self.limits.rules_max.min(super::limits::RULES_MAX_HARD);
                if file.rules.len() >= max {
                    return Err(RuleError::at(
                        self.pos(),
                        format!("more than rules_max ({max}) rules"),
                        "split the policy or remove rules that never fire",
                    ));
                }
                let r = self.rule()?;
                file.rules.push(r);
            } else if self.is_word("list") {
                let pos = self.bump().1;
                let (name, _) = self.name("a list name")?;
                self.expect(
                    Tok::Colon,
                    "`:` and the list's value type",
                    "write: list blocked_imei: imei",
                )?;
                let ty = self.name("the list's value type")?;
                file.lists.push(ListDeclAst { name, pos, ty });
            } else if *self.peek() == Tok::Eof {
                return Ok(file);
            } else {
                return Err(self.unexpected("`rule` or `list`", "each rule starts with: rule NAME"));
            }
        }
    }

    fn rule(&mut self) -> Result<RuleAst, RuleError> {
        self.expect_word("rule", "")?;
        let (name, pos) = self.name("the rule's name")?;
        let shadow = self.eat_word("shadow");
        let (action, verify) = if self.eat_word("allow") {
            (ActionAst::Allow, vec![])
        } else if self.eat_word("deny") {
            (ActionAst::Deny, vec![])
        } else if self.eat_word("hold") {
            self.expect_word(
                "verify",
                "a hold names how the customer verifies: hold verify otp_existing_contact",
            )?;
            let mut methods = vec![self.name("a verification method")?];
            while *self.peek() == Tok::Comma {
                self.bump();
                methods.push(self.name("a verification method")?);
            }
            (ActionAst::Hold, methods)
        } else {
            return Err(self.unexpected(
                "the action `allow`, `deny` or `hold verify METHOD`",
                "the action comes right after the name (and `shadow`, if any)",
            ));
        };
        let mut description = None;
        if self.eat_word("description") {
            match self.bump() {
                (Tok::Str(s), p) => {
                    if s.chars().count() > self.limits.description_chars_max {
                        return Err(RuleError::at(
                            p,
                            format!(
                                "the description is over description_chars_max ({})",
                                self.limits.description_chars_max
                            ),
                            "keep descriptions to a few sentences",
                        ));
                    }
                    description = Some(s);
                }
                (t, p) => {
                    return Err(RuleError::at(
                        p,
                        format!(
                            "expected the description as a string, found {}",
                            t.describe()
                        ),
                        "write: description \"why the rule exists\"",
                    ));
                }
            }
        }
        self.expect_word("when", "the condition follows `when`")?;
        let when = self.expr()?;
        Ok(RuleAst {
            name,
            pos,
            action,
            verify,
            shadow,
            description,
            when,
        })
    }

    fn enter(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > self.limits.expr_depth_max {
            return Err(RuleError::at(
                self.pos(),
                format!(
                    "the condition nests deeper than expr_depth_max ({})",
                    self.limits.expr_depth_max
                ),
                "split the condition into several rules",
            ));
        }
        Ok(())
    }

    pub fn expr(&mut self) -> Result<Ast, RuleError> {
        self.enter()?;
        let first = self.and()?;
        let mut items = vec![first];
        while self.eat_word("or") {
            items.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Ast::Or(items)
        })
    }

    fn and(&mut self) -> Result<Ast, RuleError> {
        let first = self.not()?;
        let mut items = vec![first];
        while self.eat_word("and") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Ast::And(items)
        })
    }

    fn not(&mut self) -> Result<Ast, RuleError> {
        if self.is_word("not") {
            let p = self.bump().1;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(inner), p));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Ast, RuleError> {
        let left = self.sum()?;
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let right = self.sum()?;
            return Ok(Ast::Cmp(op, Box::new(left), Box::new(right), pos));
        }
        if self.eat_word("is") {
            let neg = self.eat_word("not");
            let right = self.sum()?;
            return Ok(Ast::Is(neg, Box::new(left), Box::new(right), pos));
        }
        let neg = if self.is_word("not")
            && matches!(self.toks.get(self.i + 1), Some((Tok::Word(w), _)) if w == "in")
        {
            self.bump();
            true
        } else {
            false
        };
        if self.eat_word("in") {
            let set = self.set()?;
            return Ok(Ast::In(neg, Box::new(left), Box::new(set), pos));
        }
        Ok(left)
    }

    fn set(&mut self) -> Result<Ast, RuleError> {
        if self.is_word("list") {
            self.bump();
            let (name, p) = self.name("a list name")?;
            return Ok(Ast::ListRef(name, p));
        }
        if *self.peek() == Tok::LBracket || self.is_word("ever") {
            return self.atom();
        }
        Err(self.unexpected(
            "a set: [a, b], list NAME or ever(...)",
            "for example: channel in [online, app]",
        ))
    }

    fn sum(&mut self) -> Result<Ast, RuleError> {
        let mut left = self.atom()?;
        loop {
            let plus = match self.peek() {
                Tok::Plus => true,
                Tok::Minus => false,
                _ => return Ok(left),
            };
            let p = self.bump().1;
            let right = self.atom()?;
            left = Ast::Arith(plus, Box::new(left), Box::new(right), p);
        }
    }

    fn atom(&mut self) -> Result<Ast, RuleError> {
        let (tok, pos) = self.bump();
        match tok {
            Tok::Int(n) => Ok(Ast::Int(n, pos)),
            Tok::Duration(d, _) => Ok(Ast::Duration(d, pos)),
            Tok::Str(s) => Ok(Ast::Str(s, pos)),
            Tok::LParen => {
                let e = self.expr()?;
                if *self.peek() != Tok::RParen {
                    return Err(RuleError::at(
                        pos,
                        format!(
                            "this ( is not closed: found {} where `)` belongs",
                            self.peek().describe()
                        ),
                        "every ( needs its )",
                    ));
                }
                self.bump();
                Ok(e)
            }
            Tok::LBracket => {
                // A set's items are atoms, and an atom may be a set: each
                // `[` nests, and counts against expr_depth_max like `(`.
                self.enter()?;
                let mut items = Vec::new();
                loop {
                    if items.len() >= self.limits.set_items_max {
                        return Err(RuleError::at(
                            pos,
                            format!(
                                "more than set_items_max ({}) values in [...]",
                                self.limits.set_items_max
                            ),
                            "put long sets in a list: list NAME: TYPE",
                        ));
                    }
                    items.push(self.atom()?);
                    if *self.peek() == Tok::Comma {
                        self.bump();
                    } else {
                        break;
                    }
                }
                self.expect(Tok::RBracket, "`]` or `,`", "sets read [a, b, c]")?;
                self.depth -= 1;
                Ok(Ast::SetLit(items, pos))
            }
            Tok::Word(w) if w == "true" => Ok(Ast::Bool(true, pos)),
            Tok::Word(w) if w == "false" => Ok(Ast::Bool(false, pos)),
            Tok::Word(w) if *self.peek() == Tok::LParen => {
                let Some(func) = Func::from_name(&w) else {
                    return Err(RuleError::at(
                        pos,
                        format!("unknown function `{w}`"),
                        "functions are count, distinct, exists, since, latest and ever",
                    ));
                };
                self.bump();
                self.enter()?;
                let q = self.query()?;
                self.depth -= 1;
                self.expect(
                    Tok::RParen,
                    "`)`",
                    "a function takes one query: count(auth_failure on account within 1h)",
                )?;
                Ok(Ast::Call(func, Box::new(q), pos))
            }
            // Decisions are constants too (`where decision is hold`), and
            // `list` is also the field of list_add / list_remove.
            Tok::Word(w)
                if !KEYWORDS.contains(&w.as_str())
                    || matches!(w.as_str(), "allow" | "hold" | "deny" | "list") =>
            {
                Ok(Ast::Name(w, pos))
            }
            t => {
                self.i -= 1;
                Err(RuleError::at(
                    pos,
                    format!("expected a value, found {}", t.describe()),
                    "a value is a field, a constant, a number, a duration or a function call",
                ))
            }
        }
    }

    fn query(&mut self) -> Result<QueryAst, RuleError> {
        let mut projection = None;
        if matches!(self.toks.get(self.i + 1), Some((Tok::Word(w), _)) if w == "of") {
            projection = Some(self.name("a field")?);
            self.bump();
        }
        let completed = self.eat_word("completed");
        let mut kinds = Vec::new();
        if *self.peek() == Tok::LBracket {
            self.bump();
            loop {
                kinds.push(self.name("an event kind")?);
                if *self.peek() == Tok::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
            self.expect(
                Tok::RBracket,
                "`]` or `,`",
                "kinds read [sim_swap, esim_transfer]",
            )?;
        } else {
            kinds.push(self.name("an event kind")?);
        }
        self.expect_word(
            "on",
            "a query names its entity: ... on line, on account, on agent, on device or on store",
        )?;
        let entity = self.name("an entity: line, account, agent, device or store")?;
        let mut within = None;
        if self.is_word("within") {
            self.bump();
            match self.bump() {
                (Tok::Duration(d, s), p) => within = Some((d, s, p)),
                (t, p) => {
                    return Err(RuleError::at(
                        p,
                        format!("expected a duration after `within`, found {}", t.describe()),
                        "durations read like 30s, 15m, 48h or 7d",
                    ));
                }
            }
        }
        let mut filter = None;
        if self.eat_word("where") {
            filter = Some(Box::new(self.expr()?));
        }
        Ok(QueryAst {
            projection,
            completed,
            kinds,
            entity,
            within,
            filter,
        })
    }
}
