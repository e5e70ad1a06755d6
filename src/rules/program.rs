//! The compiled form of a ruleset: typed condition trees, and the history plan
//! they need. The engine evaluates these; the history keeps what the plan says.

use crate::contract::{Change, Channel, Event, Field, Kind, Scope, VerifyResult};
use std::fmt;

/// A decision's outcome, as the contract spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Allow,
    Hold,
    Deny,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[Outcome::Allow, Outcome::Hold, Outcome::Deny];
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Hold => "hold",
            Outcome::Deny => "deny",
        }
    }
    pub fn from_name(s: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Event kinds history can hold: the contract's, plus the ones the history
/// model derives (a `device_seen` showing a SIM no approved request put there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HKind(pub u8);

impl HKind {
    pub const UNAPPROVED_SIM_CHANGE: HKind = HKind(Kind::ALL.len() as u8);
    pub const COUNT: usize = Kind::ALL.len() + 1;

    pub const fn of(k: Kind) -> HKind {
        HKind(k as u8)
    }
    pub fn name(self) -> &'static str {
        match Kind::ALL.get(self.0 as usize) {
            Some(k) => k.as_str(),
            None => "unapproved_sim_change",
        }
    }
    pub fn from_name(s: &str) -> Option<HKind> {
        if s == "unapproved_sim_change" {
            return Some(HKind::UNAPPROVED_SIM_CHANGE);
        }
        Kind::from_name(s).map(HKind::of)
    }
    /// Fields an event of this kind can carry.
    pub fn carries(self, f: Field) -> bool {
        match Kind::ALL.get(self.0 as usize) {
            Some(k) => k.allowed().contains(f),
            None => matches!(f, Field::Msisdn | Field::Imsi | Field::Imei | Field::At),
        }
    }
}

/// A set of [`HKind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(pub u16);

impl KindSet {
    pub fn insert(&mut self, k: HKind) {
        self.0 |= 1 << k.0;
    }
    pub fn contains(self, k: HKind) -> bool {
        self.0 & (1 << k.0) != 0
    }
}

/// Whose history a query reads: the entity is named by a field of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Line,
    Account,
    Agent,
    Device,
    Store,
}

impl Entity {
    pub const ALL: &'static [Entity] = &[
        Entity::Line,
        Entity::Account,
        Entity::Agent,
        Entity::Device,
        Entity::Store,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Entity::Line => "line",
            Entity::Account => "account",
            Entity::Agent => "agent",
            Entity::Device => "device",
            Entity::Store => "store",
        }
    }
    pub fn from_name(s: &str) -> Option<Entity> {
        Entity::ALL.iter().copied().find(|e| e.name() == s)
    }
    /// The field that names the entity on an event.
    pub fn key_field(self) -> Field {
        match self {
            Entity::Line => Field::Msisdn,
            Entity::Account => Field::Account,
            Entity::Agent => Field::Agent,
            Entity::Device => Field::Imei,
            Entity::Store => Field::Store,
        }
    }
}

/// What a rule can read of an event: its contract fields, plus what is known
/// once it has been recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    Field(Field),
    /// The decision a request got when it was decided (in `where` only).
    Decision,
    /// A `device_seen` whose IMEI the line had never been seen with, on a
    /// line that had been seen before (in `where` only).
    NewDevice,
}

