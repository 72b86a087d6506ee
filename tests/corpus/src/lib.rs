//! Reader of the hostile localStorage corpus (`tests/corpus/hostile.json`), for
//! `ferry-core/tests/hostile_corpus.rs` and `server/tests/api/hostile.rs`: a dev-only crate,
//! a dev-dependency of both.
//!
//! Deliberately independent of the code under test: the corpus is read with a small JSON parser
//! over UTF-16 code units (so `\ud800` escapes are lone surrogates, exactly as `JSON.parse`
//! gives them), and the lossless rule is re-implemented here ([`escape_units`], [`unescape`])
//! so that a bug in `ferry_core::lossless` cannot hide itself by being used to build its own
//! expected values.
//!
//! Test support: a corpus file that cannot be read, or a case that breaks its own format,
//! panics with the case's name, which fails the test that reads it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a malformed corpus fails the calling test by panicking"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ferry_core::pipeline::{Cell, Code};
use ferry_core::spec::{ColumnType, Field};
use serde_json::Value;

/// A JSON value whose strings are UTF-16 code units (lone surrogates and NUL included).
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string.
    Str(Vec<u16>),
    /// An array.
    Arr(Vec<J>),
    /// An object, members in order, duplicates kept.
    Obj(Vec<(Vec<u16>, J)>),
}

impl J {
    /// The member `name` (the last one, like `JSON.parse`).
    pub fn get(&self, name: &str) -> Option<&J> {
        let name: Vec<u16> = name.encode_utf16().collect();
        match self {
            J::Obj(members) => members
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string's code units.
    pub fn units(&self) -> Option<&[u16]> {
        match self {
            J::Str(u) => Some(u),
            _ => None,
        }
    }

    /// The string as Rust text (lossy), for names and messages.
    pub fn text(&self) -> Option<String> {
        self.units().map(String::from_utf16_lossy)
    }
}

/// Parses JSON text given as UTF-16 code units. `None` when it is not JSON or nests deeper
/// than `max_depth`. Lenient on one point only: raw control characters inside strings.
pub fn parse(units: &[u16], max_depth: usize) -> Option<J> {
    let mut p = Parser {
        u: units,
        i: 0,
        max_depth,
    };
    let v = p.value(0)?;
    p.ws();
    (p.i == units.len()).then_some(v)
}

struct Parser<'a> {
    u: &'a [u16],
    i: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u16> {
        self.u.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(0x20 | 0x09 | 0x0A | 0x0D)) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &str, v: J) -> Option<J> {
        for w in word.encode_utf16() {
            if self.peek()? != w {
                return None;
            }
            self.i += 1;
        }
        Some(v)
    }

