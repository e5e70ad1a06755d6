//! Contract v1: the events carriers send, checked once at the edge.
//!
//! Everything past this module holds typed values: an [`Event`] can only be
//! built by [`parse_line`], which enforces the kind's required and allowed
//! fields and the form of every identifier. `proto/spec.md` is the written
//! contract; `tests/it/contract.rs` checks its example lines against this code.
//!
//! This module knows nothing of sockets, rules or storage.

pub mod ident;
mod json;
pub mod time;

use ident::{Eid, Iccid, IdentError, Imei, Imsi, Msisdn, Token};
pub use json::KEYS_PER_OBJECT_MAX;
pub use json::json_str;
use json::{JsonError, Raw};
use std::borrow::Cow;
use std::fmt;
pub use time::Timestamp;

/// Characters an `id` or `ref` may hold (Unicode scalar values).
pub const ID_CHARS_MAX: usize = 128;
/// Characters a list `value` may hold.
pub const LIST_VALUE_CHARS_MAX: usize = 128;
/// The list whose values the contract itself requires to be IMEIs.
pub const BLOCKED_IMEI_LIST: &str = "blocked_imei";

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }
        impl $name {
            /// Every value, in declaration order (their index is their code).
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The contract's spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
            /// Parses the contract's spelling.
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

named_enum!(
    /// What an event is. The first four are decision kinds; the rest are signals.
    Kind {
        SimSwap = "sim_swap",
        EsimTransfer = "esim_transfer",
        PortOut = "port_out",
        AccountChange = "account_change",
        DeviceSeen = "device_seen",
        AuthFailure = "auth_failure",
        FraudReport = "fraud_report",
        Lock = "lock",
        Unlock = "unlock",
        Verification = "verification",
        ListAdd = "list_add",
        ListRemove = "list_remove",
    }
);

impl Kind {
    /// Decision kinds get an answer; signals only change history.
    pub const fn is_decision(self) -> bool {
        matches!(
            self,
            Kind::SimSwap | Kind::EsimTransfer | Kind::PortOut | Kind::AccountChange
        )
    }
    /// A request that moves the line to another SIM.
    pub const fn is_sim_change(self) -> bool {
        matches!(self, Kind::SimSwap | Kind::EsimTransfer)
    }
}

named_enum!(
    /// Where a request was made.
    Channel { Retail = "retail", Care = "care", Online = "online", App = "app", Dealer = "dealer" }
);
named_enum!(
    /// What an `account_change` changes.
    Change {
        Email = "email",
        Password = "password",
        Contact = "contact",
        Pin = "pin",
        Address = "address",
        AuthorizedUser = "authorized_user",
    }
);
named_enum!(
    /// What a customer's lock protects.
    Scope { PortOut = "port_out", SimChange = "sim_change" }
);
named_enum!(
    /// The result of a verification of a held request.
    VerifyResult { Pass = "pass", Fail = "fail" }
);

named_enum!(
    /// Every field of contract v1. The index is the bit in [`FieldSet`].
    Field {
        Id = "id",
        Kind = "kind",
        At = "at",
        Channel = "channel",
        Agent = "agent",
        Store = "store",
        Msisdn = "msisdn",
        Account = "account",
        Iccid = "iccid",
        Eid = "eid",
        Imsi = "imsi",
        Imei = "imei",
        PinOk = "pin_ok",
        Recipient = "recipient",
        Change = "change",
        Scope = "scope",
        Ref = "ref",
        Result = "result",
        List = "list",
        Value = "value",
    }
);

/// A set of fields as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    const fn of(fields: &[Field]) -> FieldSet {
        let mut bits = 0u32;
        let mut i = 0;
        while i < fields.len() {
            bits |= 1 << fields[i] as u32;
            i += 1;
        }
        FieldSet(bits)
    }
    pub const fn contains(self, f: Field) -> bool {
        self.0 & (1 << f as u32) != 0
    }
    const fn union(self, o: FieldSet) -> FieldSet {
        FieldSet(self.0 | o.0)
    }
}

