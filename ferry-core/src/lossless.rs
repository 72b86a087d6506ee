//! The lossless string rule: how a JavaScript string travels to PostgreSQL and back unchanged.
//!
//! A JavaScript string is a sequence of UTF-16 code units and may hold things the rest of the
//! chain cannot: a *lone surrogate* (a Rust `String` silently turns it into U+FFFD, `jsonb`
//! rejects it) and U+0000 (PostgreSQL `text` and `jsonb` reject it). Ferry carries every string
//! in an *escaped form*, a valid Unicode string without NUL, defined by one rule:
//!
//! > Each code unit that is U+0000, a lone surrogate (U+D800–U+DFFF not part of a valid pair)
//! > or U+FFFF is written as U+FFFF followed by exactly four uppercase hexadecimal digits of
//! > that code unit. Every other code unit is written as itself.
//!
//! U+FFFF is a Unicode *noncharacter*, so it almost never appears in real data; escaping it
//! too makes the rule unambiguous and reversible. A string without NUL, lone surrogates and
//! U+FFFF (nearly every string) is its own escaped form, so the common path copies nothing.
//!
//! Examples: `"a\0b"` becomes `"a\u{FFFF}0000b"`; a lone `\uD800` becomes `"\u{FFFF}D800"`;
//! `"\u{FFFF}"` becomes `"\u{FFFF}FFFF"`.
//!
//! The escaped form is what PostgreSQL stores, what the wire format and the backup carry, and
//! what [`LosslessString::to_utf16`] turns back into the exact original code units.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The escape character of the lossless rule (a Unicode noncharacter).
pub const ESCAPE: char = '\u{FFFF}';

/// A string in Ferry's escaped form: valid Unicode, no NUL, and exactly reversible to the
/// UTF-16 code units it came from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct LosslessString(String);

impl<'de> Deserialize<'de> for LosslessString {
    /// Deserialises an escaped-form string, refusing malformed escapes and raw NUL: input from
    /// the network is checked at the edge like everything else.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_escaped(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl LosslessString {
    /// Escapes a Rust string (which cannot hold lone surrogates) into the escaped form:
    /// only NUL and U+FFFF need escaping.
    pub fn from_unicode(text: &str) -> Self {
        Self(escape_unicode(text).into_owned())
    }

    /// Escapes a sequence of UTF-16 code units, lone surrogates included.
    pub fn from_utf16(units: &[u16]) -> Self {
        let mut out = String::with_capacity(units.len());
        for decoded in char::decode_utf16(units.iter().copied()) {
            match decoded {
                Ok(c) => push_unicode_char(&mut out, c),
                Err(lone) => push_escaped_unit(&mut out, lone.unpaired_surrogate()),
            }
        }
        Self(out)
    }

    /// Takes a string that is already in escaped form, checking that it is well formed.
    pub fn from_escaped(escaped: String) -> Result<Self, LosslessError> {
        check_escaped(&escaped)?;
        Ok(Self(escaped))
    }

    /// The escaped form, as stored in PostgreSQL and carried on the wire.
    pub fn as_escaped(&self) -> &str {
        &self.0
    }

    /// Consumes the value and returns its escaped form.
    pub fn into_escaped(self) -> String {
        self.0
    }

    /// Whether any code unit needed escaping (the original held NUL, a lone surrogate or U+FFFF).
    pub fn has_escapes(&self) -> bool {
        self.0.contains(ESCAPE)
    }

    /// The exact UTF-16 code units this value was made from.
    pub fn to_utf16(&self) -> Vec<u16> {
        let mut out = Vec::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(pos) = rest.find(ESCAPE) {
            out.extend(rest[..pos].encode_utf16());
            let hex = &rest[pos + ESCAPE.len_utf8()..pos + ESCAPE.len_utf8() + 4];
            // `check_escaped` guarantees four hex digits after every escape.
            out.push(u16::from_str_radix(hex, 16).unwrap_or(0xFFFD));
            rest = &rest[pos + ESCAPE.len_utf8() + 4..];
        }
        out.extend(rest.encode_utf16());
        out
    }

    /// The original text as a Rust string when it holds no lone surrogate; `None` otherwise.
    pub fn to_unicode(&self) -> Option<String> {
        String::from_utf16(&self.to_utf16()).ok()
    }

    /// Length of the original text in UTF-16 code units (what JavaScript's `length` says).
    pub fn utf16_len(&self) -> usize {
        let escapes = self.0.matches(ESCAPE).count();
        // Each escape is one code unit written as 1 + 4 UTF-16 units of escaped text.
        self.0.encode_utf16().count() - escapes * 4
    }
}

