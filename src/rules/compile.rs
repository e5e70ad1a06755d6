//! Type checking and compilation: syntax tree to [`Program`](super::CompiledRules),
//! deriving the history plan from the queries the rules make.

use super::error::Pos;
use super::error::RuleError;
use super::limits::Limits;
use super::parser::{self, Ast, CmpOp, FileAst, Func, QueryAst};
use super::program::*;
use crate::contract::Field;
use crate::contract::ident::{Eid, Iccid, Imei, Imsi, Msisdn, Token};

/// What compilation builds besides the rules themselves.
#[derive(Default)]
pub struct Built {
    pub rules: Vec<Rule>,
    pub series: Vec<Series>,
    pub queries: Vec<Query>,
    pub lists: Vec<ListDecl>,
    pub methods: Vec<String>,
    /// The series of IMEIs seen per line, kept when a rule reads `new_device`.
    pub devices: Option<u16>,
}

struct Compiler<'l> {
    limits: &'l Limits,
    built: Built,
    errors: Vec<RuleError>,
    /// True while compiling a `where` filter: history functions are not allowed there.
    in_filter: bool,
}

pub fn compile(file: &FileAst, limits: &Limits) -> Result<Built, Vec<RuleError>> {
    let mut c = Compiler {
        limits,
        built: Built::default(),
        errors: Vec::new(),
        in_filter: false,
    };
    for l in &file.lists {
        c.declare_list(l);
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &file.rules {
        if names.contains(&r.name.as_str()) {
            c.errors.push(RuleError::at(
                r.pos,
                format!("a second rule named {}", r.name),
                "rule names are unique: outputs name the rules that matched",
            ));
            continue;
        }
        names.push(&r.name);
        if let Some(rule) = c.rule(r) {
            c.built.rules.push(rule);
        }
    }
    if c.errors.is_empty() {
        Ok(c.built)
    } else {
        Err(c.errors)
    }
}

type Res<T> = Result<T, RuleError>;

impl Compiler<'_> {
    fn declare_list(&mut self, l: &parser::ListDeclAst) {
        if self.built.lists.iter().any(|d| d.name == l.name) {
            self.errors.push(RuleError::at(
                l.pos,
                format!("list {} is declared twice", l.name),
                "declare each list once",
            ));
            return;
        }
        if self.built.lists.len() >= self.limits.lists_max {
            self.errors.push(RuleError::at(
                l.pos,
                format!("more than lists_max ({}) lists", self.limits.lists_max),
                "merge lists of the same type",
            ));
            return;
        }
        match Ty::from_list_type(&l.ty.0) {
            Some(ty) => self.built.lists.push(ListDecl {
                name: l.name.clone(),
                ty,
            }),
            None => self.errors.push(RuleError::at(
                l.ty.1,
                format!("unknown list type {}", l.ty.0),
                "list types are msisdn, imsi, imei, iccid, eid and token",
            )),
        }
    }

    fn rule(&mut self, r: &parser::RuleAst) -> Option<Rule> {
        let cond = match self.expr(&r.when, Some(Ty::Bool)) {
            Ok((n, Ty::Bool)) => n,
            Ok((_, t)) => {
                self.errors.push(RuleError::at(
                    r.when.pos(),
                    format!("the condition of {} is {}, not a boolean", r.name, t.name()),
                    "compare it: count(...) >= 3",
                ));
                return None;
            }
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        let verify = r.verify.iter().map(|(m, _)| self.method(m)).collect();
        Some(Rule {
            name: r.name.clone(),
            action: match r.action {
                parser::ActionAst::Allow => Action::Allow,
                parser::ActionAst::Hold => Action::Hold,
                parser::ActionAst::Deny => Action::Deny,
            },
            verify,
            shadow: r.shadow,
            description: r.description.clone(),
            cond,
        })
    }

    fn method(&mut self, m: &str) -> u16 {
        let methods = &mut self.built.methods;
        match methods.iter().position(|x| x == m) {
            Some(i) => i as u16,
            None => {
                methods.push(m.to_string());
                (methods.len() - 1) as u16
            }
        }
    }

    /// Compiles `a`; `want` is the type the context expects, used to resolve
    /// bare constants such as `port_out` (a kind, or a lock scope).
    fn expr(&mut self, a: &Ast, want: Option<Ty>) -> Res<(Node, Ty)> {
        match a {
            Ast::Int(n, _) => Ok((Node::Const(Const::Int(*n)), Ty::Int)),
            Ast::Duration(d, _) => Ok((Node::Const(Const::Dur(*d)), Ty::Duration)),
            Ast::Bool(b, _) => Ok((Node::Const(Const::Bool(*b)), Ty::Bool)),
            Ast::Str(s, p) => match want {
                Some(t) => Ok((Node::Const(string_const(s, t, *p)?), t)),
                None => Err(RuleError::at(
                    *p,
                    "a string needs something to compare with".into(),
                    "write the field first: store == \"S1\"",
                )),
            },
            Ast::Name(n, p) => self.name(n, *p, want),
            Ast::SetLit(_, p) => Err(RuleError::at(
                *p,
                "a set [...] can only follow `in`".into(),
                "for example: channel in [online, app]",
            )),
            Ast::ListRef(_, p) => Err(RuleError::at(
                *p,
                "a list can only follow `in`".into(),
                "for example: imei in list blocked_imei",
            )),
            Ast::Not(x, p) => {
                let n = self.boolean(x, *p, "not")?;
                Ok((Node::Not(Box::new(n)), Ty::Bool))
            }
            Ast::And(xs) | Ast::Or(xs) => {
                let word = if matches!(a, Ast::And(_)) {
                    "and"
                } else {
                    "or"
                };
                let mut items = Vec::with_capacity(xs.len());
                for x in xs {
                    items.push(self.boolean(x, x.pos(), word)?);
                }
                let items = items.into_boxed_slice();
                Ok((
                    if word == "and" {
                        Node::And(items)
                    } else {
                        Node::Or(items)
                    },
                    Ty::Bool,
                ))
            }
            Ast::Cmp(op, l, r, p) => self.comparison(*op, l, r, *p),
            Ast::Is(neg, l, r, p) => {
                self.comparison(if *neg { CmpOp::Ne } else { CmpOp::Eq }, l, r, *p)
            }
            Ast::In(neg, l, r, p) => {
                let n = self.membership(l, r, *p)?;
                Ok((if *neg { Node::Not(Box::new(n)) } else { n }, Ty::Bool))
            }
            Ast::Arith(plus, l, r, p) => {
                let (ln, lt) = self.expr(l, want)?;
                let (rn, rt) = self.expr(r, Some(lt))?;
                if lt != rt || !matches!(lt, Ty::Int | Ty::Duration) {
                    return Err(RuleError::at(
                        *p,
                        format!("cannot add or subtract {} and {}", lt.name(), rt.name()),
                        "add numbers to numbers (counts) or durations to durations",
                    ));
                }
                let (lb, rb) = (Box::new(ln), Box::new(rn));
                Ok((
                    if *plus {
                        Node::Add(lb, rb)
                    } else {
                        Node::Sub(lb, rb)
                    },
                    lt,
                ))
            }
            Ast::Call(f, q, p) => self.call(*f, q, *p),
        }
    }

    fn boolean(&mut self, a: &Ast, p: Pos, word: &str) -> Res<Node> {
        let (n, t) = self.expr(a, Some(Ty::Bool))?;
        if t != Ty::Bool {
            return Err(RuleError::at(
                p,
                format!("`{word}` needs a boolean, not {}", t.name()),
                "compare the value: count(...) >= 1",
            ));
        }
        Ok(n)
    }

    fn name(&mut self, n: &str, p: Pos, want: Option<Ty>) -> Res<(Node, Ty)> {
        if let Some(attr) = Attr::from_name(n) {
            if matches!(attr, Attr::Decision | Attr::NewDevice) && !self.in_filter {
                return Err(RuleError::at(
                    p,
                    format!("{n} is only known for recorded events"),
                    "use it inside a query's where: exists(device_seen on line within 24h where new_device)",
                ));
            }
            if attr == Attr::NewDevice {
                self.devices_series()?;
            }
            return Ok((Node::Attr(attr), attr.ty()));
        }
        if let Some(t) = want
            && let Some(consts) = t.constants()
        {
            return match consts.iter().position(|c| *c == n) {
                Some(code) => Ok((Node::Const(Const::Code(code as u8)), t)),
                None => Err(RuleError::at(
                    p,
                    format!("{n} is not {}", t.name()),
                    &format!("expected one of {}", consts.join(", ")),
                )),
            };
        }
        Err(RuleError::at(
            p,
            format!("unknown field {n}"),
            "fields are kind, channel, agent, store, msisdn, account, iccid, eid, imsi, imei, pin_ok, recipient, change, scope, result, list (and decision, new_device inside where)",
        ))
    }

    fn comparison(&mut self, op: CmpOp, l: &Ast, r: &Ast, p: Pos) -> Res<(Node, Ty)> {
        // A bare constant takes its type from the other side.
        let (ln, lt, rn, rt) = if is_untyped(l) {
            let (rn, rt) = self.expr(r, None)?;
            let (ln, lt) = self.expr(l, Some(rt))?;
            (ln, lt, rn, rt)
        } else {
            let (ln, lt) = self.expr(l, None)?;
            let (rn, rt) = self.expr(r, Some(lt))?;
            (ln, lt, rn, rt)
        };
        if lt != rt {
            return Err(RuleError::at(
                p,
                format!("cannot compare {} with {}", lt.name(), rt.name()),
                "both sides of a comparison have the same type",
            ));
        }
        let ordered = matches!(lt, Ty::Int | Ty::Duration);
        if !ordered && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(RuleError::at(
                p,
                format!("{} has no order", lt.name()),
                "use `is`, `==` or `!=`; <, <=, > and >= compare numbers and durations",
            ));
        }
        let ln = cap_distinct(ln, &rn);
        let rn = cap_distinct(rn, &ln);
        let op = match op {
            CmpOp::Eq => Cmp::Eq,
            CmpOp::Ne => Cmp::Ne,
            CmpOp::Lt => Cmp::Lt,
            CmpOp::Le => Cmp::Le,
            CmpOp::Gt => Cmp::Gt,
            CmpOp::Ge => Cmp::Ge,
        };
        Ok((fuse_cmp(op, ln, rn), Ty::Bool))
    }

    fn membership(&mut self, l: &Ast, r: &Ast, p: Pos) -> Res<Node> {
        let (ln, lt) = self.expr(l, None)?;
        match r {
            Ast::SetLit(items, _) => {
                let mut consts = Vec::with_capacity(items.len());
                for it in items {
                    match self.expr(it, Some(lt))? {
                        (Node::Const(c), t) if t == lt => consts.push(c),
                        (_, t) => {
                            return Err(RuleError::at(
                                it.pos(),
                                format!("a set of {} holds constants, not {}", lt.name(), t.name()),
                                "sets hold constants: [online, app]",
                            ));
                        }
                    }
                }
                Ok(fuse_in(ln, consts))
            }
            Ast::ListRef(_, lp) if self.in_filter => Err(RuleError::at(
                *lp,
                "lists are not read inside a where".into(),
                "test the request instead: imei in list blocked_imei",
            )),
            Ast::ListRef(name, lp) => {
                let Some(i) = self.built.lists.iter().position(|d| d.name == *name) else {
                    return Err(RuleError::at(
                        *lp,
                        format!("unknown list {name}"),
                        &format!("declare it first: list {name}: imei"),
                    ));
                };
                let lty = self.built.lists[i].ty;
                if lty != lt {
                    return Err(RuleError::at(
                        p,
                        format!("list {name} holds {}, not {}", lty.name(), lt.name()),
                        "compare a field of the list's type",
                    ));
                }
                Ok(Node::InList(Box::new(ln), i as u16))
            }
            Ast::Call(Func::Ever, q, cp) => {
                let (qi, pt) = self.query(Func::Ever, q, *cp)?;
                if pt != lt {
                    return Err(RuleError::at(
                        p,
                        format!("ever(...) holds {}, not {}", pt.name(), lt.name()),
                        "project the same field: eid in ever(eid of ...)",
                    ));
                }
                Ok(Node::InEver(Box::new(ln), qi))
            }
            other => Err(RuleError::at(
                other.pos(),
                "`in` needs a set".into(),
                "a set is [a, b], list NAME or ever(FIELD of ...)",
            )),
        }
    }

    fn call(&mut self, f: Func, q: &QueryAst, p: Pos) -> Res<(Node, Ty)> {
        if f == Func::Ever {
            return Err(RuleError::at(
                p,
                "ever(...) is a set".into(),
                "use it after `in`: eid in ever(eid of completed esim_transfer on account)",
            ));
        }
        let (qi, ty) = self.query(f, q, p)?;
        Ok(match f {
            Func::Count => (Node::Count(qi), Ty::Int),
            Func::Distinct => (Node::Distinct(qi, i64::MAX), Ty::Int),
            Func::Exists => (Node::Exists(qi), Ty::Bool),
            Func::Since => (Node::Since(qi), Ty::Duration),
            Func::Latest | Func::Ever => (Node::Latest(qi, ty), ty),
        })
    }

    fn check_window(&self, d: i128, p: Pos) -> Res<()> {
        if d > self.limits.window_max_nanos() {
            return Err(RuleError::at(
                p,
                format!(
                    "a window of {} days is over window_max ({} days)",
                    d / 86_400_000_000_000,
                    self.limits.window_max_days
                ),
                "shorten the window",
            ));
        }
        Ok(())
    }

    /// Compiles a query into a series (shared with equal queries) and returns
    /// the query's index and the type of its value (the projection's, or kind).
    fn query(&mut self, f: Func, q: &QueryAst, p: Pos) -> Res<(u16, Ty)> {
        if self.in_filter {
            return Err(RuleError::at(
                p,
                format!("{}(...) inside a where", f.name()),
                "a where filters the recorded events by their own fields; move the history function out",
            ));
        }
        let windowed = matches!(f, Func::Count | Func::Distinct | Func::Exists | Func::Since);
        let window = match (&q.within, windowed) {
            (Some((d, _, wp)), true) => {
                self.check_window(*d, *wp)?;
                *d
            }
            (None, true) => {
                return Err(RuleError::at(
                    p,
                    format!("{}(...) needs a window", f.name()),
                    &format!(
                        "add one: {}(... on line within 30d); for state without a window use latest or ever",
                        f.name()
                    ),
                ));
            }
            (Some((_, _, wp)), false) => {
                return Err(RuleError::at(
                    *wp,
                    format!("{}(...) takes no window", f.name()),
                    "latest and ever read state of any age; count, distinct, exists and since take `within`",
                ));
            }
            (None, false) => 0,
        };
        let mut kinds = KindSet::default();
        let mut hkinds = Vec::new();
        for (k, kp) in &q.kinds {
            let Some(h) = HKind::from_name(k) else {
                return Err(RuleError::at(
                    *kp,
                    format!("unknown event kind {k}"),
                    &format!(
                        "kinds are {}",
                        Ty::Kind.constants().unwrap_or_default().join(", ")
                    ),
                ));
            };
            kinds.insert(h);
            hkinds.push(h);
        }
        let Some(entity) = Entity::from_name(&q.entity.0) else {
            return Err(RuleError::at(
                q.entity.1,
                format!("unknown entity {}", q.entity.0),
                "entities are line, account, agent, device and store",
            ));
        };
        let key = entity.key_field();
        if let Some((h, _)) = hkinds.iter().zip(&q.kinds).find(|(h, _)| !h.carries(key)) {
            return Err(RuleError::at(
                q.kinds
                    .iter()
                    .find(|(n, _)| *n == h.name())
                    .map_or(p, |x| x.1),
                format!(
                    "{} events carry no {}, so they are never recorded on {}",
                    h.name(),
                    key.as_str(),
                    entity.name()
                ),
                "choose the entity the event names",
            ));
        }
        let projection = match (&q.projection, f) {
            (Some((name, pp)), Func::Distinct | Func::Ever | Func::Latest) => {
                let attr = Attr::from_name(name).ok_or_else(|| {
                    RuleError::at(
                        *pp,
                        format!("unknown field {name}"),
                        "project a field of the events: eid of ...",
                    )
                })?;
                if let Attr::Field(fl) = attr
                    && !hkinds.iter().any(|h| h.carries(fl))
                {
                    return Err(RuleError::at(
                        *pp,
                        format!("none of these events carries {name}"),
                        "project a field the events have",
                    ));
                }
                if f == Func::Latest && attr.ty() == Ty::Token {
                    return Err(RuleError::at(
                        *pp,
                        format!("latest({name} of ...) cannot read a token"),
                        "latest reads kinds, enumerations and identifiers",
                    ));
                }
                Some(attr)
            }
            (Some((_, pp)), _) => {
                return Err(RuleError::at(
                    *pp,
                    format!("{}(...) takes no `FIELD of`", f.name()),
                    "only distinct, ever and latest project a field",
                ));
            }
            (None, Func::Distinct | Func::Ever) => {
                return Err(RuleError::at(
                    p,
                    format!("{}(...) needs a field", f.name()),
                    &format!("write: {}(msisdn of ...)", f.name()),
                ));
            }
            (None, _) => None,
        };
        let ty = projection.map_or(Ty::Kind, Attr::ty);
        let filter = match &q.filter {
            None => None,
            Some(w) => {
                self.in_filter = true;
                let r = self.expr(w, Some(Ty::Bool));
                self.in_filter = false;
                match r? {
                    (n, Ty::Bool) => Some(n),
                    (_, t) => {
                        return Err(RuleError::at(
                            w.pos(),
                            format!("where needs a boolean, not {}", t.name()),
                            "for example: where scope is port_out",
                        ));
                    }
                }
            }
        };
        let keep = match f {
            Func::Ever => Keep::Ever,
            Func::Latest => Keep::Latest,
            _ => Keep::Window(window),
        };
        let series = Series {
            kinds,
            entity,
            completed: q.completed,
            filter,
            projection,
            keep,
        };
        let si = self.series(series, p)?;
        let parts = (
            i64::try_from(window.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
            // Invariant: a remainder of a division by 10^9 fits in u32.
            u32::try_from(window.rem_euclid(1_000_000_000)).unwrap_or(0),
        );
        self.built.queries.push(Query {
            series: si,
            entity,
            window,
            window_parts: parts,
        });
        Ok(((self.built.queries.len() - 1) as u16, ty))
    }

    /// Adds a series or widens an equal one's window.
    fn series(&mut self, s: Series, p: Pos) -> Res<u16> {
        // The same test a reload matches series by: what one series keeps
        // serves every query that records the same.
        if let Some(i) = self
            .built
            .series
            .iter()
            .position(|have| have.records_as(&s))
        {
            if let (Keep::Window(w), Keep::Window(n)) = (&mut self.built.series[i].keep, s.keep) {
                *w = (*w).max(n);
            }
            return Ok(i as u16);
        }
        if self.built.series.len() >= self.limits.series_max {
            return Err(RuleError::at(
                p,
                format!(
                    "more than series_max ({}) distinct history queries",
                    self.limits.series_max
                ),
                "reuse the same query shapes across rules",
            ));
        }
        self.built.series.push(s);
        Ok((self.built.series.len() - 1) as u16)
    }

    fn devices_series(&mut self) -> Res<u16> {
        if let Some(i) = self.built.devices {
            return Ok(i);
        }
        let mut kinds = KindSet::default();
        kinds.insert(HKind::of(crate::contract::Kind::DeviceSeen));
        let i = self.series(
            Series {
                kinds,
                entity: Entity::Line,
                completed: false,
                filter: None,
                projection: Some(Attr::Field(Field::Imei)),
                keep: Keep::Ever,
            },
            Pos::default(),
        )?;
        self.built.devices = Some(i);
        Ok(i)
    }
}

/// `attr in [codes]` becomes one bit test.
fn fuse_in(ln: Node, consts: Vec<Const>) -> Node {
    if let Node::Attr(a) = ln {
        let mut mask = 0u64;
        let all_codes = consts.iter().all(|c| match c {
            Const::Code(c) if *c < 64 => {
                mask |= 1 << c;
                true
            }
            _ => false,
        });
        if all_codes {
            return Node::CodeIn(a, mask);
        }
    }
    Node::InConsts(Box::new(ln), consts.into_boxed_slice())
}

/// `attr == code` and `latest(...) == code` become single tests. `!=` stays
/// a comparison: with an absent value it is false, where `not (==)` is true.
fn fuse_cmp(op: Cmp, ln: Node, rn: Node) -> Node {
    match (op, ln, rn) {
        (Cmp::Eq, Node::Attr(a), Node::Const(Const::Code(c)))
        | (Cmp::Eq, Node::Const(Const::Code(c)), Node::Attr(a))
            if c < 64 =>
        {
            Node::CodeIn(a, 1 << c)
        }
        (Cmp::Eq, Node::Latest(q, ty), Node::Const(Const::Code(c)))
        | (Cmp::Eq, Node::Const(Const::Code(c)), Node::Latest(q, ty))
            if !matches!(ty, Ty::Bool) && ty.constants().is_some() =>
        {
            Node::LatestIs(q, c)
        }
        (Cmp::Eq, Node::Attr(a), Node::Const(Const::Bool(b)))
        | (Cmp::Eq, Node::Const(Const::Bool(b)), Node::Attr(a)) => Node::BoolIs(a, b),
        (op, Node::Distinct(q, cap), Node::Const(Const::Int(c))) => {
            Node::DistinctCmp(q, cap, op, c)
        }
        (op, Node::Const(Const::Int(c)), Node::Distinct(q, cap)) => {
            Node::DistinctCmp(q, cap, flip(op), c)
        }
        (op, ln, Node::Const(Const::Int(c))) if counts(&ln, &mut Vec::new()) => {
            let mut terms = Vec::new();
            counts(&ln, &mut terms);
            Node::CountsCmp(terms.into_boxed_slice(), op, c)
        }
        (op, Node::Const(Const::Int(c)), rn) if counts(&rn, &mut Vec::new()) => {
            let mut terms = Vec::new();
            counts(&rn, &mut terms);
            Node::CountsCmp(terms.into_boxed_slice(), flip(op), c)
        }
        (op, ln, rn) => Node::Cmp(op, Box::new(ln), Box::new(rn)),
    }
}

/// `c op x` as `x op' c`.
fn flip(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        op => op,
    }
}