/// Fields every kind takes.
const COMMON: FieldSet = FieldSet::of(&[Field::Id, Field::Kind, Field::At]);
const PLACE: FieldSet = FieldSet::of(&[Field::Channel, Field::Agent, Field::Store]);

impl Kind {
    /// Fields the kind must carry (besides `kind`; `id` and `at` depend on the kind and mode).
    pub const fn required(self) -> FieldSet {
        use Field as F;
        match self {
            Kind::SimSwap => FieldSet::of(&[F::Id, F::Msisdn, F::Account, F::Iccid]),
            Kind::EsimTransfer => FieldSet::of(&[F::Id, F::Msisdn, F::Account, F::Eid]),
            Kind::PortOut => FieldSet::of(&[F::Id, F::Msisdn, F::Account, F::PinOk]),
            Kind::AccountChange => FieldSet::of(&[F::Id, F::Account, F::Change]),
            Kind::DeviceSeen => FieldSet::of(&[F::Msisdn, F::Imsi, F::Imei]),
            Kind::AuthFailure | Kind::FraudReport => FieldSet::of(&[F::Account]),
            Kind::Lock | Kind::Unlock => FieldSet::of(&[F::Msisdn, F::Scope]),
            Kind::Verification => FieldSet::of(&[F::Ref, F::Result]),
            Kind::ListAdd | Kind::ListRemove => FieldSet::of(&[F::List, F::Value]),
        }
    }

    /// Every field the kind takes; any other present field is `unknown_field`.
    pub const fn allowed(self) -> FieldSet {
        use Field as F;
        let own = match self {
            Kind::SimSwap => FieldSet::of(&[F::Iccid, F::Imsi, F::Imei]).union(PLACE),
            Kind::EsimTransfer => FieldSet::of(&[F::Eid, F::Imsi, F::Imei]).union(PLACE),
            Kind::PortOut => FieldSet::of(&[F::PinOk, F::Recipient]).union(PLACE),
            Kind::AccountChange => FieldSet::of(&[F::Change, F::Msisdn]).union(PLACE),
            Kind::DeviceSeen => FieldSet::of(&[]),
            Kind::AuthFailure | Kind::FraudReport => PLACE,
            Kind::Lock | Kind::Unlock => FieldSet::of(&[F::Account]),
            Kind::Verification => FieldSet::of(&[F::Channel, F::Agent]),
            Kind::ListAdd | Kind::ListRemove => FieldSet::of(&[]),
        };
        COMMON.union(own).union(self.required())
    }
}

/// Whether the event's own `at` is required (replay) or optional (the network
/// stamps events with its own clock and only checks a client's `at` for form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtRule {
    Required,
    Optional,
}

/// One valid contract v1 event. Which fields are `Some` follows from `kind`:
/// [`parse_line`] guarantees every required field of the kind is present and
/// no other field is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub id: Option<Box<str>>,
    pub kind: Kind,
    pub at: Option<Timestamp>,
    pub channel: Option<Channel>,
    pub agent: Option<Token>,
    pub store: Option<Token>,
    pub msisdn: Option<Msisdn>,
    pub account: Option<Token>,
    pub iccid: Option<Iccid>,
    pub eid: Option<Eid>,
    pub imsi: Option<Imsi>,
    pub imei: Option<Imei>,
    pub pin_ok: Option<bool>,
    pub recipient: Option<Token>,
    pub change: Option<Change>,
    pub scope: Option<Scope>,
    pub reference: Option<Box<str>>,
    pub result: Option<VerifyResult>,
    pub list: Option<Token>,
    pub value: Option<Box<str>>,
}

impl Event {
    /// An event of `kind` with no fields set; the parser and the generator fill it.
    pub fn empty(kind: Kind) -> Event {
        Event {
            id: None,
            kind,
            at: None,
            channel: None,
            agent: None,
            store: None,
            msisdn: None,
            account: None,
            iccid: None,
            eid: None,
            imsi: None,
            imei: None,
            pin_ok: None,
            recipient: None,
            change: None,
            scope: None,
            reference: None,
            result: None,
            list: None,
            value: None,
        }
    }