/// The type of a value in the rules language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    Bool,
    Int,
    Duration,
    Kind,
    Channel,
    Change,
    Scope,
    Result,
    Decision,
    Msisdn,
    Imsi,
    Imei,
    Iccid,
    Eid,
    Token,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Bool => "a boolean",
            Ty::Int => "a number",
            Ty::Duration => "a duration",
            Ty::Kind => "an event kind",
            Ty::Channel => "a channel",
            Ty::Change => "an account change",
            Ty::Scope => "a lock scope",
            Ty::Result => "a verification result",
            Ty::Decision => "a decision",
            Ty::Msisdn => "an msisdn",
            Ty::Imsi => "an imsi",
            Ty::Imei => "an imei",
            Ty::Iccid => "an iccid",
            Ty::Eid => "an eid",
            Ty::Token => "a token",
        }
    }
    /// Names a list declaration may use for its value type.
    pub fn from_list_type(s: &str) -> Option<Ty> {
        Some(match s {
            "msisdn" => Ty::Msisdn,
            "imsi" => Ty::Imsi,
            "imei" => Ty::Imei,
            "iccid" => Ty::Iccid,
            "eid" => Ty::Eid,
            "token" => Ty::Token,
            _ => return None,
        })
    }
    /// The named constants of an enumerated type, by code.
    pub fn constants(self) -> Option<Vec<&'static str>> {
        Some(match self {
            Ty::Kind => (0..HKind::COUNT as u8).map(|k| HKind(k).name()).collect(),
            Ty::Channel => Channel::ALL.iter().map(|c| c.as_str()).collect(),
            Ty::Change => Change::ALL.iter().map(|c| c.as_str()).collect(),
            Ty::Scope => Scope::ALL.iter().map(|c| c.as_str()).collect(),
            Ty::Result => VerifyResult::ALL.iter().map(|c| c.as_str()).collect(),
            Ty::Decision => Outcome::ALL.iter().map(|c| c.as_str()).collect(),
            _ => return None,
        })
    }
}

impl Attr {
    pub fn from_name(s: &str) -> Option<Attr> {
        match s {
            "decision" => Some(Attr::Decision),
            "new_device" => Some(Attr::NewDevice),
            "id" | "at" | "ref" | "value" => None,
            _ => Field::from_name(s).map(Attr::Field),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Attr::Field(f) => f.as_str(),
            Attr::Decision => "decision",
            Attr::NewDevice => "new_device",
        }
    }
    pub fn ty(self) -> Ty {
        match self {
            Attr::Decision => Ty::Decision,
            Attr::NewDevice => Ty::Bool,
            Attr::Field(f) => match f {
                Field::Kind => Ty::Kind,
                Field::Channel => Ty::Channel,
                Field::Change => Ty::Change,
                Field::Scope => Ty::Scope,
                Field::Result => Ty::Result,
                Field::Msisdn => Ty::Msisdn,
                Field::Imsi => Ty::Imsi,
                Field::Imei => Ty::Imei,
                Field::Iccid => Ty::Iccid,
                Field::Eid => Ty::Eid,
                Field::PinOk => Ty::Bool,
                // agent, store, account, recipient, list (id, at, ref, value are not readable)
                _ => Ty::Token,
            },
        }
    }
}

/// A constant in a compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Bool(bool),
    Int(i64),
    Dur(i128),
    Code(u8),
    Id(u128),
    Str(Box<str>),
}

/// A value met while evaluating; `Absent` is an optional field that is not there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Absent,
    Bool(bool),
    Int(i64),
    Dur(i128),
    Code(u8),
    Id(u128),
    Str(&'a str),
}