/// Whether `n` is a sum of window counts; collects their queries.
fn counts(n: &Node, terms: &mut Vec<u16>) -> bool {
    match n {
        Node::Count(q) => {
            terms.push(*q);
            true
        }
        Node::Add(a, b) => counts(a, terms) && counts(b, terms),
        _ => false,
    }
}

/// `distinct(...)` compared with a constant N never needs to count past
/// N + 1, which keeps a busy agent's hour of history cheap to read.
fn cap_distinct(n: Node, other: &Node) -> Node {
    match (n, other) {
        (Node::Distinct(q, _), Node::Const(Const::Int(c))) => {
            Node::Distinct(q, c.saturating_add(1).max(0))
        }
        (n, _) => n,
    }
}

fn is_untyped(a: &Ast) -> bool {
    match a {
        Ast::Name(n, _) => Attr::from_name(n).is_none(),
        Ast::Str(..) => true,
        _ => false,
    }
}

/// A string constant, checked against the type it is compared with.
fn string_const(s: &str, t: Ty, p: Pos) -> Res<Const> {
    let bad = |why: &str| {
        RuleError::at(
            p,
            format!("\"{s}\" is not {}: {why}", t.name()),
            "write the value as the contract spells it",
        )
    };
    Ok(match t {
        Ty::Token => Const::Str(Token::parse(s).map_err(|e| bad(e.0))?.as_str().into()),
        Ty::Msisdn => Const::Id(Msisdn::parse(s).map_err(|e| bad(e.0))?.as_u128()),
        Ty::Imsi => Const::Id(Imsi::parse(s).map_err(|e| bad(e.0))?.as_u128()),
        Ty::Imei => Const::Id(Imei::parse(s).map_err(|e| bad(e.0))?.as_u128()),
        Ty::Iccid => Const::Id(Iccid::parse(s).map_err(|e| bad(e.0))?.as_u128()),
        Ty::Eid => Const::Id(Eid::parse(s).map_err(|e| bad(e.0))?.as_u128()),
        _ => return Err(bad("strings compare with tokens and identifiers only")),
    })
}
