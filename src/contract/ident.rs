//! Subscriber identifiers, parsed once at the edge and carried as types.
//!
//! Every identifier that enters Portcullis (MSISDN, IMSI, IMEI, ICCID, EID,
//! opaque tokens) is validated exactly once, here, and from then on travels
//! as a small `Copy` value (or a boxed string for [`Token`]). The rest of
//! the gateway therefore never has to wonder whether a string was checked,
//! trimmed or normalised: if it holds an [`Msisdn`], the value is canonical
//! E.164.
//!
//! The grammars are deliberately strict. Fraud decisions key on these values,
//! so two spellings of one identifier (with a space, a trailing newline, a
//! fullwidth digit, ...) must never be able to produce two different keys or
//! slip past a block list. Anything that is not exactly the canonical form is
//! rejected rather than repaired. Validation works on bytes, never on
//! `char::is_numeric`, so non-ASCII digits cannot sneak in.
//!
//! Each type's `Display` gives back the exact canonical string it was parsed
//! from, and `as_u128` gives a numeric key that is unique within the type.

use std::fmt;
use std::str::FromStr;

/// Why an identifier was rejected: a short, static, human-readable reason.
///
/// Static so that rejecting hostile input never allocates and never echoes
/// the (possibly sensitive or malicious) input back into logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentError(pub &'static str);

impl fmt::Display for IdentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for IdentError {}

/// Longest accepted [`Token`], in characters (all ASCII, so also bytes).
pub const TOKEN_CHARS_MAX: usize = 64;

/// Returns the bytes of `s` if every one of them is an ASCII digit `0-9`.
///
/// Checks bytes rather than `char`s so that Arabic-Indic, fullwidth and other
/// Unicode digits are rejected: they would otherwise give a second spelling
/// of the same identifier.
fn ascii_digits(s: &str) -> Option<&[u8]> {
    let b = s.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        Some(b)
    } else {
        None
    }
}

/// Decimal value of a run of ASCII digits, or `None` on overflow.
///
/// Callers bound the length (at most 32 digits, and 10^32 < 2^128), so
/// overflow cannot happen in practice; checked arithmetic keeps this total
/// anyway so no input can ever panic in a debug build.
fn decimal_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u128::from(d.wrapping_sub(b'0')))
    })
}

/// Same as [`decimal_value`] for runs of at most 19 digits (fits in `u64`).
fn decimal_value_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// Luhn (mod 10) check over ASCII digits, the last being the check digit.
///
/// This is the check of 3GPP TS 23.003 Annex B for IMEIs and of ITU-T E.118
/// for ICCIDs. Returns `false` for an empty slice or any byte that is not an
/// ASCII digit, so it is safe to call on unvalidated input.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let Some((&check, payload)) = digits.split_last() else {
        return false;
    };
    if !check.is_ascii_digit() {
        return false;
    }
    let mut sum: u32 = 0;
    // Walk the payload from the right: the digit next to the check digit and
    // every second one after it is doubled, with the digits of the product
    // summed (x - 9 for a two-digit product).
    for (pos, &b) in payload.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let d = u32::from(b - b'0');
        sum += if pos % 2 == 0 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    // The check digit is what brings the total to a multiple of ten.
    let expected = (10 - sum % 10) % 10;
    u32::from(check - b'0') == expected
}

/// A subscriber telephone number in E.164 form: `+` then 5 to 15 digits,
/// the first non-zero.
///
/// Stored as the digits' value: since the first digit is never zero, the
/// value alone determines the string, so 8 bytes suffice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(u64);

impl Msisdn {
    /// Parses exactly `\+[1-9][0-9]{4,14}`; nothing else is accepted.
    pub fn parse(s: &str) -> Result<Msisdn, IdentError> {
        let Some(rest) = s.strip_prefix('+') else {
            return Err(IdentError("must start with '+'"));
        };
        let Some(digits) = ascii_digits(rest) else {
            return Err(IdentError("must be '+' followed by ASCII digits only"));
        };
        if !(5..=15).contains(&digits.len()) {
            return Err(IdentError("must have 5 to 15 digits after '+'"));
        }
        if digits.first() == Some(&b'0') {
            return Err(IdentError("first digit after '+' must not be 0"));
        }
        // At most 15 digits, far below u64::MAX.
        decimal_value_u64(digits)
            .map(Msisdn)
            .ok_or(IdentError("number too large"))
    }