impl Const {
    pub fn val(&self) -> Val<'_> {
        match self {
            Const::Bool(b) => Val::Bool(*b),
            Const::Int(n) => Val::Int(*n),
            Const::Dur(d) => Val::Dur(*d),
            Const::Code(c) => Val::Code(*c),
            Const::Id(i) => Val::Id(*i),
            Const::Str(s) => Val::Str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Const(Const),
    Attr(Attr),
    Not(Box<Node>),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    Add(Box<Node>, Box<Node>),
    Sub(Box<Node>, Box<Node>),
    InConsts(Box<Node>, Box<[Const]>),
    /// An enumerated attribute (or the kind) whose code is in the mask:
    /// `kind in [sim_swap, esim_transfer]`, `scope is port_out`.
    CodeIn(Attr, u64),
    /// The latest value of a query is this code: `latest(...) is lock`.
    LatestIs(u16, u8),
    InList(Box<Node>, u16),
    InEver(Box<Node>, u16),
    Count(u16),
    /// Distinct values of a query, counted up to the second number.
    Distinct(u16, i64),
    Exists(u16),
    Since(u16),
    /// The latest value, of the given type.
    Latest(u16, Ty),
    /// A sum of window counts compared with a constant:
    /// `count(a) + count(b) >= 10` in one node.
    CountsCmp(Box<[u16]>, Cmp, i64),
    /// A distinct count (capped as in `Distinct`) compared with a constant.
    DistinctCmp(u16, i64, Cmp, i64),
    /// A boolean attribute has this value (false when it is absent):
    /// `pin_ok is false`.
    BoolIs(Attr, bool),
}

/// How long a series keeps what it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every matching event within the longest window any query asks of it.
    Window(i128),
    /// The distinct projected values, with no age limit (bounded in count).
    Ever,
    /// Only the most recent matching event.
    Latest,
}

/// One stream of recorded events that the history keeps per entity, derived
/// from the queries of the loaded rules (equal queries share one series).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub kinds: KindSet,
    pub entity: Entity,
    /// Requests count when completed (allowed, or released by a passed verification).
    pub completed: bool,
    pub filter: Option<Node>,
    pub projection: Option<Attr>,
    pub keep: Keep,
}

/// One history function call in a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub series: u16,
    pub entity: Entity,
    /// Inclusive window in nanoseconds (windowed functions only).
    pub window: i128,
    /// The same window as whole seconds and nanoseconds, so that a
    /// decision finds where it starts without dividing.
    pub window_parts: (i64, u32),
}

/// A declared list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListDecl {
    pub name: String,
    pub ty: Ty,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Hold,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub verify: Vec<u16>,
    pub shadow: bool,
    pub description: Option<String>,
    pub cond: Node,
}

/// `n` for requests of one kind: its `kind` tests become constants and the
/// `and`/`or`/`not` around them fold, so a rule written for several kinds
/// costs each kind only its own branch.
pub fn specialize(n: &Node, kind: HKind) -> Node {
    let truth = |b: bool| Node::Const(Const::Bool(b));
    let fold = |xs: &[Node], unit: bool| {
        let mut out = Vec::with_capacity(xs.len());
        for x in xs {
            match specialize(x, kind) {
                Node::Const(Const::Bool(b)) if b == unit => {}
                Node::Const(Const::Bool(_)) => return truth(!unit),
                y => out.push(y),
            }
        }
        match out.len() {
            0 => truth(unit),
            // Invariant: the length was just checked.
            1 => out.pop().expect("one condition"),
            _ if unit => Node::And(out.into_boxed_slice()),
            _ => Node::Or(out.into_boxed_slice()),
        }
    };
    match n {
        Node::CodeIn(Attr::Field(Field::Kind), mask) => {
            truth(kind.0 < 64 && mask & (1 << kind.0) != 0)
        }
        Node::And(xs) => fold(xs, true),
        Node::Or(xs) => fold(xs, false),
        Node::Not(x) => match specialize(x, kind) {
            Node::Const(Const::Bool(b)) => truth(!b),
            y => Node::Not(Box::new(y)),
        },
        _ => n.clone(),
    }
}