    fn value(&mut self, depth: usize) -> Option<J> {
        if depth > self.max_depth {
            return None;
        }
        self.ws();
        match self.peek()? {
            0x6E => self.lit("null", J::Null),
            0x74 => self.lit("true", J::Bool(true)),
            0x66 => self.lit("false", J::Bool(false)),
            0x22 => self.string().map(J::Str),
            0x5B => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek()? == 0x5D {
                    self.i += 1;
                    return Some(J::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek()? {
                        0x2C => self.i += 1,
                        0x5D => {
                            self.i += 1;
                            return Some(J::Arr(items));
                        }
                        _ => return None,
                    }
                }
            }
            0x7B => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek()? == 0x7D {
                    self.i += 1;
                    return Some(J::Obj(members));
                }
                loop {
                    self.ws();
                    if self.peek()? != 0x22 {
                        return None;
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.peek()? != 0x3A {
                        return None;
                    }
                    self.i += 1;
                    members.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.peek()? {
                        0x2C => self.i += 1,
                        0x7D => {
                            self.i += 1;
                            return Some(J::Obj(members));
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Option<J> {
        let start = self.i;
        let digit = |c: Option<u16>| c.is_some_and(|c| (0x30..=0x39).contains(&c));
        if self.peek() == Some(0x2D) {
            self.i += 1;
        }
        match self.peek()? {
            0x30 => self.i += 1,
            0x31..=0x39 => {
                while digit(self.peek()) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(0x2E) {
            self.i += 1;
            if !digit(self.peek()) {
                return None;
            }
            while digit(self.peek()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(0x65 | 0x45)) {
            self.i += 1;
            if matches!(self.peek(), Some(0x2B | 0x2D)) {
                self.i += 1;
            }
            if !digit(self.peek()) {
                return None;
            }
            while digit(self.peek()) {
                self.i += 1;
            }
        }
        Some(J::Num(String::from_utf16(&self.u[start..self.i]).ok()?))
    }

    fn string(&mut self) -> Option<Vec<u16>> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                0x22 => return Some(out),
                0x5C => {
                    let e = self.peek()?;
                    self.i += 1;
                    out.push(match e {
                        0x22 => 0x22,
                        0x5C => 0x5C,
                        0x2F => 0x2F,
                        0x62 => 0x08,
                        0x66 => 0x0C,
                        0x6E => 0x0A,
                        0x72 => 0x0D,
                        0x74 => 0x09,
                        0x75 => {
                            let hex = String::from_utf16(self.u.get(self.i..self.i + 4)?).ok()?;
                            if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                                return None;
                            }
                            self.i += 4;
                            u16::from_str_radix(&hex, 16).ok()?
                        }
                        _ => return None,
                    });
                }
                c => out.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lossless rule, re-implemented from its definition in ferry-core/src/lossless.rs's docs.
// ---------------------------------------------------------------------------------------------

/// The escaped form of code units: NUL, U+FFFF and lone surrogates become U+FFFF and four
/// uppercase hex digits; everything else is itself.
pub fn escape_units(units: &[u16]) -> String {
    let plain = |c: &u16| *c != 0 && *c != 0xFFFF && !(0xD800..0xE000).contains(c);
    if units.iter().all(plain) {
        // Nothing to escape (and no surrogates at all): the text is itself.
        return String::from_utf16(units).unwrap();
    }
    let mut out = String::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        let c = units[i];
        if (0xD800..0xDC00).contains(&c)
            && units
                .get(i + 1)
                .is_some_and(|l| (0xDC00..0xE000).contains(l))
        {
            let code =
                0x10000 + ((u32::from(c) - 0xD800) << 10) + (u32::from(units[i + 1]) - 0xDC00);
            out.push(char::from_u32(code).unwrap());
            i += 2;
            continue;
        }
        if c == 0 || c == 0xFFFF || (0xD800..0xE000).contains(&c) {
            out.push('\u{FFFF}');
            write!(out, "{c:04X}").unwrap();
        } else {
            out.push(char::from_u32(u32::from(c)).unwrap());
        }
        i += 1;
    }
    out
}

/// The code units an escaped-form string stands for.
pub fn unescape(escaped: &str) -> Vec<u16> {
    if !escaped.contains('\u{FFFF}') {
        return escaped.encode_utf16().collect();
    }
    let mut out = Vec::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '\u{FFFF}' {
            let hex: String = chars.by_ref().take(4).collect();
            out.push(
                u16::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad escape {hex:?}")),
            );
        } else {
            let mut buf = [0u16; 2];
            out.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    out
}

/// A JSON value (escaped-form strings, as Ferry carries them) of a corpus value.
pub fn to_value(j: &J) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Num(t) => serde_json::from_str(t).unwrap_or_else(|e| panic!("number {t}: {e}")),
        J::Str(u) => Value::String(escape_units(u)),
        J::Arr(items) => Value::Array(items.iter().map(to_value).collect()),
        J::Obj(members) => {
            let mut map = serde_json::Map::new();
            for (k, v) in members {
                map.insert(escape_units(k), to_value(v));
            }
            Value::Object(map)
        }
    }
}

/// Whether two JSON values are the same data: object members compared as `JSON.parse` sees
/// them (order ignored, last duplicate wins), numbers by value (integers exactly when they fit
/// 128 bits on both sides, else as doubles, which is what JavaScript reads).
pub fn same_data(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Num(x), J::Num(y)) => match (x.parse::<i128>(), y.parse::<i128>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => x.parse::<f64>().ok() == y.parse::<f64>().ok(),
        },
        (J::Arr(x), J::Arr(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_data(a, b))
        }
        (J::Obj(x), J::Obj(y)) => {
            let x: BTreeMap<&Vec<u16>, &J> = x.iter().map(|(k, v)| (k, v)).collect();
            let y: BTreeMap<&Vec<u16>, &J> = y.iter().map(|(k, v)| (k, v)).collect();
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_data(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus.
// ---------------------------------------------------------------------------------------------

/// Where a record sits in its key's value.
#[derive(Debug, Clone, PartialEq)]
pub enum At {
    /// The whole value.
    Whole,
    /// An array index.
    Index(u32),
}

/// The expected outcome of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Migrated as it is.
    Valid,
    /// Migrated after these repairs.
    Repaired(Vec<Code>),
    /// Quarantined with these codes; one reason contains `reason`.
    Rejected {
        /// Rejection codes (as a set).
        codes: Vec<Code>,
        /// A substring of one reason.
        reason: String,
    },
    /// An identical copy of the record at `of` (same key).
    Duplicate(At),
    /// One of a group of records with one id: exactly one is kept, the others are rejected as
    /// duplicates.
    OneOf(String),
}

/// One record's expectation.
#[derive(Debug, Clone)]
pub struct RecordExpectation {
    /// Its localStorage key.
    pub key: Vec<u16>,
    /// Its place.
    pub at: At,
    /// What happens to it.
    pub outcome: Expected,
    /// Column values (for migrated records), by column name; generators expanded.
    pub fields: Vec<(String, J)>,
    /// The legacy id, when given.
    pub legacy_id: Option<Vec<u16>>,
}

/// One corpus case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Its category (one per item of the list).
    pub category: String,
    /// The localStorage pairs, generators not yet expanded (see [`Case::pairs`]).
    storage: Vec<(J, J)>,
    /// Expected records, in the order the pipeline reports them.
    expect: J,
    /// Keys left alone (no kind reads them).
    pub unknown: Vec<Vec<u16>>,
    /// Texts no message may contain.
    pub secrets: Vec<Vec<u16>>,
}

impl Case {
    /// The localStorage pairs as code units, generators expanded.
    pub fn pairs(&self) -> Vec<(Vec<u16>, Vec<u16>)> {
        self.storage
            .iter()
            .map(|(k, v)| (text_of(k), text_of(v)))
            .collect()
    }

    /// The expected records, generators expanded.
    pub fn expectations(&self) -> Vec<RecordExpectation> {
        let J::Arr(items) = &self.expect else {
            panic!("{}: expect is not a list", self.name)
        };
        items.iter().map(|e| expectation(&self.name, e)).collect()
    }
}

/// The whole corpus.
pub struct Corpus {
    /// `$migrated_at` of every case.
    pub migrated_at_ms: i64,
    /// The cases.
    pub cases: Vec<Case>,
}

/// Reads the corpus, `hostile.json` beside this crate's manifest.
pub fn load() -> Corpus {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let units: Vec<u16> = text.encode_utf16().collect();
    let doc = parse(&units, 400).unwrap_or_else(|| panic!("{} is not JSON", path.display()));
    assert_eq!(
        doc.get("format").and_then(J::text).as_deref(),
        Some("ferry-hostile-corpus/1")
    );
    let migrated_at_ms = match doc.get("migrated_at_ms") {
        Some(J::Num(n)) => n.parse().unwrap(),
        other => panic!("migrated_at_ms: {other:?}"),
    };
    let Some(J::Arr(cases)) = doc.get("cases") else {
        panic!("no cases")
    };
    let cases = cases
        .iter()
        .map(|c| {
            let name = c.get("name").and_then(J::text).expect("case name");
            let Some(J::Arr(storage)) = c.get("storage") else {
                panic!("{name}: storage")
            };
            let storage = storage
                .iter()
                .map(|pair| match pair {
                    J::Arr(kv) if kv.len() == 2 => (kv[0].clone(), kv[1].clone()),
                    other => panic!("{name}: storage pair {other:?}"),
                })
                .collect();
            let list = |field: &str| -> Vec<Vec<u16>> {
                match c.get(field) {
                    None => Vec::new(),
                    Some(J::Arr(items)) => items.iter().map(text_of).collect(),
                    Some(other) => panic!("{name}: {field}: {other:?}"),
                }
            };
            Case {
                category: c.get("category").and_then(J::text).expect("category"),
                storage,
                expect: c.get("expect").cloned().expect("expect"),
                unknown: list("unknown"),
                secrets: list("secrets"),
                name,
            }
        })
        .collect();
    Corpus {
        migrated_at_ms,
        cases,
    }
}

/// A text: a string, or a generator `{"$gen": [part, ...]}`, part = string or
/// `{"repeat": s, "times": n}`.
pub fn text_of(j: &J) -> Vec<u16> {
    match j {
        J::Str(u) => u.clone(),
        J::Obj(_) => {
            let Some(J::Arr(parts)) = j.get("$gen") else {
                panic!("not a text: {j:?}")
            };
            let mut out = Vec::new();
            for part in parts {
                match part {
                    J::Str(u) => out.extend_from_slice(u),
                    J::Obj(_) => {
                        let s = part.get("repeat").and_then(J::units).expect("repeat");
                        let Some(J::Num(n)) = part.get("times") else {
                            panic!("times")
                        };
                        let n: usize = n.parse().unwrap();
                        out.extend_from_slice(&s.repeat(n));
                    }
                    other => panic!("generator part {other:?}"),
                }
            }
            out
        }
        other => panic!("not a text: {other:?}"),
    }
}

/// Expands generators anywhere in a value.
pub fn expand(j: &J) -> J {
    match j {
        J::Obj(members) if members.len() == 1 && j.get("$gen").is_some() => J::Str(text_of(j)),
        J::Obj(members) => J::Obj(
            members
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect(),
        ),
        J::Arr(items) => J::Arr(items.iter().map(expand).collect()),
        other => other.clone(),
    }
}

fn at_of(j: Option<&J>) -> At {
    match j {
        None | Some(J::Null) => At::Whole,
        Some(J::Num(n)) => At::Index(n.parse().unwrap()),
        other => panic!("at: {other:?}"),
    }
}

/// A code from its snake_case name.
pub fn code(name: &str) -> Code {
    serde_json::from_value(Value::String(name.to_owned()))
        .unwrap_or_else(|e| panic!("code {name}: {e}"))
}

fn codes_of(j: Option<&J>) -> Vec<Code> {
    match j {
        None => Vec::new(),
        Some(J::Arr(items)) => items.iter().map(|c| code(&c.text().unwrap())).collect(),
        other => panic!("codes: {other:?}"),
    }
}

fn expectation(case: &str, e: &J) -> RecordExpectation {
    let outcome = match e.get("outcome").and_then(J::text).as_deref() {
        Some("valid") => Expected::Valid,
        Some("repaired") => Expected::Repaired(codes_of(e.get("codes"))),
        Some("rejected") => Expected::Rejected {
            codes: codes_of(e.get("codes")),
            reason: e.get("reason").and_then(J::text).expect("reason"),
        },
        Some("duplicate") => Expected::Duplicate(at_of(e.get("of"))),
        Some("one_of") => Expected::OneOf(e.get("group").and_then(J::text).expect("group")),
        other => panic!("{case}: outcome {other:?}"),
    };
    let fields = match e.get("fields") {
        None => Vec::new(),
        Some(J::Obj(members)) => members
            .iter()
            .map(|(k, v)| (String::from_utf16(k).unwrap(), expand(v)))
            .collect(),
        Some(other) => panic!("{case}: fields {other:?}"),
    };
    RecordExpectation {
        key: text_of(e.get("key").expect("key")),
        at: at_of(e.get("at")),
        outcome,
        fields,
        legacy_id: e.get("legacy_id").map(text_of),
    }
}

/// The cell a column must hold, from its expected corpus value.
pub fn expected_cell(field: &Field, j: &J, migrated_at_ms: i64) -> Cell {
    let ty = field.column_type();
    match (ty, j) {
        (ColumnType::Jsonb, j) => Cell::Json(to_value(j)),
        (_, J::Null) => Cell::Null,
        (ColumnType::Text | ColumnType::Uuid, J::Str(u)) => Cell::Text(escape_units(u)),
        (ColumnType::TextArray, J::Arr(items)) => Cell::TextArray(
            items
                .iter()
                .map(|i| escape_units(i.units().expect("tag text")))
                .collect(),
        ),
        (ColumnType::Timestamptz, J::Str(u)) => {
            let text = String::from_utf16(u).unwrap();
            if text == "$migrated_at" {
                Cell::Timestamp(migrated_at_ms)
            } else {
                let ms = ferry_core::timestamp::parse_iso8601(&text)
                    .unwrap_or_else(|e| panic!("expected timestamp {text}: {e}"));
                assert_eq!(ferry_core::timestamp::format(ms), text, "canonical form");
                Cell::Timestamp(ms)
            }
        }
        (ColumnType::Boolean, J::Bool(b)) => Cell::Bool(*b),
        (ColumnType::BigInt, J::Num(n)) => Cell::Int(n.parse().unwrap()),
        (ColumnType::Double, J::Num(n)) => Cell::Float(n.parse().unwrap()),
        (ty, j) => panic!(
            "column {} ({ty:?}): unexpected corpus value {j:?}",
            field.column
        ),
    }
}

/// Whether `haystack` holds `needle` as a run of code units (for secret checks).
pub fn contains_units(haystack: &[u16], needle: &[u16]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