    /// Unique numeric key: the digits' value (no leading zero to lose).
    pub fn as_u128(self) -> u128 {
        u128::from(self.0)
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl FromStr for Msisdn {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Msisdn::parse(s)
    }
}

/// An International Mobile Subscriber Identity: 14 or 15 ASCII digits.
///
/// Leading zeros are meaningful (test networks use MCC 001), so the length
/// is kept alongside the value; otherwise "00101..." and "0101..." would
/// collide. Ordering is by length, then value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imsi {
    len: u8,
    value: u64,
}

impl Imsi {
    /// Parses exactly 14 or 15 ASCII digits.
    pub fn parse(s: &str) -> Result<Imsi, IdentError> {
        let Some(digits) = ascii_digits(s) else {
            return Err(IdentError("must contain only ASCII digits"));
        };
        let len = match digits.len() {
            14 => 14u8,
            15 => 15u8,
            _ => return Err(IdentError("must be 14 or 15 digits")),
        };
        let value = decimal_value_u64(digits).ok_or(IdentError("number too large"))?;
        Ok(Imsi { len, value })
    }

    /// Unique numeric key: the length in bits 64.. and the value below, so
    /// IMSIs differing only in leading zeros get different keys.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.len) << 64) | u128::from(self.value)
    }

    /// The same key in 64 bits, never 0: the length in bits 56..60 and the
    /// value (below 10^15 < 2^50) under it.
    pub fn key64(self) -> u64 {
        (u64::from(self.len) << 56) | self.value
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.value, width = usize::from(self.len))
    }
}

impl FromStr for Imsi {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Imsi::parse(s)
    }
}

/// An International Mobile Equipment Identity: 15 ASCII digits, the last
/// a Luhn check digit over the first 14 (3GPP TS 23.003 Annex B).
///
/// Fixed length, so the value alone (with zero padding on display) is
/// unique and round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imei(u64);

impl Imei {
    /// Parses exactly 15 ASCII digits with a valid Luhn check digit.
    pub fn parse(s: &str) -> Result<Imei, IdentError> {
        let Some(digits) = ascii_digits(s) else {
            return Err(IdentError("must contain only ASCII digits"));
        };
        if digits.len() != 15 {
            return Err(IdentError("must be 15 digits"));
        }
        if !luhn_valid(digits) {
            return Err(IdentError("bad Luhn check digit"));
        }
        decimal_value_u64(digits)
            .map(Imei)
            .ok_or(IdentError("number too large"))
    }

    /// Unique numeric key: the value (the length is fixed).
    pub fn as_u128(self) -> u128 {
        u128::from(self.0)
    }
}

impl fmt::Display for Imei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:015}", self.0)
    }
}

impl FromStr for Imei {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Imei::parse(s)
    }
}

/// A SIM card serial number (ITU-T E.118): 19 or 20 ASCII digits starting
/// with the telecom industry prefix "89", the last a Luhn check digit.
///
/// A 20-digit value does not fit in `u64`, so it is held in a `u128`.
/// Because it always starts with '8', the value alone determines the length
/// (19-digit values are below 10^19, 20-digit ones at least 8.9 * 10^19), so
/// no separate length field is needed to round-trip exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(u128);

impl Iccid {
    /// Parses 19 or 20 ASCII digits starting "89" with a valid Luhn digit.
    pub fn parse(s: &str) -> Result<Iccid, IdentError> {
        let Some(digits) = ascii_digits(s) else {
            return Err(IdentError("must contain only ASCII digits"));
        };
        if !(19..=20).contains(&digits.len()) {
            return Err(IdentError("must be 19 or 20 digits"));
        }
        if !digits.starts_with(b"89") {
            return Err(IdentError("must start with 89"));
        }
        if !luhn_valid(digits) {
            return Err(IdentError("bad Luhn check digit"));
        }
        decimal_value(digits)
            .map(Iccid)
            .ok_or(IdentError("number too large"))
    }

    /// Unique numeric key: the value (no leading zero, see the type docs).
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Iccid {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Iccid::parse(s)
    }
}