/// What `n` needs in history to be true, when that can be said from its
/// shape: `Some((slot, bits))` when `n` is false unless the entity in
/// [`crate::history::slot`] `slot` holds some series among `bits`
/// ([`crate::history::presence_bit`]). `exists`, `latest(..) is`, `x in
/// ever(..)` and counts compared so that zero fails all need their series.
pub fn need(n: &Node, qs: &[Query]) -> Option<(usize, u32)> {
    let of = |q: &u16| {
        let q = &qs[usize::from(*q)];
        (
            crate::history::slot(q.entity),
            crate::history::presence_bit(q.series),
        )
    };
    // Whether `count op c` is false at a count of zero.
    let zero_fails = |op: Cmp, c: i64| match op {
        Cmp::Ge | Cmp::Eq => c >= 1,
        Cmp::Gt => c >= 0,
        Cmp::Ne => c == 0,
        Cmp::Lt => c <= 0,
        Cmp::Le => c < 0,
    };
    match n {
        Node::Exists(q) | Node::LatestIs(q, _) | Node::InEver(_, q) => Some(of(q)),
        Node::DistinctCmp(q, _, op, c) if zero_fails(*op, *c) => Some(of(q)),
        Node::CountsCmp(terms, op, c) if zero_fails(*op, *c) => {
            let mut it = terms.iter().map(of);
            let first = it.next()?;
            it.try_fold(first, |(slot, bits), (s, b)| {
                (s == slot).then_some((slot, bits | b))
            })
        }
        Node::And(xs) => xs.iter().find_map(|x| need(x, qs)),
        _ => None,
    }
}

/// The queries `n` reads.
pub fn queries_read(n: &Node, out: &mut Vec<u16>) {
    match n {
        Node::Const(_) | Node::Attr(_) | Node::CodeIn(..) | Node::BoolIs(..) => {}
        Node::Not(x) | Node::InConsts(x, _) | Node::InList(x, _) => queries_read(x, out),
        Node::And(xs) | Node::Or(xs) => xs.iter().for_each(|x| queries_read(x, out)),
        Node::Cmp(_, a, b) | Node::Add(a, b) | Node::Sub(a, b) => {
            queries_read(a, out);
            queries_read(b, out);
        }
        Node::InEver(x, q) => {
            queries_read(x, out);
            out.push(*q);
        }
        Node::LatestIs(q, _)
        | Node::Count(q)
        | Node::Distinct(q, _)
        | Node::Exists(q)
        | Node::Since(q)
        | Node::Latest(q, _)
        | Node::DistinctCmp(q, ..) => out.push(*q),
        Node::CountsCmp(qs, ..) => out.extend_from_slice(qs),
    }
}

/// Reads what a condition needs beyond the subject event: history and lists.
pub trait Lookup {
    fn count(&self, q: &Query) -> i64;
    /// Distinct projected values, counted up to `cap` (a comparison with a
    /// constant needs no more).
    fn distinct(&self, q: &Query, cap: i64) -> i64;
    fn exists(&self, q: &Query) -> bool;
    /// Nanoseconds since the latest matching event, if any within the window.
    fn since(&self, q: &Query) -> Option<i128>;
    /// The latest matching event's projected value (or its kind's code).
    fn latest(&self, q: &Query) -> Option<u128>;
    fn ever_contains(&self, q: &Query, key: u128) -> bool;
    fn list_contains(&self, list: u16, v: Val<'_>) -> bool;
}

/// The event a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub event: &'a Event,
    pub kind: HKind,
    pub decision: Option<Outcome>,
    pub new_device: Option<bool>,
}

impl<'a> Subject<'a> {
    pub fn request(event: &'a Event) -> Self {
        Subject {
            event,
            kind: HKind::of(event.kind),
            decision: None,
            new_device: None,
        }
    }

    /// The code of an enumerated attribute, if present.
    pub fn code(&self, a: Attr) -> Option<u8> {
        let e = self.event;
        match a {
            Attr::Decision => self.decision.map(|d| d as u8),
            Attr::Field(Field::Kind) => Some(self.kind.0),
            Attr::Field(Field::Channel) => e.channel.map(|v| v as u8),
            Attr::Field(Field::Change) => e.change.map(|v| v as u8),
            Attr::Field(Field::Scope) => e.scope.map(|v| v as u8),
            Attr::Field(Field::Result) => e.result.map(|v| v as u8),
            _ => match self.get(a) {
                Val::Code(c) => Some(c),
                _ => None,
            },
        }
    }

