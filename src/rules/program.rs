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

impl Series {
    /// Whether this series records exactly what `other` records: the same
    /// kinds on the same entity, the same completion, `where` and projected
    /// field, kept the same way (a window, an `ever` set, the latest value).
    /// Only a window's length may differ, so history one keeps serves the
    /// other: a longer window finds only what the shorter one kept, a
    /// shorter one reads less. Compiling merges such series into one, and a
    /// reload carries history over between them ([`SeriesMap`]). A `where`
    /// reads only the recorded event's own fields (no list, no history:
    /// the compiler refuses both), so equal filter trees mean equal filters.
    pub fn records_as(&self, other: &Series) -> bool {
        let same_keep = matches!(
            (self.keep, other.keep),
            (Keep::Window(_), Keep::Window(_))
                | (Keep::Ever, Keep::Ever)
                | (Keep::Latest, Keep::Latest)
        );
        same_keep
            && self.kinds == other.kinds
            && self.entity == other.entity
            && self.completed == other.completed
            && self.projection == other.projection
            && self.filter == other.filter
    }
}

/// How the series of the ruleset in use correspond to those of a ruleset
/// replacing it: which history carries over, under which number. Series
/// are matched by [`Series::records_as`]; a compiled ruleset's series are
/// pairwise distinct under it, so the correspondence is one to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesMap {
    /// For each old series, the new series that records the same, if any:
    /// its history is kept under that number, or dropped.
    pub old_to_new: Vec<Option<u16>>,
    /// For each new series, the old series whose history it takes over, if
    /// any: without one it starts empty.
    pub new_from_old: Vec<Option<u16>>,
}

impl SeriesMap {
    /// The correspondence from `old`'s series to `new`'s. At most
    /// `series_max` each, so at most 65,536 comparisons: a reload's cost,
    /// never a decision's.
    pub fn between(old: &[Series], new: &[Series]) -> SeriesMap {
        // Invariant: series_max keeps series numbers within u16.
        let number = |i: usize| u16::try_from(i).expect("series numbers fit u16");
        let mut old_to_new = vec![None; old.len()];
        let new_from_old = new
            .iter()
            .enumerate()
            .map(|(n, ns)| {
                let o = old.iter().position(|os| os.records_as(ns))?;
                // Invariant: compiling merges series that record the same,
                // so no two new series match one old series.
                assert!(old_to_new[o].is_none(), "two new series record as one old");
                old_to_new[o] = Some(number(n));
                Some(number(o))
            })
            .collect();
        SeriesMap {
            old_to_new,
            new_from_old,
        }
    }

    /// Whether every old series keeps its number (new series, if any, come
    /// after them): history needs no renumbering.
    pub fn keeps_numbers(&self) -> bool {
        self.old_to_new
            .iter()
            .enumerate()
            .all(|(o, n)| n.is_some_and(|n| usize::from(n) == o))
    }

    /// New series that take over old history.
    pub fn kept(&self) -> usize {
        self.new_from_old.iter().filter(|o| o.is_some()).count()
    }

    /// New series that start empty.
    pub fn started_empty(&self) -> usize {
        self.new_from_old.len() - self.kept()
    }