    /// The event's canonical form: every field but `at`, in a fixed order,
    /// each tagged and length-prefixed, so two events have the same form
    /// exactly when they are the same request (an idempotent retry). The
    /// engine fingerprints it, keeps held requests in it, and
    /// [`Event::from_canonical`] reads it back.
    pub fn canonical(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128);
        self.canonical_into(&mut buf);
        buf
    }

    /// [`Event::canonical`] into a caller's buffer (cleared first): no
    /// allocation on the decision path.
    pub fn canonical_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(256);
        self.write_canonical(buf);
    }

    /// Writes the event as one contract v1 JSON line (with a trailing newline).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        fn key(buf: &mut Vec<u8>, first: &mut bool, k: &str) {
            buf.extend_from_slice(if *first { b"{\"" } else { b",\"" });
            *first = false;
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(b"\":");
        }
        fn text(buf: &mut Vec<u8>, first: &mut bool, k: &str, v: &str) {
            key(buf, first, k);
            json_str(buf, v);
        }
        let mut first = true;
        let f = &mut first;
        if let Some(v) = &self.id {
            text(buf, f, "id", v);
        }
        text(buf, f, "kind", self.kind.as_str());
        if let Some(v) = self.at {
            text(buf, f, "at", &v.to_rfc3339_utc());
        }
        // Identifiers, tokens and enumerations never need escaping.
        fn plain(buf: &mut Vec<u8>, first: &mut bool, k: &str, v: Option<&dyn fmt::Display>) {
            use std::io::Write as _;
            if let Some(v) = v {
                key(buf, first, k);
                // Writing to a Vec cannot fail.
                let _ = write!(buf, "\"{v}\"");
            }
        }
        plain(buf, f, "msisdn", self.msisdn.as_ref().map(|v| v as _));
        plain(buf, f, "account", self.account.as_ref().map(|v| v as _));
        plain(buf, f, "iccid", self.iccid.as_ref().map(|v| v as _));
        plain(buf, f, "eid", self.eid.as_ref().map(|v| v as _));
        plain(buf, f, "imsi", self.imsi.as_ref().map(|v| v as _));
        plain(buf, f, "imei", self.imei.as_ref().map(|v| v as _));
        plain(buf, f, "recipient", self.recipient.as_ref().map(|v| v as _));
        plain(buf, f, "channel", self.channel.as_ref().map(|v| v as _));
        plain(buf, f, "agent", self.agent.as_ref().map(|v| v as _));
        plain(buf, f, "store", self.store.as_ref().map(|v| v as _));
        plain(buf, f, "change", self.change.as_ref().map(|v| v as _));
        plain(buf, f, "scope", self.scope.as_ref().map(|v| v as _));
        if let Some(v) = &self.reference {
            text(buf, f, "ref", v);
        }
        plain(buf, f, "result", self.result.as_ref().map(|v| v as _));
        plain(buf, f, "list", self.list.as_ref().map(|v| v as _));
        if let Some(v) = &self.value {
            text(buf, f, "value", v);
        }
        if let Some(v) = self.pin_ok {
            key(buf, f, "pin_ok");
            buf.extend_from_slice(if v { b"true" } else { b"false" });
        }
        buf.extend_from_slice(b"}\n");
    }

    /// A length-prefixed, field-tagged encoding of everything but `at`.
    /// Reads back the canonical form (every field but `at`) that
    /// [`Event::canonical`] writes: a held request is kept in this form, one
    /// allocation instead of one per field. Each
    /// value goes through its parser again; `None` for anything but a
    /// canonical form.
    pub fn from_canonical(b: &[u8]) -> Option<Event> {
        fn code<T: Copy>(all: &[T], v: &[u8]) -> Option<T> {
            match v {
                [c] => all.get(usize::from(*c)).copied(),
                _ => None,
            }
        }
        fn key(v: &[u8]) -> Option<u128> {
            let mut bytes = [0u8; 16];
            bytes.get_mut(..v.len())?.copy_from_slice(v);
            Some(u128::from_le_bytes(bytes))
        }
        fn len(b: &[u8]) -> Option<(usize, &[u8])> {
            let mut n = 0usize;
            for (i, byte) in b.iter().enumerate().take(3) {
                n |= usize::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    return Some((n, &b[i + 1..]));
                }
            }
            None
        }
        fn text(v: &[u8]) -> Option<Box<str>> {
            std::str::from_utf8(v).ok().map(Box::from)
        }
        fn token(v: &[u8]) -> Option<Token> {
            Token::parse(std::str::from_utf8(v).ok()?).ok()
        }
        let (&tag, rest) = b.split_first()?;
        let (n, rest) = len(rest)?;
        if tag != Field::Kind as u8 || n != 1 {
            return None;
        }
        let (kind, mut rest) = rest.split_first()?;
        let mut ev = Event::empty(*Kind::ALL.get(usize::from(*kind))?);
        while let Some((&tag, r)) = rest.split_first() {
            let (n, r) = len(r)?;
            let (v, r) = (r.get(..n)?, r.get(n..)?);
            rest = r;
            match Field::ALL.get(usize::from(tag))? {
                Field::Id => ev.id = Some(text(v)?),
                Field::Channel => ev.channel = Some(code(Channel::ALL, v)?),
                Field::Agent => ev.agent = Some(token(v)?),
                Field::Store => ev.store = Some(token(v)?),
                Field::Account => ev.account = Some(token(v)?),
                Field::Recipient => ev.recipient = Some(token(v)?),
                Field::List => ev.list = Some(token(v)?),
                Field::Msisdn => ev.msisdn = Some(Msisdn::parse(&format!("+{}", key(v)?)).ok()?),
                Field::Iccid => ev.iccid = Some(Iccid::parse(&key(v)?.to_string()).ok()?),
                Field::Eid => ev.eid = Some(Eid::parse(&format!("{:032}", key(v)?)).ok()?),
                Field::Imsi => {
                    // The key holds the length above bit 64 (see `Imsi::as_u128`).
                    let k = key(v)?;
                    // An IMSI has 14 or 15 digits: a wider one is damaged
                    // (and a width past u16 would not even format).
                    let width = usize::try_from(k >> 64).ok().filter(|w| *w <= 15)?;
                    let digits = format!("{:0width$}", k & u128::from(u64::MAX));
                    ev.imsi = Some(Imsi::parse(&digits).ok()?);
                }
                Field::Imei => ev.imei = Some(Imei::parse(&format!("{:015}", key(v)?)).ok()?),
                Field::PinOk => ev.pin_ok = Some(code(&[false, true], v)?),
                Field::Change => ev.change = Some(code(Change::ALL, v)?),
                Field::Scope => ev.scope = Some(code(Scope::ALL, v)?),
                Field::Ref => ev.reference = Some(text(v)?),
                Field::Result => ev.result = Some(code(VerifyResult::ALL, v)?),
                Field::Value => ev.value = Some(text(v)?),
                Field::Kind | Field::At => return None,
            }
        }
        Some(ev)
    }

    fn write_canonical(&self, b: &mut Vec<u8>) {
        // Tag, length as LEB128, bytes: short, so that a typical request
        // hashes in few blocks, and unambiguous.
        fn put(b: &mut Vec<u8>, tag: Field, bytes: &[u8]) {
            let n = bytes.len();
            if n < 0x80 {
                // The common case: one length byte.
                b.extend_from_slice(&[tag as u8, n as u8]);
            } else {
                b.push(tag as u8);
                let mut n = n;
                while n >= 0x80 {
                    b.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                b.push(n as u8);
            }
            b.extend_from_slice(bytes);
        }
        put(b, Field::Kind, &[self.kind as u8]);
        if let Some(v) = &self.id {
            put(b, Field::Id, v.as_bytes());
        }
        if let Some(v) = self.channel {
            put(b, Field::Channel, &[v as u8]);
        }
        for (f, v) in [
            (Field::Agent, &self.agent),
            (Field::Store, &self.store),
            (Field::Account, &self.account),
            (Field::Recipient, &self.recipient),
            (Field::List, &self.list),
        ] {
            if let Some(v) = v {
                put(b, f, v.as_str().as_bytes());
            }
        }
        for (f, v) in [
            (Field::Msisdn, self.msisdn.map(|v| v.as_u128())),
            (Field::Iccid, self.iccid.map(|v| v.as_u128())),
            (Field::Eid, self.eid.map(|v| v.as_u128())),
            (Field::Imsi, self.imsi.map(|v| v.as_u128())),
            (Field::Imei, self.imei.map(|v| v.as_u128())),
        ] {
            if let Some(v) = v {
                // Identifier keys without their high zero bytes.
                let bytes = v.to_le_bytes();
                let len = 16 - (v.leading_zeros() / 8) as usize;
                put(b, f, &bytes[..len]);
            }
        }
        if let Some(v) = self.pin_ok {
            put(b, Field::PinOk, &[v as u8]);
        }
        if let Some(v) = self.change {
            put(b, Field::Change, &[v as u8]);
        }
        if let Some(v) = self.scope {
            put(b, Field::Scope, &[v as u8]);
        }
        if let Some(v) = &self.reference {
            put(b, Field::Ref, v.as_bytes());
        }
        if let Some(v) = self.result {
            put(b, Field::Result, &[v as u8]);
        }
        if let Some(v) = &self.value {
            put(b, Field::Value, v.as_bytes());
        }
    }
}