/// An eUICC identifier (GSMA SGP.02/SGP.22): 32 ASCII digits whose value
/// mod 97 is 1 (ISO/IEC 7064 MOD 97-10, as in IBAN).
///
/// 10^32 < 2^128, so the whole identifier fits in one `u128`; the length is
/// fixed, so zero-padded display round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid(u128);

impl Eid {
    /// Parses exactly 32 ASCII digits whose value mod 97 equals 1.
    pub fn parse(s: &str) -> Result<Eid, IdentError> {
        let Some(digits) = ascii_digits(s) else {
            return Err(IdentError("must contain only ASCII digits"));
        };
        if digits.len() != 32 {
            return Err(IdentError("must be 32 digits"));
        }
        let value = decimal_value(digits).ok_or(IdentError("number too large"))?;
        if value % 97 != 1 {
            return Err(IdentError("bad MOD 97-10 check digits"));
        }
        Ok(Eid(value))
    }

    /// Unique numeric key: the value (the length is fixed).
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032}", self.0)
    }
}

impl FromStr for Eid {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Eid::parse(s)
    }
}

/// An opaque identifier (account id, session id, operator reference):
/// 1 to [`TOKEN_CHARS_MAX`] characters from `A-Za-z0-9_.:-`.
///
/// The alphabet excludes whitespace, separators used in logs and paths, and
/// all non-ASCII, so a token can be logged, used as a map key or embedded in
/// a path segment without escaping, and has exactly one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(Box<str>);

impl Token {
    /// Parses 1 to 64 characters from `A-Za-z0-9_.:-`.
    pub fn parse(s: &str) -> Result<Token, IdentError> {
        if s.is_empty() {
            return Err(IdentError("must not be empty"));
        }
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        // Checked on bytes: every byte of a non-ASCII char is >= 0x80 and is
        // rejected, so for accepted input bytes and chars coincide. Only the
        // first 65 bytes are scanned, so a huge input costs no more than a
        // just-too-long one; past that it is rejected for its length.
        let b = s.as_bytes();
        if !b.iter().take(TOKEN_CHARS_MAX + 1).all(allowed) {
            return Err(IdentError("may contain only A-Z a-z 0-9 _ . : -"));
        }
        if b.len() > TOKEN_CHARS_MAX {
            return Err(IdentError("must be at most 64 characters"));
        }
        Ok(Token(s.into()))
    }

    /// The token's text, exactly as parsed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Token {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Token::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Inputs every numeric parser must reject, whatever its length rules.
    fn junk_variants(valid: &str) -> Vec<String> {
        let mut v = vec![
            String::new(),
            "+".to_string(),
            format!("{valid}\n"),
            format!("{valid}\r\n"),
            format!(" {valid}"),
            format!("{valid} "),
            format!("\t{valid}"),
            format!("-{valid}"),
            format!("{valid}\0"),
        ];
        // A letter in the middle, same length.
        let mut chars: Vec<char> = valid.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = 'a';
        v.push(chars.iter().collect());
        // A space in the middle, same length.
        chars[mid] = ' ';
        v.push(chars.iter().collect());
        // Arabic-Indic digit five and fullwidth digit five in the middle.
        chars[mid] = '\u{0665}';
        v.push(chars.iter().collect());
        chars[mid] = '\u{FF15}';
        v.push(chars.iter().collect());
        v
    }

    /// Replaces the last digit with `d`.
    fn with_last(s: &str, d: char) -> String {
        let mut t = s.to_string();
        t.pop();
        t.push(d);
        t
    }

    /// Computes a Luhn check digit for `payload`, for building test vectors.
    fn luhn_digit(payload: &str) -> char {
        for d in '0'..='9' {
            if luhn_valid(format!("{payload}{d}").as_bytes()) {
                return d;
            }
        }
        panic!("no Luhn digit for {payload}");
    }

    // ----- Luhn -----

    #[test]
    fn luhn_published_vector() {
        // 3GPP TS 23.003 Annex B example.
        assert_eq!(luhn_digit("26053179311383"), '7');
        assert!(luhn_valid(b"260531793113837"));
        assert!(!luhn_valid(b"260531793113838"));
        // Classic Luhn vector.
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
    }