impl fmt::Debug for LosslessString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LosslessString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string claimed to be in escaped form is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LosslessError {
    /// U+FFFF not followed by four uppercase hexadecimal digits.
    #[error("malformed lossless escape at byte {at}: U+FFFF must be followed by four hex digits")]
    MalformedEscape {
        /// Byte offset of the escape character.
        at: usize,
    },
    /// A raw NUL, which the escaped form never holds.
    #[error("raw NUL at byte {at}: the escaped form writes it as U+FFFF 0000")]
    RawNul {
        /// Byte offset of the NUL.
        at: usize,
    },
}

/// Escapes NUL and U+FFFF in a Rust string; borrows when nothing needs escaping.
pub fn escape_unicode(text: &str) -> Cow<'_, str> {
    if !needs_escape(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_unicode_char(&mut out, c);
    }
    Cow::Owned(out)
}

/// Whether a Rust string holds NUL or U+FFFF (the only code units a Rust string can hold that
/// the escaped form writes differently).
pub fn needs_escape(text: &str) -> bool {
    // U+FFFF is EF BF BF in UTF-8; 0xBF only appears in that position for a handful of
    // characters, so searching for the three bytes is exact.
    memchr::memchr(0, text.as_bytes()).is_some()
        || memchr::memmem::find(text.as_bytes(), "\u{FFFF}".as_bytes()).is_some()
}

fn push_unicode_char(out: &mut String, c: char) {
    if c == '\0' || c == ESCAPE {
        push_escaped_unit(out, c as u16);
    } else {
        out.push(c);
    }
}

fn push_escaped_unit(out: &mut String, unit: u16) {
    use fmt::Write as _;
    out.push(ESCAPE);
    // Writing to a String cannot fail.
    let _ = write!(out, "{unit:04X}");
}

fn check_escaped(text: &str) -> Result<(), LosslessError> {
    if let Some(at) = memchr::memchr(0, text.as_bytes()) {
        return Err(LosslessError::RawNul { at });
    }
    for (at, _) in text.match_indices(ESCAPE) {
        let hex = text.get(at + ESCAPE.len_utf8()..at + ESCAPE.len_utf8() + 4);
        let ok = hex.is_some_and(|h| {
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        });
        if !ok {
            return Err(LosslessError::MalformedEscape { at });
        }
    }
    Ok(())
}

