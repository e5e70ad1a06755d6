//! The strict JSON layer of contract v1: one object per line, every key once.
//!
//! serde_json already refuses `NaN`, `Infinity`, trailing garbage and unpaired
//! surrogate escapes, but it keeps the last of two equal keys. A gateway that
//! let `{"pin_ok": false, "pin_ok": true}` through would decide on whichever
//! copy its parser happened to keep while an upstream log showed the other, so
//! repeated keys are refused here, at every depth. Values are borrowed from the
//! line where no escape forces a copy: this is the hot path of replay.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A top-level value as the contract sees it: strings and booleans are the
/// only values a field may take; everything else is kept only as "other" so
/// that the field can be named in an `invalid_value` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    /// A number, an array or an object.
    Other(&'static str),
}

/// A parsed line: its keys in order with their values.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    pub entries: Vec<(Cow<'a, str>, Raw<'a>)>,
}

/// The most keys one object may hold, at any depth. The contract's kinds
/// have at most about 15 fields; a line of thousands of keys is an attack on
/// the duplicate check, which compares each key with the object's others:
/// with this bound a line costs at most this many comparisons per key,
/// whatever its length.
pub const KEYS_PER_OBJECT_MAX: usize = 64;

/// Why a line is not a usable object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON, or JSON but not an object (the message says which).
    Bad(String),
    /// An object (at any depth) repeats a key.
    DuplicateKey(String),
    /// An object (at any depth) holds more than [`KEYS_PER_OBJECT_MAX`]
    /// keys.
    TooManyKeys,
}

/// Parses one line into its top-level entries.
pub fn parse_object(line: &str) -> Result<RawObject<'_>, JsonError> {
    let mut de = serde_json::Deserializer::from_str(line);
    let mut dup: Option<String> = None;
    let parsed = de.deserialize_any(TopVisitor { dup: &mut dup });
    let obj = match parsed {
        Ok(obj) => obj,
        Err(e) if e.to_string().starts_with(TOO_MANY_KEYS) => return Err(JsonError::TooManyKeys),
        Err(e) => return Err(JsonError::Bad(e.to_string())),
    };
    if let Err(e) = de.end() {
        return Err(JsonError::Bad(e.to_string()));
    }
    match (obj, dup) {
        (_, Some(key)) => Err(JsonError::DuplicateKey(key)),
        (Some(obj), None) => Ok(obj),
        (None, None) => Err(JsonError::Bad("the line is JSON but not an object".into())),
    }
}

/// Slots of an object's key table: a power of two, twice
/// [`KEYS_PER_OBJECT_MAX`], so a probe ends at an empty slot quickly.
const KEY_SLOTS: usize = 2 * KEYS_PER_OBJECT_MAX;

/// One object's keys, for the duplicate check in constant time per key: an
/// open-addressing table on the stack of each key's index and 64-bit hash
/// (fixed seed: the core draws no randomness). Keys are compared only when
/// their whole hashes match, so keys chosen to share a slot cost a probe of
/// integer comparisons, never a string comparison each.
struct KeySet {
    /// Index + 1 into the object's keys (0: empty), and the key's hash.
    slots: [(u8, u64); KEY_SLOTS],
}

// Every index into an object's keys fits the table's u8.
const _: () = assert!(KEYS_PER_OBJECT_MAX < u8::MAX as usize);

impl KeySet {
    fn new() -> KeySet {
        KeySet {
            slots: [(0, 0); KEY_SLOTS],
        }
    }

    /// Adds the key at `index`, where `key_of(i)` is the object's key `i`;
    /// true if an earlier key is equal. Callers keep `index` below
    /// [`KEYS_PER_OBJECT_MAX`], so the table never fills.
    fn repeats<'k>(&mut self, index: usize, key_of: impl Fn(usize) -> &'k str) -> bool {
        use std::hash::BuildHasher;
        let key = key_of(index);
        let hash = foldhash::fast::FixedState::with_seed(0x6a73_6f6e_6b65_7973).hash_one(key);
        let mut slot = hash as usize % KEY_SLOTS;
        loop {
            match self.slots[slot] {
                (0, _) => {
                    // Within the bound: index < KEYS_PER_OBJECT_MAX < 255.
                    self.slots[slot] = (index as u8 + 1, hash);
                    return false;
                }
                (i, h) if h == hash && key_of(usize::from(i) - 1) == key => return true,
                _ => slot = (slot + 1) % KEY_SLOTS,
            }
        }
    }
}

/// The message a visitor stops with past [`KEYS_PER_OBJECT_MAX`] keys,
/// told apart from serde_json's own by its start.
const TOO_MANY_KEYS: &str = "too many keys";

struct TopVisitor<'d> {
    dup: &'d mut Option<String>,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    /// `None` when the line is valid JSON but not an object.
    type Value = Option<RawObject<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = RawObject {
            entries: Vec::with_capacity(8),
        };
        let mut set = KeySet::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if obj.entries.len() == KEYS_PER_OBJECT_MAX {
                return Err(de::Error::custom(TOO_MANY_KEYS));
            }
            let value = map.next_value_seed(ValueSeed { dup: self.dup })?;
            obj.entries.push((key.0, value));
            let last = obj.entries.len() - 1;
            let entries = &obj.entries;
            if self.dup.is_none() && set.repeats(last, |i| entries[i].0.as_ref()) {
                *self.dup = Some(obj.entries[last].0.clone().into_owned());
            }
        }
        Ok(Some(obj))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq
            .next_element_seed(NestedSeed { dup: self.dup })?
            .is_some()
        {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A string borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A top-level field value.
struct ValueSeed<'d> {
    dup: &'d mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Raw<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::Other("a number"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq
            .next_element_seed(NestedSeed { dup: self.dup })?
            .is_some()
        {}
        Ok(Raw::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
        NestedSeed { dup: self.dup }.visit_map(map)?;
        Ok(Raw::Other("an object"))
    }
}