    #[test]
    fn luhn_rejects_non_digits_and_empty() {
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"2605317931138a7"));
        assert!(!luhn_valid(b" 260531793113837"));
        assert!(luhn_valid(b"0"));
    }

    #[test]
    fn luhn_exactly_one_check_digit_fits() {
        for payload in ["26053179311383", "8944500102198304826", "0000", "1"] {
            let ok: Vec<char> = ('0'..='9')
                .filter(|d| luhn_valid(format!("{payload}{d}").as_bytes()))
                .collect();
            assert_eq!(ok.len(), 1, "{payload}");
        }
    }

    // ----- MSISDN -----

    #[test]
    fn msisdn_valid_and_round_trip() {
        for s in [
            "+12345",           // 5 digits: shortest
            "+447700900123",    // UK
            "+123456789012345", // 15 digits: longest
            "+999999999999999",
            "+10000",
        ] {
            let m = Msisdn::parse(s).unwrap();
            assert_eq!(m.to_string(), s);
            assert_eq!(s.parse::<Msisdn>(), Ok(m));
        }
        assert_eq!(
            Msisdn::parse("+447700900123").unwrap().as_u128(),
            447_700_900_123
        );
    }

    #[test]
    fn msisdn_invalid() {
        for s in [
            "",
            "+",
            "+1234",             // 4 digits
            "+1234567890123456", // 16 digits
            "+01234567",         // leading zero
            "+0",
            "447700900123", // no plus
            "++447700900123",
            "+44 7700 900123",
            "+44-7700900123",
            "+4477009001x3",
            "+447700900123\n",
            " +447700900123",
            "+447700900123 ",
            "+\u{0664}47700900123",
            "+\u{FF14}47700900123",
            "-447700900123",
        ] {
            assert!(Msisdn::parse(s).is_err(), "accepted {s:?}");
        }
        for s in junk_variants("+447700900123") {
            assert!(Msisdn::parse(&s).is_err(), "accepted {s:?}");
        }
    }

    #[test]
    fn msisdn_error_reasons() {
        assert_eq!(
            Msisdn::parse("+"),
            Err(IdentError("must have 5 to 15 digits after '+'"))
        );
        assert_eq!(
            Msisdn::parse("+0123456"),
            Err(IdentError("first digit after '+' must not be 0"))
        );
        assert_eq!(
            Msisdn::parse("123456"),
            Err(IdentError("must start with '+'"))
        );
    }

    // ----- IMSI -----

    #[test]
    fn imsi_valid_and_round_trip() {
        for s in [
            "001010123456789", // test network, leading zeros
            "310150123456789",
            "31015012345678", // 14 digits
            "00101012345678",
            "000000000000000",
            "00000000000000",
            "999999999999999",
        ] {
            let i = Imsi::parse(s).unwrap();
            assert_eq!(i.to_string(), s);
        }
    }

    #[test]
    fn imsi_leading_zeros_distinct() {
        let a = Imsi::parse("000000000000001").unwrap();
        let b = Imsi::parse("00000000000001").unwrap();
        assert_ne!(a, b);
        assert_ne!(a.as_u128(), b.as_u128());
        assert_eq!(a.to_string(), "000000000000001");
        assert_eq!(b.to_string(), "00000000000001");
    }

    #[test]
    fn imsi_invalid() {
        for s in [
            "",
            "+",
            "0010101234567",    // 13
            "0010101234567890", // 16
            "00101012345678a",
            "001010123456789\n",
            " 001010123456789",
            "001010123456789 ",
            "+01010123456789",
        ] {
            assert!(Imsi::parse(s).is_err(), "accepted {s:?}");
        }
        for s in junk_variants("001010123456789") {
            assert!(Imsi::parse(&s).is_err(), "accepted {s:?}");
        }
        assert_eq!(
            Imsi::parse("0010101234567"),
            Err(IdentError("must be 14 or 15 digits"))
        );
    }

    // ----- IMEI -----

    #[test]
    fn imei_published_vector() {
        let i = Imei::parse("260531793113837").unwrap();
        assert_eq!(i.to_string(), "260531793113837");
        assert_eq!(i.as_u128(), 260_531_793_113_837);
        assert_eq!(
            Imei::parse("260531793113838"),
            Err(IdentError("bad Luhn check digit"))
        );
    }

    #[test]
    fn imei_leading_zeros_round_trip() {
        let payload = "00000012345678";
        let s = format!("{payload}{}", luhn_digit(payload));
        assert_eq!(Imei::parse(&s).unwrap().to_string(), s);
        assert_eq!(
            Imei::parse("000000000000000").unwrap().to_string(),
            "000000000000000"
        );
    }

    #[test]
    fn imei_invalid() {
        let valid = "260531793113837";
        for d in "012345689".chars() {
            assert!(
                Imei::parse(&with_last(valid, d)).is_err(),
                "check digit {d}"
            );
        }
        for s in [
            "",
            "+",
            "26053179311383",   // 14 digits (short)
            "2605317931138370", // 16 digits (long)
            "260531793113837\n",
            " 260531793113837",
            "260531793113837 ",
            "2605317931a3837",
            "26-053179311383",
        ] {
            assert!(Imei::parse(s).is_err(), "accepted {s:?}");
        }
        for s in junk_variants(valid) {
            assert!(Imei::parse(&s).is_err(), "accepted {s:?}");
        }
        assert_eq!(
            Imei::parse("26053179311383"),
            Err(IdentError("must be 15 digits"))
        );
    }

    // ----- ICCID -----

    fn iccid_19() -> String {
        let p = "894450010219830482";
        format!("{p}{}", luhn_digit(p))
    }

    fn iccid_20() -> String {
        let p = "8901260123456789012";
        format!("{p}{}", luhn_digit(p))
    }

    #[test]
    fn iccid_valid_and_round_trip() {
        // A published-style ICCID with a known Luhn digit.
        assert!(Iccid::parse("89014103211118510720").is_ok());
        for s in [
            iccid_19(),
            iccid_20(),
            "89014103211118510720".to_string(),
            {
                let p = "890000000000000000";
                format!("{p}{}", luhn_digit(p))
            },
            {
                let p = "8900000000000000000";
                format!("{p}{}", luhn_digit(p))
            },
            {
                let p = "8999999999999999999";
                format!("{p}{}", luhn_digit(p))
            },
        ] {
            let i = Iccid::parse(&s).unwrap();
            assert_eq!(i.to_string(), s);
        }
    }

    #[test]
    fn iccid_lengths_give_distinct_keys() {
        let a = Iccid::parse(&iccid_19()).unwrap();
        let b = Iccid::parse(&iccid_20()).unwrap();
        assert_ne!(a.as_u128(), b.as_u128());
        // 19-digit values are all below every 20-digit "89..." value.
        assert!(a.as_u128() < 10u128.pow(19));
        assert!(b.as_u128() >= 89 * 10u128.pow(18));
    }

    #[test]
    fn iccid_invalid() {
        let v19 = iccid_19();
        let v20 = iccid_20();
        let last = v20.chars().last().unwrap();
        for d in ('0'..='9').filter(|&d| d != last) {
            assert_eq!(
                Iccid::parse(&with_last(&v20, d)),
                Err(IdentError("bad Luhn check digit"))
            );
        }
        // Not starting with 89 (with a valid Luhn digit, so only the prefix is wrong).
        let p = "881260123456789012";
        let not89 = format!("{p}{}", luhn_digit(p));
        assert_eq!(Iccid::parse(&not89), Err(IdentError("must start with 89")));
        let p = "0891260123456789012";
        let zero89 = format!("{p}{}", luhn_digit(p));
        assert_eq!(Iccid::parse(&zero89), Err(IdentError("must start with 89")));
        // 18 and 21 digits with valid Luhn digits.
        let p = "89126012345678901";
        let short = format!("{p}{}", luhn_digit(p));
        assert_eq!(
            Iccid::parse(&short),
            Err(IdentError("must be 19 or 20 digits"))
        );
        let p = "89126012345678901234";
        let long = format!("{p}{}", luhn_digit(p));
        assert_eq!(
            Iccid::parse(&long),
            Err(IdentError("must be 19 or 20 digits"))
        );
        for s in ["", "+", "89", "8901260123456789012F"] {
            assert!(Iccid::parse(s).is_err(), "accepted {s:?}");
        }
        for v in [&v19, &v20] {
            for s in junk_variants(v) {
                assert!(Iccid::parse(&s).is_err(), "accepted {s:?}");
            }
        }
    }

    // ----- EID -----

    const EID: &str = "89049032123451234512345678901235";

    #[test]
    fn eid_valid_and_round_trip() {
        let e = Eid::parse(EID).unwrap();
        assert_eq!(e.to_string(), EID);
        assert_eq!(e.as_u128() % 97, 1);
        // Leading zeros: smallest 32-digit string with value mod 97 == 1.
        let z = "00000000000000000000000000000001";
        assert_eq!(Eid::parse(z).unwrap().to_string(), z);
        // Largest: 10^32 - 1 minus a correction so that mod 97 == 1.
        let max = 10u128.pow(32) - 1;
        let top = max - ((max % 97 + 97 - 1) % 97);
        let s = top.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(Eid::parse(&s).unwrap().to_string(), s);
    }

    #[test]
    fn eid_invalid() {
        // Every other final digit breaks mod 97 == 1 (97 > 10).
        for d in "012346789".chars() {
            assert_eq!(
                Eid::parse(&with_last(EID, d)),
                Err(IdentError("bad MOD 97-10 check digits"))
            );
        }
        for s in [
            "",
            "+",
            "8904903212345123451234567890123",           // 31
            "890490321234512345123456789012350",         // 33
            "99999999999999999999999999999999999999999", // would overflow u128
            "89049032123451234512345678901235\n",
            " 89049032123451234512345678901235",
            "89049032123451234512345678901235 ",
        ] {
            assert!(Eid::parse(s).is_err(), "accepted {s:?}");
        }
        for s in junk_variants(EID) {
            assert!(Eid::parse(&s).is_err(), "accepted {s:?}");
        }
    }

    // ----- Token -----

    #[test]
    fn token_valid() {
        let max = "a".repeat(TOKEN_CHARS_MAX);
        for s in [
            "a",
            "Z",
            "0",
            "acct_123",
            "ses-2024.01:ab",
            "ABCxyz0123456789_.:-",
            ".",
            "-",
            max.as_str(),
        ] {
            let t = Token::parse(s).unwrap();
            assert_eq!(t.as_str(), s);
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn token_invalid() {
        let long = "a".repeat(TOKEN_CHARS_MAX + 1);
        for s in [
            "",
            long.as_str(),
            "a b",
            " a",
            "a ",
            "a/b",
            "a\\b",
            "caf\u{e9}",
            "\u{e9}",
            "a\n",
            "a\0",
            "a+b",
            "a@b",
            "\u{FF21}", // fullwidth A
        ] {
            assert!(Token::parse(s).is_err(), "accepted {s:?}");
        }
        assert_eq!(Token::parse(""), Err(IdentError("must not be empty")));
        assert_eq!(
            Token::parse(&long),
            Err(IdentError("must be at most 64 characters"))
        );
        // 32 two-byte chars: 64 bytes, rejected for the alphabet, not length.
        let e = "\u{e9}".repeat(32);
        assert_eq!(
            Token::parse(&e),
            Err(IdentError("may contain only A-Z a-z 0-9 _ . : -"))
        );
    }

    // ----- Keys and properties -----

    #[test]
    fn keys_unique_over_samples() {
        let mut seen = HashSet::new();
        for n in 0..2000u64 {
            let s = format!("{:015}", n * 7_919);
            assert!(seen.insert(Imsi::parse(&s).unwrap().as_u128()));
            let s14 = format!("{:014}", n * 7_919);
            assert!(seen.insert(Imsi::parse(&s14).unwrap().as_u128()));
        }
    }

    #[test]
    fn parsers_never_panic_on_random_input() {
        // SplitMix64, so no extra crates and a reproducible sequence.
        let mut state: u64 = 0x5EED_1DE7;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let alphabet: Vec<char> = "0123456789+89 -_.:/aZ\n\u{e9}\u{0665}".chars().collect();
        for _ in 0..50_000 {
            let len = (next() % 36) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let results = [
                Msisdn::parse(&s).map(|v| v.to_string()),
                Imsi::parse(&s).map(|v| v.to_string()),
                Imei::parse(&s).map(|v| v.to_string()),
                Iccid::parse(&s).map(|v| v.to_string()),
                Eid::parse(&s).map(|v| v.to_string()),
                Token::parse(&s).map(|v| v.to_string()),
            ];
            for back in results.into_iter().flatten() {
                assert_eq!(back, s, "round trip");
            }
            let _ = luhn_valid(s.as_bytes());
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(
            IdentError("must be 15 digits").to_string(),
            "must be 15 digits"
        );
    }
}