    pub fn get(&self, a: Attr) -> Val<'a> {
        let e = self.event;
        let id = |v: Option<u128>| v.map_or(Val::Absent, Val::Id);
        let code = |v: Option<u8>| v.map_or(Val::Absent, Val::Code);
        let tok = |v: &'a Option<crate::contract::ident::Token>| {
            v.as_ref().map_or(Val::Absent, |t| Val::Str(t.as_str()))
        };
        match a {
            Attr::Decision => code(self.decision.map(|d| d as u8)),
            Attr::NewDevice => self.new_device.map_or(Val::Absent, Val::Bool),
            Attr::Field(f) => match f {
                Field::Kind => Val::Code(self.kind.0),
                Field::Channel => code(e.channel.map(|v| v as u8)),
                Field::Change => code(e.change.map(|v| v as u8)),
                Field::Scope => code(e.scope.map(|v| v as u8)),
                Field::Result => code(e.result.map(|v| v as u8)),
                Field::Msisdn => id(e.msisdn.map(|v| v.as_u128())),
                Field::Imsi => id(e.imsi.map(|v| v.as_u128())),
                Field::Imei => id(e.imei.map(|v| v.as_u128())),
                Field::Iccid => id(e.iccid.map(|v| v.as_u128())),
                Field::Eid => id(e.eid.map(|v| v.as_u128())),
                Field::PinOk => e.pin_ok.map_or(Val::Absent, Val::Bool),
                Field::Agent => tok(&e.agent),
                Field::Store => tok(&e.store),
                Field::Account => tok(&e.account),
                Field::Recipient => tok(&e.recipient),
                Field::List => tok(&e.list),
                Field::Id | Field::At | Field::Ref | Field::Value => Val::Absent,
            },
        }
    }
}

/// A value's key in a history set: identifiers and codes as numbers, tokens
/// by a 128-bit SHA-256 prefix (no two real tokens collide).
pub fn key_of(v: Val<'_>) -> Option<u128> {
    match v {
        Val::Absent | Val::Dur(_) | Val::Int(_) => None,
        Val::Bool(b) => Some(b as u128),
        Val::Code(c) => Some(c as u128),
        Val::Id(i) => Some(i),
        Val::Str(s) => {
            let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&d.as_ref()[..16]);
            Some(u128::from_le_bytes(b))
        }
    }
}

/// Evaluates a condition against `s`, reading history through `l`.
/// Any comparison with an absent value is false.
pub fn eval<'a, L: Lookup>(n: &'a Node, s: &Subject<'a>, qs: &'a [Query], l: &L) -> Val<'a> {
    let q = |i: &u16| &qs[*i as usize];
    match n {
        Node::Const(c) => c.val(),
        Node::Attr(a) => s.get(*a),
        Node::Not(x) => Val::Bool(!truth(x, s, qs, l)),
        Node::And(_)
        | Node::Or(_)
        | Node::CodeIn(..)
        | Node::LatestIs(..)
        | Node::CountsCmp(..)
        | Node::DistinctCmp(..)
        | Node::BoolIs(..) => Val::Bool(truth(n, s, qs, l)),
        Node::Cmp(op, a, b) => Val::Bool(compare(*op, eval(a, s, qs, l), eval(b, s, qs, l))),
        Node::Add(a, b) => arith(eval(a, s, qs, l), eval(b, s, qs, l), true),
        Node::Sub(a, b) => arith(eval(a, s, qs, l), eval(b, s, qs, l), false),
        Node::InConsts(x, set) => {
            let v = eval(x, s, qs, l);
            Val::Bool(v != Val::Absent && set.iter().any(|c| c.val() == v))
        }
        Node::InList(x, list) => {
            let v = eval(x, s, qs, l);
            Val::Bool(v != Val::Absent && l.list_contains(*list, v))
        }
        Node::InEver(x, i) => match key_of(eval(x, s, qs, l)) {
            Some(k) => Val::Bool(l.ever_contains(q(i), k)),
            None => Val::Bool(false),
        },
        Node::Count(i) => Val::Int(l.count(q(i))),
        Node::Distinct(i, cap) => Val::Int(l.distinct(q(i), *cap)),
        Node::Exists(i) => Val::Bool(l.exists(q(i))),
        Node::Since(i) => l.since(q(i)).map_or(Val::Absent, Val::Dur),
        Node::Latest(i, ty) => match l.latest(q(i)) {
            None => Val::Absent,
            Some(k) => match ty {
                Ty::Bool => Val::Bool(k != 0),
                Ty::Msisdn | Ty::Imsi | Ty::Imei | Ty::Iccid | Ty::Eid => Val::Id(k),
                // Enumerated types and kinds are kept as their codes.
                _ => u8::try_from(k).map_or(Val::Absent, Val::Code),
            },
        },
    }
}