/// Any nested value: only walked, to find repeated keys inside it.
struct NestedSeed<'d> {
    dup: &'d mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for NestedSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NestedSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(NestedSeed { dup: self.dup })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut set = KeySet::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if keys.len() == KEYS_PER_OBJECT_MAX {
                return Err(de::Error::custom(TOO_MANY_KEYS));
            }
            map.next_value_seed(NestedSeed { dup: self.dup })?;
            keys.push(key.0);
            let last = keys.len() - 1;
            let held = &keys;
            if self.dup.is_none() && set.repeats(last, |i| held[i].as_ref()) {
                *self.dup = Some(keys[last].clone().into_owned());
            }
        }
        Ok(())
    }
}

/// Writes `s` as a JSON string: the one string writer of every line the
/// gateway writes (answers, errors, alerts, the canonical form of an event),
/// beside the reader, so both agree on what a string is.
pub fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(s: &str) -> bool {
        matches!(parse_object(s), Err(JsonError::Bad(_)))
    }

    #[test]
    fn objects_parse_and_borrow() {
        let o = parse_object(r#"{"a":"x","b":true,"c":null,"d":1,"e":[1],"f":{}}"#).unwrap();
        assert_eq!(o.entries.len(), 6);
        assert!(matches!(o.entries[0].1, Raw::Str(Cow::Borrowed("x"))));
        assert_eq!(o.entries[1].1, Raw::Bool(true));
        assert_eq!(o.entries[2].1, Raw::Null);
        assert_eq!(o.entries[3].1, Raw::Other("a number"));
        assert_eq!(o.entries[4].1, Raw::Other("an array"));
        assert_eq!(o.entries[5].1, Raw::Other("an object"));
    }

    #[test]
    fn not_objects_are_bad_json() {
        for s in [
            "",
            "x",
            "[]",
            "1",
            "\"s\"",
            "null",
            "true",
            "{",
            "{}x",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":-Infinity}",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            "{\"a\":1,}",
            "{'a':1}",
        ] {
            assert!(bad(s), "{s:?} should be bad_json");
        }
    }

    /// `KEYS_PER_OBJECT_MAX` keys read; one more is refused, at the top
    /// level and nested, however long the rest of the line.
    #[test]
    fn objects_hold_at_most_the_key_bound() {
        let object = |n: usize| {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":0")).collect();
            format!("{{{}}}", keys.join(","))
        };
        assert!(parse_object(&object(KEYS_PER_OBJECT_MAX)).is_ok());
        assert_eq!(
            parse_object(&object(KEYS_PER_OBJECT_MAX + 1)).unwrap_err(),
            JsonError::TooManyKeys
        );
        let nested = |n: usize| format!("{{\"a\":[1,{}]}}", object(n));
        assert!(parse_object(&nested(KEYS_PER_OBJECT_MAX)).is_ok());
        assert_eq!(
            parse_object(&nested(KEYS_PER_OBJECT_MAX + 1)).unwrap_err(),
            JsonError::TooManyKeys
        );
        assert_eq!(
            parse_object(&object(8_464)).unwrap_err(),
            JsonError::TooManyKeys
        );
    }

    /// Past the keys compared one by one, a repeat is still found, at the
    /// top level and nested, whichever its position.
    #[test]
    fn repeats_among_many_keys_are_found() {
        for (first, second) in [(0, 40), (20, 63), (17, 18), (3, 10)] {
            let keys: Vec<String> = (0..KEYS_PER_OBJECT_MAX)
                .map(|i| {
                    if i == second {
                        format!("\"k{first}\":0")
                    } else {
                        format!("\"k{i}\":0")
                    }
                })
                .collect();
            let object = format!("{{{}}}", keys.join(","));
            let want = JsonError::DuplicateKey(format!("k{first}"));
            assert_eq!(parse_object(&object).unwrap_err(), want, "{first} {second}");
            let nested = format!("{{\"a\":[{object}]}}");
            assert_eq!(parse_object(&nested).unwrap_err(), want, "{first} {second}");
        }
    }

    #[test]
    fn paired_surrogates_are_fine() {
        let o = parse_object(r#"{"a":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(o.entries[0].1, Raw::Str(Cow::Owned("😀".into())));
    }

    #[test]
    fn repeated_keys_at_any_depth() {
        assert_eq!(
            parse_object(r#"{"a":1,"a":2}"#).unwrap_err(),
            JsonError::DuplicateKey("a".into())
        );
        assert_eq!(
            parse_object(r#"{"a":null,"a":null}"#).unwrap_err(),
            JsonError::DuplicateKey("a".into())
        );
        assert_eq!(
            parse_object(r#"{"x":{"b":1,"b":2}}"#).unwrap_err(),
            JsonError::DuplicateKey("b".into())
        );
        assert_eq!(
            parse_object(r#"{"x":[{"b":1,"b":2}]}"#).unwrap_err(),
            JsonError::DuplicateKey("b".into())
        );
        // An escaped spelling of the same key is the same key.
        assert_eq!(
            parse_object(r#"{"a":1,"\u0061":2}"#).unwrap_err(),
            JsonError::DuplicateKey("a".into())
        );
    }

    #[test]
    fn syntax_errors_win_over_repeated_keys() {
        assert!(bad(r#"{"a":1,"a":2"#));
    }
}