/// The closed set of error codes a line can get in replay (the network adds its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    BadJson,
    DuplicateKey,
    UnknownKind,
    UnknownField,
    MissingField,
    InvalidValue,
    OutOfOrder,
    IdConflict,
    UnknownRef,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::DuplicateKey,
        ErrorCode::UnknownKind,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::InvalidValue,
        ErrorCode::OutOfOrder,
        ErrorCode::IdConflict,
        ErrorCode::UnknownRef,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::DuplicateKey => "duplicate_key",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::OutOfOrder => "out_of_order",
            ErrorCode::IdConflict => "id_conflict",
            ErrorCode::UnknownRef => "unknown_ref",
        }
    }
}

/// Why a line was refused: a code a client can act on, the field at fault
/// (when one is), and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    pub code: ErrorCode,
    /// The line's `id` when it was itself valid.
    pub id: Option<Box<str>>,
    pub field: Option<Box<str>>,
    pub message: String,
}

impl ContractError {
    pub fn new(code: ErrorCode, field: Option<&str>, message: impl Into<String>) -> Self {
        ContractError {
            code,
            id: None,
            field: field.map(Into::into),
            message: message.into(),
        }
    }
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({}): {}", self.code.as_str(), field, self.message),
            None => write!(f, "{}: {}", self.code.as_str(), self.message),
        }
    }
}