/// Evaluates a boolean condition: the hot path of every decision, without
/// building intermediate values where the node shapes allow.
pub fn truth<'a, L: Lookup>(n: &'a Node, s: &Subject<'a>, qs: &'a [Query], l: &L) -> bool {
    match n {
        Node::And(xs) => xs.iter().all(|x| truth(x, s, qs, l)),
        Node::Or(xs) => xs.iter().any(|x| truth(x, s, qs, l)),
        Node::Not(x) => !truth(x, s, qs, l),
        Node::CodeIn(a, mask) => s.code(*a).is_some_and(|c| c < 64 && mask & (1 << c) != 0),
        Node::LatestIs(i, c) => l.latest(&qs[*i as usize]) == Some(u128::from(*c)),
        Node::Exists(i) => l.exists(&qs[*i as usize]),
        Node::CountsCmp(terms, op, c) => {
            let sum = terms
                .iter()
                .fold(0i64, |sum, i| sum.saturating_add(l.count(&qs[*i as usize])));
            ordered(*op, sum.cmp(c))
        }
        Node::DistinctCmp(i, cap, op, c) => {
            let q = &qs[*i as usize];
            // Distinct values are at most the entries: when the count
            // already fails `>= c` (or `> c`), so does distinct, without
            // collecting values.
            if matches!(op, Cmp::Ge | Cmp::Gt) && !ordered(*op, l.count(q).cmp(c)) {
                return false;
            }
            ordered(*op, l.distinct(q, *cap).cmp(c))
        }
        Node::BoolIs(a, b) => s.get(*a) == Val::Bool(*b),
        _ => eval(n, s, qs, l) == Val::Bool(true),
    }
}

fn ordered(op: Cmp, ord: std::cmp::Ordering) -> bool {
    match op {
        Cmp::Eq => ord.is_eq(),
        Cmp::Ne => ord.is_ne(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Le => ord.is_le(),
        Cmp::Gt => ord.is_gt(),
        Cmp::Ge => ord.is_ge(),
    }
}

fn compare(op: Cmp, a: Val<'_>, b: Val<'_>) -> bool {
    if a == Val::Absent || b == Val::Absent {
        return false;
    }
    let ord = match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(&y),
        (Val::Dur(x), Val::Dur(y)) => x.cmp(&y),
        _ => {
            return match op {
                Cmp::Eq => a == b,
                Cmp::Ne => a != b,
                // The type checker only lets ordered types reach the other operators.
                _ => false,
            };
        }
    };
    ordered(op, ord)
}

fn arith<'a>(a: Val<'a>, b: Val<'a>, add: bool) -> Val<'a> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Val::Int(if add {
            x.saturating_add(y)
        } else {
            x.saturating_sub(y)
        }),
        (Val::Dur(x), Val::Dur(y)) => Val::Dur(if add {
            x.saturating_add(y)
        } else {
            x.saturating_sub(y)
        }),
        _ => Val::Absent,
    }
}