    /// Old series whose history is dropped.
    pub fn dropped(&self) -> usize {
        self.old_to_new.iter().filter(|n| n.is_none()).count()
    }
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
/// [`slot`] `slot` holds some series among `bits`
/// ([`presence_bit`]). `exists`, `latest(..) is`, `x in
/// ever(..)` and counts compared so that zero fails all need their series.
pub fn need(n: &Node, qs: &[Query]) -> Option<(usize, u32)> {
    let of = |q: &u16| {
        let q = &qs[usize::from(*q)];
        (slot(q.entity), presence_bit(q.series))
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

/// Compiled conditions and queries written back in the rules language, and
/// values as an analyst reads them: for tools that show what a rule read
/// (`portcullis explain`), so that a run log speaks the language the rule
/// was written in rather than series and query numbers.
///
/// The text means what the compiled condition means; it is not always
/// spelt as written (kinds in a set come in code order, `==` and `is` are
/// one operator, windows use the largest unit that divides them).
#[derive(Debug, Clone, Copy)]
pub struct Describe<'r> {
    pub queries: &'r [Query],
    pub series: &'r [Series],
    pub lists: &'r [ListDecl],
}

impl<'r> Describe<'r> {
    /// The inside of a history function's parentheses:
    /// `[FIELD of] [completed] KINDS on ENTITY [within W] [where COND]`.
    pub fn query(&self, q: &Query) -> String {
        let Some(s) = self.series.get(usize::from(q.series)) else {
            return format!("series {}", q.series);
        };
        let mut out = String::new();
        if let Some(a) = s.projection {
            out.push_str(a.name());
            out.push_str(" of ");
        }
        if s.completed {
            out.push_str("completed ");
        }
        let kinds: Vec<&str> = (0..HKind::COUNT as u8)
            .map(HKind)
            .filter(|k| s.kinds.contains(*k))
            .map(HKind::name)
            .collect();
        match kinds.as_slice() {
            [one] => out.push_str(one),
            many => {
                out.push('[');
                out.push_str(&many.join(", "));
                out.push(']');
            }
        }
        out.push_str(" on ");
        out.push_str(q.entity.name());
        if matches!(s.keep, Keep::Window(_)) {
            out.push_str(" within ");
            out.push_str(&window_text(q.window));
        }
        if let Some(f) = &s.filter {
            out.push_str(" where ");
            out.push_str(&self.node(f));
        }
        out
    }

    /// A history function applied to query `q`: `count(auth_failure on account within 1h)`.
    pub fn call(&self, func: &str, q: &Query) -> String {
        format!("{func}({})", self.query(q))
    }

    /// The type of the values a query's series holds: its projection's, or
    /// the event kind.
    pub fn query_ty(&self, q: &Query) -> Ty {
        self.series
            .get(usize::from(q.series))
            .and_then(|s| s.projection)
            .map_or(Ty::Kind, Attr::ty)
    }

    /// A list's declared name.
    pub fn list_name(&self, list: u16) -> String {
        self.lists
            .get(usize::from(list))
            .map_or_else(|| format!("#{list}"), |d| d.name.clone())
    }

    /// A condition or value in the rules language.
    pub fn node(&self, n: &Node) -> String {
        let mut out = String::new();
        self.write_node(n, &mut out);
        out
    }

    fn query_at(&self, i: u16) -> Option<&Query> {
        self.queries.get(usize::from(i))
    }

    fn call_at(&self, func: &str, i: u16) -> String {
        match self.query_at(i) {
            Some(q) => self.call(func, q),
            None => format!("{func}(query {i})"),
        }
    }

    /// The type a node's value has, when it says (for the constants beside it).
    fn ty_of(&self, n: &Node) -> Option<Ty> {
        match n {
            Node::Attr(a) => Some(a.ty()),
            Node::Latest(_, ty) => Some(*ty),
            Node::Count(_) | Node::Distinct(..) => Some(Ty::Int),
            Node::Since(_) => Some(Ty::Duration),
            Node::Add(a, b) | Node::Sub(a, b) => self.ty_of(a).or_else(|| self.ty_of(b)),
            Node::Const(Const::Int(_)) => Some(Ty::Int),
            Node::Const(Const::Dur(_)) => Some(Ty::Duration),
            Node::Const(Const::Bool(_)) => Some(Ty::Bool),
            Node::Const(_) => None,
            _ => Some(Ty::Bool),
        }
    }

    /// Writes `n`, in parentheses when it binds more loosely than `level`
    /// (0 `or`, 1 `and`, 2 `not`, 3 a comparison, 4 `+`/`-`, 5 an atom).
    fn write_at(&self, n: &Node, level: u8, out: &mut String) {
        let own = match n {
            Node::Or(_) => 0,
            Node::And(_) => 1,
            Node::Not(_) => 2,
            Node::Cmp(..)
            | Node::InConsts(..)
            | Node::CodeIn(..)
            | Node::LatestIs(..)
            | Node::InList(..)
            | Node::InEver(..)
            | Node::CountsCmp(..)
            | Node::DistinctCmp(..)
            | Node::BoolIs(..) => 3,
            Node::Add(..) | Node::Sub(..) => 4,
            _ => 5,
        };
        if own < level {
            out.push('(');
            self.write_node(n, out);
            out.push(')');
        } else {
            self.write_node(n, out);
        }
    }

    fn write_node(&self, n: &Node, out: &mut String) {
        let join = |xs: &[Node], sep: &str, level: u8, out: &mut String| {
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                self.write_at(x, level, out);
            }
        };
        match n {
            Node::Const(c) => out.push_str(&const_text(c, None)),
            Node::Attr(a) => out.push_str(a.name()),
            Node::Not(x) => {
                out.push_str("not ");
                self.write_at(x, 2, out);
            }
            Node::And(xs) => join(xs, " and ", 2, out),
            Node::Or(xs) => join(xs, " or ", 1, out),
            Node::Cmp(op, a, b) => {
                let (ta, tb) = (self.ty_of(a), self.ty_of(b));
                self.write_operand(a, tb, out);
                out.push(' ');
                out.push_str(cmp_text(*op));
                out.push(' ');
                self.write_operand(b, ta, out);
            }
            Node::Add(a, b) | Node::Sub(a, b) => {
                let (ta, tb) = (self.ty_of(a), self.ty_of(b));
                self.write_operand_at(a, tb, 4, out);
                out.push_str(if matches!(n, Node::Add(..)) {
                    " + "
                } else {
                    " - "
                });
                self.write_operand_at(b, ta, 5, out);
            }
            Node::InConsts(x, set) => {
                let ty = self.ty_of(x);
                self.write_at(x, 4, out);
                out.push_str(" in [");
                let items: Vec<String> = set.iter().map(|c| const_text(c, ty)).collect();
                out.push_str(&items.join(", "));
                out.push(']');
            }
            Node::CodeIn(a, mask) => {
                out.push_str(a.name());
                out.push(' ');
                out.push_str(&code_set_text(a.ty(), *mask));
            }
            Node::LatestIs(q, c) => {
                out.push_str(&self.call_at("latest", *q));
                let ty = self.query_at(*q).map(|q| self.query_ty(q));
                out.push_str(" is ");
                out.push_str(&const_text(&Const::Code(*c), ty));
            }
            Node::InList(x, l) => {
                self.write_at(x, 4, out);
                out.push_str(" in list ");
                out.push_str(&self.list_name(*l));
            }
            Node::InEver(x, q) => {
                self.write_at(x, 4, out);
                out.push_str(" in ");
                out.push_str(&self.call_at("ever", *q));
            }
            Node::Count(q) => out.push_str(&self.call_at("count", *q)),
            Node::Distinct(q, _) => out.push_str(&self.call_at("distinct", *q)),
            Node::Exists(q) => out.push_str(&self.call_at("exists", *q)),
            Node::Since(q) => out.push_str(&self.call_at("since", *q)),
            Node::Latest(q, _) => out.push_str(&self.call_at("latest", *q)),
            Node::CountsCmp(terms, op, c) => {
                let sum: Vec<String> = terms.iter().map(|q| self.call_at("count", *q)).collect();
                out.push_str(&sum.join(" + "));
                out.push_str(&format!(" {} {c}", cmp_text(*op)));
            }
            Node::DistinctCmp(q, _, op, c) => {
                out.push_str(&self.call_at("distinct", *q));
                out.push_str(&format!(" {} {c}", cmp_text(*op)));
            }
            Node::BoolIs(a, b) => out.push_str(&format!("{} is {b}", a.name())),
        }
    }

    /// `n` as an operand of a comparison with `other`: a constant is spelt
    /// by the other side's type (`"+447700900123"`, `sim_change`).
    pub fn operand(&self, n: &Node, other: &Node) -> String {
        let mut out = String::new();
        self.write_operand(n, self.ty_of(other), &mut out);
        out
    }

    /// An operand of a comparison: a constant spelt by the other side's type.
    fn write_operand(&self, n: &Node, other: Option<Ty>, out: &mut String) {
        self.write_operand_at(n, other, 4, out);
    }

    fn write_operand_at(&self, n: &Node, other: Option<Ty>, level: u8, out: &mut String) {
        match n {
            Node::Const(c) => out.push_str(&const_text(c, other)),
            _ => self.write_at(n, level, out),
        }
    }
}

/// An operator as the rules language writes it.
pub fn cmp_text(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "==",
        Cmp::Ne => "!=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

/// The operator that says the same with its operands swapped (`a < b`
/// is `b > a`).
pub fn flip_cmp(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        same => same,
    }
}

/// Whether `n` reads nothing: constants and sums of them.
pub fn is_constant(n: &Node) -> bool {
    match n {
        Node::Const(_) => true,
        Node::Add(a, b) | Node::Sub(a, b) => is_constant(a) && is_constant(b),
        _ => false,
    }
}

/// `is X` or `in [X, Y]` for a mask of codes of an enumerated type.
pub fn code_set_text(ty: Ty, mask: u64) -> String {
    let names: Vec<String> = (0..64u8)
        .filter(|c| mask & (1 << c) != 0)
        .map(|c| code_text(ty, c))
        .collect();
    match names.as_slice() {
        [one] => format!("is {one}"),
        many => format!("in [{}]", many.join(", ")),
    }
}

/// A code of an enumerated type by its name (`sim_change`, `hold`).
pub fn code_text(ty: Ty, code: u8) -> String {
    ty.constants()
        .and_then(|names| names.get(usize::from(code)).map(|s| (*s).to_string()))
        .unwrap_or_else(|| format!("#{code}"))
}

/// A constant as the rules language writes it; `ty` types a code or an
/// identifier (from the other side of its comparison).
pub fn const_text(c: &Const, ty: Option<Ty>) -> String {
    match c {
        Const::Bool(b) => b.to_string(),
        Const::Int(n) => n.to_string(),
        Const::Dur(d) => window_text(*d),
        Const::Code(code) => match ty {
            Some(t) => code_text(t, *code),
            None => format!("#{code}"),
        },
        Const::Id(k) => format!("\"{}\"", key_text(*k, ty.unwrap_or(Ty::Token))),
        Const::Str(s) => {
            let mut out = String::from("\"");
            for ch in s.chars() {
                if matches!(ch, '"' | '\\') {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('"');
            out
        }
    }
}

/// A duration in the largest whole unit that divides it, as windows and
/// duration constants are written (`30d`, `1h`, `90m`); a day or two is
/// written in hours (`24h`, `48h`), as rules usually write them.
pub fn window_text(nanos: i128) -> String {
    const S: i128 = 1_000_000_000;
    const DAY: i128 = 86_400 * S;
    if nanos % DAY == 0 && nanos > 2 * DAY {
        return format!("{}d", nanos / DAY);
    }
    for (unit, name) in [(3_600 * S, "h"), (60 * S, "m"), (S, "s")] {
        if nanos % unit == 0 {
            return format!("{}{name}", nanos / unit);
        }
    }
    format!("{nanos}ns")
}

/// An elapsed time for a reader: `2d 3h 4m 5s`, `1.5s`, `0s`.
pub fn elapsed_text(nanos: i128) -> String {
    const S: i128 = 1_000_000_000;
    if nanos < 0 {
        return format!("-{}", elapsed_text(-nanos));
    }
    let (secs, frac) = (nanos / S, nanos % S);
    let mut parts = Vec::new();
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || frac > 0 || parts.is_empty() {
        if frac > 0 {
            let digits = format!("{frac:09}");
            parts.push(format!("{s}.{}s", digits.trim_end_matches('0')));
        } else {
            parts.push(format!("{s}s"));
        }
    }
    parts.join(" ")
}

/// A key of a history value or identifier constant, as the contract spells
/// the type: identifiers round-trip from their keys (`Msisdn::as_u128`
/// and the others document the forms); codes are named; a token's key is
/// a digest and cannot be spelt back.
pub fn key_text(key: u128, ty: Ty) -> String {
    match ty {
        Ty::Msisdn => format!("+{key}"),
        Ty::Imsi => {
            let len = usize::try_from(key >> 64).unwrap_or(15);
            let value = key & u128::from(u64::MAX);
            format!("{value:0len$}")
        }
        Ty::Imei => format!("{key:015}"),
        Ty::Iccid => key.to_string(),
        Ty::Eid => format!("{key:032}"),
        Ty::Bool => (key != 0).to_string(),
        Ty::Int => key.to_string(),
        Ty::Token | Ty::Duration => format!("a {} (key {key:032x})", ty.name()),
        _ => u8::try_from(key).map_or_else(|_| format!("#{key}"), |c| code_text(ty, c)),
    }
}

/// A value read while evaluating, for a reader; `ty` names codes and
/// identifiers.
pub fn val_text(v: Val<'_>, ty: Ty) -> String {
    match v {
        Val::Absent => "absent".to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Int(n) => n.to_string(),
        Val::Dur(d) => elapsed_text(d),
        Val::Code(c) => code_text(ty, c),
        Val::Id(k) => key_text(k, ty),
        Val::Str(s) => s.to_string(),
    }
}

/// The outcome rule of the contract: deny if any deny rule matched; else
/// allow if an allow rule matched; else hold if a hold rule matched; else
/// allow.
pub fn outcome_of(deny: bool, allow: bool, hold: bool) -> Outcome {
    if deny {
        Outcome::Deny
    } else if allow || !hold {
        Outcome::Allow
    } else {
        Outcome::Hold
    }
}

/// The index of an entity kind in per-entity arrays.
pub fn slot(e: Entity) -> usize {
    match e {
        Entity::Line => 0,
        Entity::Device => 1,
        Entity::Account => 2,
        Entity::Agent => 3,
        Entity::Store => 4,
    }
}

/// The bit of `series` in an entity's mask of the series it holds.
pub fn presence_bit(series: u16) -> u32 {
    1 << series.min(31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{CompiledRules, Limits};

    /// Rules beyond the default set: `since`, typed `latest`, strings and
    /// identifiers, lists, arithmetic, `decision` in a `where`, `not`.
    const EXOTIC: &str = r#"
list blocked_imei: imei
list vip: token
rule a deny when since(completed account_change on account within 1h where change is pin) <= 10m
rule b deny when latest(imsi of device_seen on line) == "001010000000001"
rule c deny when store == "S1" and agent != "ag-7"
rule d deny when account not in list vip and (msisdn == "+447700900123" or imei in list blocked_imei)
rule e deny when count([sim_swap, esim_transfer, port_out] on line within 24h where decision is deny) - 1 >= 1
rule f deny when distinct(msisdn of device_seen on device within 7d) + count(lock on line within 2h) > 4
rule g deny when not (channel in [retail, dealer]) and latest(scope of [lock, unlock] on line) is port_out
rule h deny when since(fraud_report on account within 30d) < 36h + 30m or not (kind is port_out or pin_ok)
"#;

    /// Every condition written back by [`Describe`] compiles to the same
    /// condition: the run log shows what the engine evaluates.
    #[test]
    fn described_conditions_compile_back_to_themselves() {
        let fifty = include_str!("../../benches/data/fifty.rules");
        for (file, src) in [
            ("default.rules", crate::rules::DEFAULT_RULES),
            ("fifty.rules", fifty),
            ("exotic.rules", EXOTIC),
        ] {
            let limits = Limits::default();
            let rules = CompiledRules::compile(file, src, &limits)
                .unwrap_or_else(|e| panic!("{file}: {e:?}"));
            let d = Describe::of(&rules);
            let mut again = String::new();
            for l in &rules.lists {
                let ty = format!("{:?}", l.ty).to_lowercase();
                again.push_str(&format!("list {}: {ty}\n", l.name));
            }
            for r in &rules.rules {
                again.push_str(&format!("rule {} deny when {}\n", r.name, d.node(&r.cond)));
            }
            let back = CompiledRules::compile(file, &again, &limits)
                .unwrap_or_else(|e| panic!("{file} written back:\n{again}\n{e:?}"));
            for (r, b) in rules.rules.iter().zip(&back.rules) {
                assert_eq!(r.cond, b.cond, "{}: {}", r.name, d.node(&r.cond));
            }
            assert_eq!(rules.queries, back.queries, "{file}");
            assert_eq!(rules.series, back.series, "{file}");
        }
    }

    #[test]
    fn durations_and_identifiers_read_as_written() {
        let h = 3_600 * 1_000_000_000i128;
        assert_eq!(window_text(24 * h), "24h");
        assert_eq!(window_text(48 * h), "48h");
        assert_eq!(window_text(72 * h), "3d");
        assert_eq!(window_text(30 * 24 * h), "30d");
        assert_eq!(window_text(h * 3 / 2), "90m");
        assert_eq!(window_text(1_500_000_000), "1500000000ns");
        assert_eq!(elapsed_text(0), "0s");
        assert_eq!(elapsed_text(26 * h + 61_500_000_000), "1d 2h 1m 1.5s");
        use crate::contract::ident::{Eid, Iccid, Imei, Imsi, Msisdn};
        let round = |s: &str, key: u128, ty: Ty| assert_eq!(key_text(key, ty), s);
        let msisdn = "+447700900123";
        round(
            msisdn,
            Msisdn::parse(msisdn).expect("valid").as_u128(),
            Ty::Msisdn,
        );
        let imsi = "001010000000001";
        round(imsi, Imsi::parse(imsi).expect("valid").as_u128(), Ty::Imsi);
        let imei = "356938035643809";
        round(imei, Imei::parse(imei).expect("valid").as_u128(), Ty::Imei);
        let iccid = "8944110000000000008";
        round(
            iccid,
            Iccid::parse(iccid).expect("valid").as_u128(),
            Ty::Iccid,
        );
        let eid = "89049032000001000000000000187284";
        round(eid, Eid::parse(eid).expect("valid").as_u128(), Ty::Eid);
        assert_eq!(key_text(7, Ty::Kind), "lock");
        assert_eq!(key_text(1, Ty::Decision), "hold");
    }
}