/// Rewrites the JSON escapes that denote code units the escaped form must escape (`\u0000`,
/// `\uFFFF` and lone surrogate escapes such as `\uD800`) so that a standard JSON parser yields
/// strings already in escaped form. The input must itself be in escaped form.
///
/// A legacy app that stored `JSON.stringify("\uD800")` holds the six characters `"\ud800"`;
/// `JSON.parse` gives it back a lone surrogate, but `serde_json` refuses it. After this rewrite
/// the parser sees `\uFFFFD800`, which decodes to the escaped form of that lone surrogate.
/// Borrows when the text holds no such escape (the common case: no `\u` at all).
pub fn prepare_json(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if memchr::memmem::find(bytes, b"\\u").is_none() {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\\', &bytes[i..]) {
        let at = i + off;
        let next = bytes.get(at + 1).copied();
        if next != Some(b'u') {
            // `\\`, `\"`, `\n`, …: skip the escaped character so `\\u` is not read as `\u`.
            i = at + 2;
            if i >= bytes.len() {
                break;
            }
            continue;
        }
        let Some(unit) = hex4(bytes, at + 2) else {
            // Malformed escape: leave it for the JSON parser to report.
            i = at + 2;
            continue;
        };
        let mut end = at + 6;
        // A surrogate pair may be half escape text, half a lone surrogate already escaped by
        // the lossless rule (fragments written by two engines): join the halves into the
        // character they make, or the escaped form would not be canonical.
        let joined = match unit {
            0xD800..=0xDBFF => escaped_unit_at(bytes, end)
                .filter(|low| (0xDC00..=0xDFFF).contains(low))
                .map(|low| (at, end + ESCAPED_UNIT_LEN, pair(unit, low))),
            0xDC00..=0xDFFF if at >= copied + ESCAPED_UNIT_LEN => {
                escaped_unit_at(bytes, at - ESCAPED_UNIT_LEN)
                    .filter(|high| (0xD800..=0xDBFF).contains(high))
                    .map(|high| (at - ESCAPED_UNIT_LEN, end, pair(high, unit)))
            }
            _ => None,
        };
        if let Some((from, to, c)) = joined {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            buf.push_str(&text[copied..from]);
            buf.push(c);
            copied = to;
            i = to;
            continue;
        }
        let rewrite = match unit {
            0 | 0xFFFF => true,
            0xD800..=0xDBFF => {
                // A high surrogate is fine when a low surrogate escape follows.
                let paired = bytes.get(end) == Some(&b'\\')
                    && bytes.get(end + 1) == Some(&b'u')
                    && hex4(bytes, end + 2).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                if paired {
                    end += 6;
                }
                !paired
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if rewrite {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            buf.push_str(&text[copied..at]);
            buf.push_str("\\uFFFF");
            use fmt::Write as _;
            let _ = write!(buf, "{unit:04X}");
            copied = end;
        }
        i = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Bytes of one escaped code unit: U+FFFF (three bytes in UTF-8) and four hex digits.
const ESCAPED_UNIT_LEN: usize = 7;

/// The code unit escaped at `at` (U+FFFF and four uppercase hex digits), if there is one.
fn escaped_unit_at(bytes: &[u8], at: usize) -> Option<u16> {
    (bytes.get(at..at + 3)? == "\u{FFFF}".as_bytes()).then_some(())?;
    let digits = bytes.get(at + 3..at + ESCAPED_UNIT_LEN)?;
    if !digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
    {
        return None;
    }
    hex4(bytes, at + 3)
}

fn pair(high: u16, low: u16) -> char {
    let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(text, 16).ok()
}

/// In an OpenAPI document a [`LosslessString`] is a string: its escaped form.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for LosslessString {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A JavaScript string in Ferry's lossless escaped form: NUL, lone surrogates and U+FFFF written as U+FFFF and four hex digits",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for LosslessString {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_its_own_escaped_form() {
        let s = LosslessString::from_unicode("héllo 🌍");
        assert_eq!(s.as_escaped(), "héllo 🌍");
        assert!(!s.has_escapes());
    }

    #[test]
    fn nul_ffff_and_lone_surrogates_are_escaped() {
        let units = [0x61, 0x0000, 0xD800, 0xFFFF, 0xDC00, 0x62];
        let s = LosslessString::from_utf16(&units);
        assert_eq!(
            s.as_escaped(),
            "a\u{FFFF}0000\u{FFFF}D800\u{FFFF}FFFF\u{FFFF}DC00b"
        );
        assert_eq!(s.to_utf16(), units);
        assert_eq!(s.utf16_len(), units.len());
        assert_eq!(s.to_unicode(), None, "a lone surrogate has no Rust string");
    }

    #[test]
    fn malformed_escaped_text_is_refused() {
        // Each case says why it is not in escaped form.
        let cases = [
            ("\u{FFFF}", "escape without digits"),
            ("\u{FFFF}12", "escape with two digits"),
            (
                "\u{FFFF}d800",
                "lowercase digits are not the canonical form",
            ),
            ("a\0b", "raw NUL"),
        ];
        for (text, why) in cases {
            assert!(
                LosslessString::from_escaped(text.to_owned()).is_err(),
                "{why}: {text:?} was accepted"
            );
        }
    }

    #[test]
    fn json_lone_surrogate_escapes_become_escaped_form() {
        let raw = r#"{"t":"x\ud800y","ok":"\ud83d\ude00","nul":"\u0000","bs":"\\ud800"}"#;
        let prepared = prepare_json(raw);
        let v: serde_json::Value = serde_json::from_str(&prepared).expect("parses");
        assert_eq!(v["t"], "x\u{FFFF}D800y");
        assert_eq!(v["ok"], "😀");
        assert_eq!(v["nul"], "\u{FFFF}0000");
        assert_eq!(v["bs"], "\\ud800", "an escaped backslash is not an escape");
    }

    #[test]
    fn json_without_unicode_escapes_is_borrowed() {
        assert!(matches!(prepare_json(r#"{"a":"b\n"}"#), Cow::Borrowed(_)));
    }

    proptest! {
        #[test]
        fn any_utf16_round_trips(units in proptest::collection::vec(any::<u16>(), 0..64)) {
            let s = LosslessString::from_utf16(&units);
            prop_assert_eq!(s.to_utf16(), units.clone());
            prop_assert!(LosslessString::from_escaped(s.as_escaped().to_owned()).is_ok());
            prop_assert_eq!(s.utf16_len(), units.len());
        }

        #[test]
        fn any_rust_string_round_trips(text in ".*") {
            let s = LosslessString::from_unicode(&text);
            prop_assert_eq!(s.to_unicode(), Some(text));
        }

        #[test]
        fn json_string_of_any_utf16_parses_to_the_escaped_form(units in proptest::collection::vec(any::<u16>(), 0..32)) {
            // What JSON.stringify writes for a string: every unit as a \uXXXX escape.
            let mut json = String::from("\"");
            for u in &units { json.push_str(&format!("\\u{u:04x}")); }
            json.push('"');
            let parsed: String = serde_json::from_str(&prepare_json(&json)).expect("parses");
            prop_assert_eq!(parsed, LosslessString::from_utf16(&units).into_escaped());
        }
    }
}