/// Parses and validates one line of contract v1.
pub fn parse_line(line: &str, at_rule: AtRule) -> Result<Event, ContractError> {
    let obj = json::parse_object(line).map_err(|e| match e {
        JsonError::Bad(m) => ContractError::new(ErrorCode::BadJson, None, m),
        JsonError::DuplicateKey(k) => ContractError::new(
            ErrorCode::DuplicateKey,
            None,
            format!("the key {k:?} appears more than once"),
        ),
        JsonError::TooManyKeys => ContractError::new(
            ErrorCode::BadJson,
            None,
            format!(
                "an object of the line holds more than {} keys (KEYS_PER_OBJECT_MAX)",
                json::KEYS_PER_OBJECT_MAX
            ),
        ),
    })?;
    let mut slots: [Option<Raw<'_>>; Field::ALL.len()] = Default::default();
    let mut unknown: Option<Cow<'_, str>> = None;
    for (key, value) in obj.entries {
        if value == Raw::Null {
            continue; // null counts as absent
        }
        match Field::from_name(&key) {
            Some(f) => slots[f as usize] = Some(value),
            None => {
                if unknown.is_none() {
                    unknown = Some(key);
                }
            }
        }
    }
    // The id first, so every later error can carry it.
    let id = match slots[Field::Id as usize].take() {
        None => None,
        Some(raw) => Some(parse_id(Field::Id, raw)?),
    };
    let with_id = |mut e: ContractError| {
        e.id.clone_from(&id);
        e
    };
    let kind = match slots[Field::Kind as usize].take() {
        None => {
            return Err(with_id(ContractError::new(
                ErrorCode::MissingField,
                Some("kind"),
                "every event needs a kind",
            )));
        }
        Some(Raw::Str(s)) => Kind::from_name(&s).ok_or_else(|| {
            with_id(ContractError::new(
                ErrorCode::UnknownKind,
                Some("kind"),
                format!("unknown kind {:?}; expected one of {}", s, names(Kind::ALL)),
            ))
        })?,
        Some(other) => {
            return Err(with_id(ContractError::new(
                ErrorCode::InvalidValue,
                Some("kind"),
                format!("kind must be a string, not {}", describe(&other)),
            )));
        }
    };
    if let Some(key) = unknown {
        return Err(with_id(ContractError::new(
            ErrorCode::UnknownField,
            Some(&key),
            format!("{kind} takes no field {key:?}"),
        )));
    }
    let allowed = kind.allowed();
    for f in Field::ALL {
        if slots[*f as usize].is_some() && !allowed.contains(*f) {
            return Err(with_id(ContractError::new(
                ErrorCode::UnknownField,
                Some(f.as_str()),
                format!("{kind} takes no field {:?}", f.as_str()),
            )));
        }
    }
    let mut required = kind.required();
    if at_rule == AtRule::Required {
        required = required.union(FieldSet::of(&[Field::At]));
    }
    if required.contains(Field::Id) && id.is_none() {
        return Err(with_id(missing(kind, Field::Id)));
    }
    for f in Field::ALL {
        if *f != Field::Id && required.contains(*f) && slots[*f as usize].is_none() {
            return Err(with_id(missing(kind, *f)));
        }
    }
    let mut ev = Event::empty(kind);
    ev.id = id.clone();
    fill(&mut ev, &mut slots).map_err(with_id)?;
    Ok(ev)
}

fn missing(kind: Kind, f: Field) -> ContractError {
    ContractError::new(
        ErrorCode::MissingField,
        Some(f.as_str()),
        format!("{kind} needs {:?}", f.as_str()),
    )
}

fn names<T: fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(raw: &Raw<'_>) -> &'static str {
    match raw {
        Raw::Null => "null",
        Raw::Bool(_) => "a boolean",
        Raw::Str(_) => "a string",
        Raw::Other(what) => what,
    }
}

fn invalid(f: Field, message: String) -> ContractError {
    ContractError::new(ErrorCode::InvalidValue, Some(f.as_str()), message)
}

fn string(f: Field, raw: Raw<'_>) -> Result<Cow<'_, str>, ContractError> {
    match raw {
        Raw::Str(s) => Ok(s),
        other => Err(invalid(
            f,
            format!("{} must be a string, not {}", f.as_str(), describe(&other)),
        )),
    }
}

fn parse_id(f: Field, raw: Raw<'_>) -> Result<Box<str>, ContractError> {
    let s = string(f, raw)?;
    let n = s.chars().count();
    if n == 0 || n > ID_CHARS_MAX {
        return Err(invalid(
            f,
            format!(
                "{} must hold 1 to {ID_CHARS_MAX} characters, not {n}",
                f.as_str()
            ),
        ));
    }
    Ok(s.into())
}

fn ident<T>(
    f: Field,
    raw: Raw<'_>,
    parse: impl FnOnce(&str) -> Result<T, IdentError>,
) -> Result<T, ContractError> {
    let s = string(f, raw)?;
    parse(&s).map_err(|e| invalid(f, format!("{}: {}", f.as_str(), e.0)))
}

fn named<T: Copy + fmt::Display>(
    f: Field,
    raw: Raw<'_>,
    from: impl FnOnce(&str) -> Option<T>,
    all: &[T],
) -> Result<T, ContractError> {
    let s = string(f, raw)?;
    from(&s).ok_or_else(|| {
        invalid(
            f,
            format!(
                "{}: {:?} is not one of {}",
                f.as_str(),
                truncate(&s),
                names(all)
            ),
        )
    })
}

/// Keeps error messages short when a client sends a huge value.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Moves each present slot into its typed field.
fn fill(ev: &mut Event, slots: &mut [Option<Raw<'_>>]) -> Result<(), ContractError> {
    for f in Field::ALL {
        let Some(raw) = slots[*f as usize].take() else {
            continue;
        };
        match f {
            Field::Id | Field::Kind => {}
            Field::At => {
                let s = string(*f, raw)?;
                let t = Timestamp::parse(&s)
                    .map_err(|e| invalid(*f, format!("at: {} (RFC 3339 expected)", e.0)))?;
                ev.at = Some(t);
            }
            Field::Channel => ev.channel = Some(named(*f, raw, Channel::from_name, Channel::ALL)?),
            Field::Change => ev.change = Some(named(*f, raw, Change::from_name, Change::ALL)?),
            Field::Scope => ev.scope = Some(named(*f, raw, Scope::from_name, Scope::ALL)?),
            Field::Result => {
                ev.result = Some(named(*f, raw, VerifyResult::from_name, VerifyResult::ALL)?)
            }
            Field::Agent => ev.agent = Some(ident(*f, raw, Token::parse)?),
            Field::Store => ev.store = Some(ident(*f, raw, Token::parse)?),
            Field::Account => ev.account = Some(ident(*f, raw, Token::parse)?),
            Field::Recipient => ev.recipient = Some(ident(*f, raw, Token::parse)?),
            Field::List => ev.list = Some(ident(*f, raw, Token::parse)?),
            Field::Msisdn => ev.msisdn = Some(ident(*f, raw, Msisdn::parse)?),
            Field::Iccid => ev.iccid = Some(ident(*f, raw, Iccid::parse)?),
            Field::Eid => ev.eid = Some(ident(*f, raw, Eid::parse)?),
            Field::Imsi => ev.imsi = Some(ident(*f, raw, Imsi::parse)?),
            Field::Imei => ev.imei = Some(ident(*f, raw, Imei::parse)?),
            Field::PinOk => match raw {
                Raw::Bool(b) => ev.pin_ok = Some(b),
                other => {
                    return Err(invalid(
                        *f,
                        format!("pin_ok must be true or false, not {}", describe(&other)),
                    ));
                }
            },
            Field::Ref => ev.reference = Some(parse_id(*f, raw)?),
            Field::Value => {
                let s = string(*f, raw)?;
                let n = s.chars().count();
                if n == 0 || n > LIST_VALUE_CHARS_MAX {
                    return Err(invalid(
                        *f,
                        format!("value must hold 1 to {LIST_VALUE_CHARS_MAX} characters, not {n}"),
                    ));
                }
                ev.value = Some(s.into());
            }
        }
    }
    if ev.list.as_ref().map(Token::as_str) == Some(BLOCKED_IMEI_LIST)
        && let Some(v) = &ev.value
    {
        Imei::parse(v).map_err(|e| {
            invalid(
                Field::Value,
                format!("values of {BLOCKED_IMEI_LIST} must be IMEIs: {}", e.0),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> (ErrorCode, Option<String>) {
        let e = parse_line(line, AtRule::Required).unwrap_err();
        (e.code, e.field.map(|f| f.to_string()))
    }

    const SWAP: &str = r#"{"id":"r1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008"}"#;

    #[test]
    fn a_valid_swap_parses_to_types() {
        let ev = parse_line(SWAP, AtRule::Required).unwrap();
        assert_eq!(ev.kind, Kind::SimSwap);
        assert_eq!(ev.msisdn.unwrap().to_string(), "+447700900123");
        assert_eq!(ev.account.unwrap().as_str(), "A1");
    }

    #[test]
    fn field_rules() {
        let e = |s: &str| err(s);
        assert_eq!(
            e(
                r#"{"id":"r1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1"}"#
            ),
            (ErrorCode::MissingField, Some("iccid".into()))
        );
        assert_eq!(
            e(
                r#"{"id":"r1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":"A1","iccid":"8944110000000000008","pin_ok":true}"#
            ),
            (ErrorCode::UnknownField, Some("pin_ok".into()))
        );
        assert_eq!(
            e(
                r#"{"id":"r1","kind":"sim_swap","at":"2026-03-01T10:00:00Z","msisdn":"+447700900123","account":5,"iccid":"8944110000000000008"}"#
            ),
            (ErrorCode::InvalidValue, Some("account".into()))
        );
        assert_eq!(
            e(r#"{"id":"r1","kind":"swap"}"#),
            (ErrorCode::UnknownKind, Some("kind".into()))
        );
        assert_eq!(
            e(r#"{"id":"r1"}"#),
            (ErrorCode::MissingField, Some("kind".into()))
        );
        assert_eq!(
            e(r#"{"kind":"auth_failure","account":"A","at":"2026-03-01T10:00:00Z","bogus":1}"#),
            (ErrorCode::UnknownField, Some("bogus".into()))
        );
        assert_eq!(
            e(r#"{"kind":"auth_failure","account":"A"}"#),
            (ErrorCode::MissingField, Some("at".into()))
        );
        assert_eq!(
            e(
                r#"{"kind":"list_add","list":"blocked_imei","value":"123","at":"2026-03-01T10:00:00Z"}"#
            ),
            (ErrorCode::InvalidValue, Some("value".into()))
        );
        assert_eq!(e("[1]"), (ErrorCode::BadJson, None));
        assert_eq!(e(r#"{"a":1,"a":1}"#), (ErrorCode::DuplicateKey, None));
    }

    #[test]
    fn null_is_absent() {
        let line = SWAP.replace(r#""account":"A1""#, r#""account":"A1","imei":null"#);
        assert!(parse_line(&line, AtRule::Required).is_ok());
        let line = SWAP.replace(r#""iccid":"8944110000000000008""#, r#""iccid":null"#);
        assert_eq!(err(&line), (ErrorCode::MissingField, Some("iccid".into())));
    }

    #[test]
    fn errors_carry_a_valid_id_only() {
        let e = parse_line(r#"{"id":"r9","kind":"nope"}"#, AtRule::Required).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r9"));
        let e = parse_line(r#"{"id":"","kind":"nope"}"#, AtRule::Required).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::InvalidValue, None));
    }

    #[test]
    fn at_is_optional_on_the_network() {
        let line = r#"{"kind":"auth_failure","account":"A"}"#;
        assert!(parse_line(line, AtRule::Optional).is_ok());
    }

    #[test]
    fn a_canonical_imsi_wider_than_an_imsi_reads_as_nothing() {
        // The IMSI's key keeps its width above bit 64 (`Imsi::as_u128`).
        let form = |width: u128| {
            let key = (width << 64) | 234_150_000_000_688;
            let mut b = vec![Field::Kind as u8, 1, Kind::DeviceSeen as u8];
            b.extend_from_slice(&[Field::Imsi as u8, 16]);
            b.extend_from_slice(&key.to_le_bytes());
            b
        };
        let ev = Event::from_canonical(&form(15)).expect("a 15-digit IMSI");
        assert_eq!(
            ev.imsi.map(|i| i.to_string()).as_deref(),
            Some("234150000000688")
        );
        // 70,000 is past what `format!` can pad to.
        for width in [16, 70_000, u128::from(u64::MAX)] {
            assert_eq!(Event::from_canonical(&form(width)), None, "width {width}");
        }
    }

    #[test]
    fn the_canonical_form_ignores_at_only() {
        let a = parse_line(SWAP, AtRule::Required).unwrap();
        let b = parse_line(&SWAP.replace("10:00:00Z", "11:00:00Z"), AtRule::Required).unwrap();
        let c = parse_line(&SWAP.replace("\"A1\"", "\"A2\""), AtRule::Required).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), c.canonical());
    }
}
