//! Ferry's demo data: a seeded generator of realistic legacy localStorage, with the ground
//! truth of what the pipeline must make of it.
//!
//! Tests, benchmarks and the demo's "Load sample data" need localStorage as a real app leaves
//! it after years of use: thousands of records written by several versions of the app, legacy
//! enum values, fields that came and went, a few records broken in every way a browser can
//! break them, and strings that stress the [lossless](ferry_core::lossless) rule (lone
//! surrogates, NUL, U+FFFF) or look like attacks. [`generate`] writes such a snapshot for one of
//! the two example apps (`specs/taskboard.json`, `specs/jotter.json`) and returns, alongside the
//! `(key, value)` pairs, a [`SampleManifest`]: the expected outcome of every record, and the
//! list of injected faults with the [`Code`] each must be rejected with. Tests compare the
//! pipeline's outcomes with it record by record.
//!
//! The generator is platform-free and deterministic: a SplitMix64 generator seeded by
//! [`SampleOptions::seed`], no clock, no I/O, so the same options give the same pairs on every
//! platform. It writes JSON itself (rather than through `serde_json`) because it must write
//! what `JSON.stringify` writes, and sometimes what an old engine wrote (a raw lone surrogate),
//! which no Rust serialiser does; [`pairs_json`] hands the pairs to a browser the same way.
//!
//! Its own crate, not a module of `ferry-core`, because it is demo and test data: the core's
//! tests and the fuzz tests take it as a dev-dependency, the server's benchmark uses it, and
//! the ingest server serves it in dev mode only (`GET /dev/sample`); the migrator's wasm bundle,
//! which every user of an app downloads, does not contain it.

use std::borrow::Cow;
use std::fmt::Write as _;

use ferry_core::lossless::{self, LosslessString};
use ferry_core::pipeline::{Code, KindSummary, Locator};
use ferry_core::timestamp;

/// Default size of a sample: 5 MiB of UTF-16 (what a browser's localStorage quota allows).
pub const DEFAULT_TARGET_BYTES: u64 = 5 * 1024 * 1024;

/// Default share of records that are broken.
pub const DEFAULT_INVALID_FRACTION: f64 = 0.02;

/// Kinds with few records (environments, form drafts, singletons) are broken at least this
/// often when faults are on, so that one sample exercises their faults too.
const FEW_RECORDS_FAULT_RATE: f64 = 0.25;

/// Share of records holding a hostile string when [`SampleOptions::hostile`] is on.
const HOSTILE_RATE: f64 = 0.02;

/// The bulk kind always gets at least this many records, however small the target (unless
/// [`SampleOptions::bulk_records`] says how many).
const MIN_BULK_RECORDS: u32 = 8;

/// 2019-01-01T00:00:00Z and 2025-12-31T00:00:00Z: the span of generated dates.
const T_START: i64 = 1_546_300_800_000;
const T_END: i64 = 1_767_139_200_000;
const DAY_MS: i64 = 86_400_000;

/// An unsafe integer: 2^53 + 1, which JavaScript cannot hold exactly.
const BEYOND_2_53: &str = "9007199254740993";

// ---------------------------------------------------------------------------------------------
// Public API.
// ---------------------------------------------------------------------------------------------

/// Which example app's localStorage to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyApp {
    /// `specs/taskboard.json`: a `tasks` array (the bulk), `environments`, `userPreferences`,
    /// `formData:<form>` drafts and `taskboard:<anything>` custom keys.
    Taskboard,
    /// `specs/jotter.json`: a `jotter.notes` map (the bulk), `jotter.account`, a
    /// `jotter.attachments` array and `jotter.draft.<noteId>` keys.
    Jotter,
}

impl LegacyApp {
    /// The kind names of the app's spec, in spec order (the order of [`SampleManifest::summary`]).
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Taskboard => &[
                "tasks",
                "environments",
                "preferences",
                "form_drafts",
                "custom",
            ],
            Self::Jotter => &["notes", "account", "attachments", "drafts"],
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// The app to imitate.
    pub app: LegacyApp,
    /// Seed of the generator: the same options always give the same sample.
    pub seed: u64,
    /// Approximate total size in UTF-16 bytes (2 × code units of every key and value, what the
    /// browser's quota counts). The bulk kind grows until the total reaches it.
    pub target_bytes: u64,
    /// Share of records that are broken (0 for a clean sample). Kinds with few records are
    /// broken at least one time in four when this is above 0, so every fault shows up.
    pub invalid_fraction: f64,
    /// Exactly this many records of the bulk kind (taskboard's tasks, jotter's notes) instead
    /// of as many as `target_bytes` takes: for a benchmark that counts records.
    pub bulk_records: Option<u32>,
    /// Whether some records hold hostile strings: lone surrogates (raw and as JSON escapes),
    /// NUL, U+FFFF, `<script>`, SQL-looking text, right-to-left overrides.
    pub hostile: bool,
    /// Whether one container key has the wrong shape (taskboard's `environments` or jotter's
    /// `jotter.attachments` holds an object instead of an array). The whole key is then one
    /// rejected record, so this is off by default.
    pub broken_containers: bool,
}

impl SampleOptions {
    /// The defaults for an app: seed 0, 5 MiB, 2 % broken records, hostile strings on, no
    /// broken container.
    pub fn new(app: LegacyApp) -> Self {
        Self {
            app,
            seed: 0,
            target_bytes: DEFAULT_TARGET_BYTES,
            invalid_fraction: DEFAULT_INVALID_FRACTION,
            bulk_records: None,
            hostile: true,
            broken_containers: false,
        }
    }
}

/// A generated localStorage snapshot and its ground truth.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The `(key, value)` pairs, in an arbitrary (seeded) order, as `localStorage` holds them.
    pub pairs: Vec<(LosslessString, LosslessString)>,
    /// What the pipeline must make of them.
    pub manifest: SampleManifest,
}

/// The ground truth of a sample.
#[derive(Debug, Clone)]
pub struct SampleManifest {
    /// Total size of the pairs in UTF-16 bytes.
    pub bytes: u64,
    /// Expected outcome counts per kind, in spec order (compare with
    /// [`ferry_core::pipeline::summarize`]).
    pub summary: Vec<KindSummary>,
    /// The expected outcome of every record the pipeline will see, in generation order (match
    /// them with the pipeline's records by kind, key and locator).
    pub records: Vec<ExpectedRecord>,
    /// Every injected fault (a subset of `records`, with what was broken).
    pub faults: Vec<Fault>,
    /// Keys the spec does not read; the pipeline must leave them alone.
    pub unknown_keys: Vec<LosslessString>,
}

/// One record and what must happen to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedRecord {
    /// Kind name.
    pub kind: &'static str,
    /// The localStorage key.
    pub key: LosslessString,
    /// Where in the key's value.
    pub locator: Locator,
    /// The legacy id the pipeline reads, when it can read one.
    pub legacy_id: Option<LosslessString>,
    /// The expected outcome.
    pub expected: Expected,
}

/// The expected outcome of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Valid as it is.
    Valid,
    /// Valid after repairs with exactly these codes (each listed once).
    Repaired(Vec<Code>),
    /// Rejected; at least one reason has this code.
    Rejected(Code),
    /// An identical copy of the record at this locator (same key).
    Duplicate(Locator),
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Kind name.
    pub kind: &'static str,
    /// The localStorage key.
    pub key: LosslessString,
    /// Where in the key's value.
    pub locator: Locator,
    /// The legacy id the pipeline can still read (`None` when the fault breaks the id or the
    /// whole value).
    pub legacy_id: Option<LosslessString>,
    /// What was broken.
    pub fault: FaultKind,
    /// The field concerned (its source property, or its column for `$key_suffix` fields).
    pub field: Option<&'static str>,
    /// The code the rejection must carry. For [`FaultKind::IdenticalDuplicate`] it is
    /// [`Code::Duplicate`], but the outcome is `Outcome::Duplicate`, not a rejection.
    pub code: Code,
}

/// The catalogue of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// A required field is absent.
    MissingRequired,
    /// A required field is `null`.
    NullRequired,
    /// A value of the wrong JSON type (number for a string, string for a boolean, string
    /// for an array, ISO text for an epoch field…).
    WrongType,
    /// A string that is not one of the enum's values (nor a legacy one).
    BadEnum,
    /// A timestamp that does not parse or is out of range (February 30, year 0000,
    /// +275760, `Invalid Date`, milliseconds given to a seconds field).
    BadTimestamp,
    /// A string longer than its `length.max`.
    TooLong,
    /// An empty string where `length.min` is 1.
    Empty,
    /// A number outside its `range`.
    OutOfRange,
    /// A fraction where an integer is expected.
    NotWholeNumber,
    /// An integer beyond 2^53, which JavaScript cannot hold exactly.
    UnsafeInteger,
    /// A string that is not an email address.
    BadEmail,
    /// A string that is not a URL.
    BadUrl,
    /// A string that does not match the field's `regex`.
    BadPattern,
    /// An array with more items than `max_items`.
    TooManyItems,
    /// An array item of the wrong type.
    ItemWrongType,
    /// The id field is absent.
    IdMissing,
    /// The id is an object, a fraction, an empty string or an unsafe integer.
    IdWrongType,
    /// A value that is not JSON (a write cut short).
    NotJson,
    /// A record that is not a JSON object.
    NotAnObject,
    /// A container key of the wrong shape (object instead of array): the whole key is rejected.
    WrongContainer,
    /// A second record with the same id and different, older content.
    ConflictingDuplicate,
    /// A second, identical copy of a record.
    IdenticalDuplicate,
    /// A field the spec does not allow (`unknown_fields: reject`).
    UnknownField,
}

/// Generates a sample. Deterministic: the same options give the same sample.
pub fn generate(options: &SampleOptions) -> Sample {
    let mut g = Gen {
        opts: options,
        rng: Rng::new(options.seed),
        pairs: Vec::new(),
        bytes: 0,
        records: Vec::new(),
        faults: Vec::new(),
        unknown: Vec::new(),
    };
    match options.app {
        LegacyApp::Taskboard => g.taskboard(),
        LegacyApp::Jotter => g.jotter(),
    }
    g.shuffle_pairs();
    let summary = summarize(options.app, &g.records);
    Sample {
        pairs: g.pairs,
        manifest: SampleManifest {
            bytes: g.bytes,
            summary,
            records: g.records,
            faults: g.faults,
            unknown_keys: g.unknown,
        },
    }
}

fn summarize(app: LegacyApp, records: &[ExpectedRecord]) -> Vec<KindSummary> {
    app.kinds()
        .iter()
        .map(|&kind| {
            let mut s = KindSummary {
                kind: kind.to_owned(),
                ..KindSummary::default()
            };
            for r in records.iter().filter(|r| r.kind == kind) {
                match r.expected {
                    Expected::Valid => s.valid += 1,
                    Expected::Repaired(_) => s.repaired += 1,
                    Expected::Rejected(_) => s.rejected += 1,
                    Expected::Duplicate(_) => s.duplicates += 1,
                }
            }
            s
        })
        .collect()
}

/// The pairs as JSON text, `[["key","value"],…]`, for a browser: `JSON.parse` gives back the
/// exact JavaScript strings. NUL, lone surrogates and U+FFFF are written as `\uXXXX` escapes
/// (the text itself holds none of them), which `serde_json` cannot do for lone surrogates: a
/// Rust `String` has none to write.
pub fn pairs_json(pairs: &[(LosslessString, LosslessString)]) -> String {
    let size: usize = pairs
        .iter()
        .map(|(k, v)| k.as_escaped().len() + v.as_escaped().len() + 6)
        .sum();
    let mut out = String::with_capacity(size + 2);
    out.push('[');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        write_js_string(&mut out, key.as_escaped(), Units::Escaped);
        out.push(',');
        write_js_string(&mut out, value.as_escaped(), Units::Escaped);
        out.push(']');
    }
    out.push(']');
    out
}

// ---------------------------------------------------------------------------------------------
// The random source: SplitMix64 (Steele, Lea, Flood 2014). Small, fast, and every seed is good.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-shift: no modulo bias worth noting.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(hi.saturating_sub(lo).max(0) as u64) as i64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    fn fork(&mut self) -> Self {
        Self(self.next())
    }
}

/// Cycles through a kind's fault variants from a random start, so that a kind with at least as
/// many faults as variants exercises every variant.
struct RoundRobin {
    next: usize,
    len: usize,
}

impl RoundRobin {
    fn new(rng: &mut Rng, len: usize) -> Self {
        Self {
            next: rng.index(len),
            len,
        }
    }

    fn take(&mut self) -> usize {
        let v = self.next;
        self.next = (self.next + 1) % self.len.max(1);
        v
    }
}

/// Which of `n` records are broken: exactly `ceil(n × rate)` of them, at seeded positions.
fn fault_plan(rng: &mut Rng, n: usize, rate: f64) -> Vec<bool> {
    let broken = ((n as f64 * rate).ceil() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..broken {
        let j = i + rng.index(n - i);
        order.swap(i, j);
    }
    let mut plan = vec![false; n];
    for &i in &order[..broken] {
        plan[i] = true;
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// JSON, written as JavaScript writes it.
// ---------------------------------------------------------------------------------------------

/// A JSON value whose strings are JavaScript strings in lossless escaped form.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Verbatim JSON text (numbers JavaScript writes that Rust does not, such as `2^53 + 1`).
    Lit(&'static str),
    /// A string, as modern `JSON.stringify` writes it: lone surrogates as `\udXXX` escapes.
    Str(String),
    /// A string as an old engine's `JSON.stringify` wrote it: lone surrogates raw.
    RawStr(String),
    Arr(Vec<J>),
    Obj(Vec<(Cow<'static, str>, J)>),
}

impl J {
    fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    fn obj(fields: Vec<(&'static str, J)>) -> Self {
        Self::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), v))
                .collect(),
        )
    }

    /// Sets a property (replacing it in place, or appending it).
    fn set(&mut self, name: &'static str, value: J) {
        if let Self::Obj(fields) = self {
            match fields.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => fields.push((Cow::Borrowed(name), value)),
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Self::Obj(fields) = self {
            fields.retain(|(k, _)| k != name);
        }
    }

    fn get(&self, name: &str) -> Option<&J> {
        match self {
            Self::Obj(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The same object with its properties in reverse order: what `JSON.stringify` of a copy
    /// built another way writes. The pipeline's canonical form must not see a difference.
    fn reversed(&self) -> Self {
        match self {
            Self::Obj(fields) => Self::Obj(fields.iter().rev().cloned().collect()),
            other => other.clone(),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Self::Lit(text) => out.push_str(text),
            Self::Str(s) => write_js_string(out, s, Units::Stringify),
            Self::RawStr(s) => write_js_string(out, s, Units::OldEngine),
            Self::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_js_string(out, k, Units::Stringify);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// How [`write_js_string`] writes the code units the lossless rule escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    /// As modern `JSON.stringify` writes them: NUL and lone surrogates as `\uXXXX` escapes,
    /// U+FFFF raw. The text written is in escaped form (a raw U+FFFF is U+FFFF `FFFF` there).
    Stringify,
    /// As an old engine's `JSON.stringify` wrote them: lone surrogates raw too.
    OldEngine,
    /// Every one as a `\uXXXX` escape: plain text for a browser, whose `JSON.parse` gives back
    /// the exact code units (see [`pairs_json`]).
    Escaped,
}

/// Writes a JavaScript string (in escaped form) as a JSON string literal: `"`, `\` and
/// control characters escaped, and NUL, lone surrogates and U+FFFF as `units` says.
fn write_js_string(out: &mut String, s: &str, units: Units) {
    out.push('"');
    let mut rest = s;
    while let Some((i, c)) = rest
        .char_indices()
        .find(|&(_, c)| c == '"' || c == '\\' || c < ' ' || c == lossless::ESCAPE)
    {
        out.push_str(&rest[..i]);
        let mut after = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            lossless::ESCAPE => {
                let hex = rest.get(after..after + 4).unwrap_or("FFFD");
                after += hex.len();
                match (u16::from_str_radix(hex, 16).unwrap_or(0xFFFD), units) {
                    (0, _) => out.push_str("\\u0000"),
                    (unit @ 0xD800..=0xDFFF, Units::Stringify) | (unit, Units::Escaped) => {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                    // A raw lone surrogate or a raw U+FFFF: the stored text holds the code unit.
                    _ => {
                        out.push(lossless::ESCAPE);
                        out.push_str(hex);
                    }
                }
            }
            c => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
        rest = rest.get(after..).unwrap_or("");
    }
    out.push_str(rest);
    out.push('"');
}

/// Length in UTF-16 code units of a text in escaped form.
fn utf16_units(escaped: &str) -> u64 {
    let escapes = escaped.matches(lossless::ESCAPE).count() as u64;
    escaped.encode_utf16().count() as u64 - 4 * escapes
}

/// Turns generated text (always in escaped form) into a [`LosslessString`].
fn to_lossless(escaped: String) -> LosslessString {
    // The generator only writes well-formed escapes and never a raw NUL (unit-tested below);
    // an empty value here would show up as a manifest mismatch in every test.
    LosslessString::from_escaped(escaped).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Text.
// ---------------------------------------------------------------------------------------------

const VERBS: &[&str] = &[
    "Fix",
    "Write",
    "Review",
    "Update",
    "Refactor",
    "Test",
    "Deploy",
    "Plan",
    "Call",
    "Buy",
    "Book",
    "Clean up",
    "Investigate",
    "Document",
    "Migrate",
    "Prepare",
    "Send",
    "Renew",
    "Schedule",
    "Archive",
    "Translate",
    "Benchmark",
];

const OBJECTS: &[&str] = &[
    "login redirect",
    "release notes",
    "the onboarding flow",
    "invoice #1042",
    "flaky CI job",
    "dentist appointment",
    "quarterly report",
    "dark mode colours",
    "search index",
    "API rate limits",
    "team offsite",
    "café order",
    "naïve date parsing",
    "résumé for Zoë",
    "Straße names in the geocoder",
    "会議の議事録",
    "数据库备份",
    "🚀 launch checklist",
    "the 🐛 in the tracker",
    "passport renewal",
    "Q3 OKRs",
    "SSL certificate",
    "garden fence",
];

const SENTENCES: &[&str] = &[
    "Steps to reproduce are in the ticket.",
    "Blocked until the design review on Thursday.",
    "Ask Ana whether the staging data can be reset.",
    "The old endpoint still returns 302 for logged-out users.",
    "Remember to update the changelog before tagging.",
    "Budget: 1 200 € max, incl. taxes.",
    "Customer reported it twice this week 😬",
    "Voir la pièce jointe pour les détails.",
    "Der Bericht muss bis Freitag fertig sein.",
    "明日までに確認してください。",
    "需要和产品团队确认优先级。",
    "Check the logs around 03:00 UTC — that's when the cron runs.",
    "Done when: tests green, docs updated, demo recorded.",
    "Use the “new” flag only for beta users.",
    "Low priority, but annoying.",
    "¿Podemos moverlo al próximo sprint?",
    "Follow up with legal about the GDPR wording.",
    "- milk\n- eggs\n- coffee ☕",
];

const TAGS: &[&str] = &[
    "bug",
    "frontend",
    "backend",
    "urgent",
    "design",
    "docs",
    "ops",
    "home",
    "errand",
    "q3",
    "customer",
    "tech-debt",
    "🔥",
    "réunion",
    "ux",
    "security",
];

const NAMES: &[&str] = &[
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Eun-ji",
    "Farah",
    "Grégoire",
    "Hiroshi",
    "Zoë",
    "Ngozi",
];

const LABELS: &[&str] = &[
    "work",
    "home",
    "ideas",
    "todo",
    "2024",
    "read-later",
    "recipes",
    "travel",
];

fn task_title(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(VERBS), rng.pick(OBJECTS))
}

fn paragraphs(rng: &mut Rng, max_paragraphs: u64, max_sentences: u64) -> String {
    let mut out = String::new();
    for p in 0..=rng.below(max_paragraphs) {
        if p > 0 {
            out.push_str("\n\n");
        }
        for s in 0..=rng.below(max_sentences) {
            if s > 0 {
                out.push(' ');
            }
            out.push_str(rng.pick::<&str>(SENTENCES));
        }
    }
    out
}

fn alnum(rng: &mut Rng, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| char::from(*rng.pick(CHARS))).collect()
}

fn hex(rng: &mut Rng, n: usize) -> String {
    const CHARS: &[u8] = b"0123456789abcdef";
    (0..n).map(|_| char::from(*rng.pick(CHARS))).collect()
}

/// A `crypto.randomUUID()`-style id: lowercase, version 4, RFC 4122 variant.
fn uuid_v4(rng: &mut Rng) -> String {
    let mut v = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    v = (v & !(0xF << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn iso(ms: i64) -> String {
    timestamp::format(ms)
}

/// The escaped form of a text given as UTF-16 pieces.
fn from_units(before: &str, units: &[u16], after: &str) -> String {
    let mut all: Vec<u16> = before.encode_utf16().collect();
    all.extend_from_slice(units);
    all.extend(after.encode_utf16());
    LosslessString::from_utf16(&all).into_escaped()
}

/// A hostile string, and whether it holds a code unit the lossless rule escapes (so the
/// record is repaired with [`Code::Escaped`]). Every one fits a 64-character limit.
fn hostile_string(rng: &mut Rng) -> (J, bool) {
    match rng.below(13) {
        // `title.slice(0, 9)` cut through 😀 (D83D DE00); an old engine stored the half raw…
        0 => (J::RawStr(from_units("Ship it ", &[0xD83D], "")), true),
        // …modern JSON.stringify writes it as the escape text `\ud83d`.
        1 => (J::Str(from_units("Ship it ", &[0xD83D], "")), true),
        2 => (
            J::RawStr(from_units("", &[0xDE00], " orphan low half")),
            true,
        ),
        3 => (J::Str(from_units("", &[0xDE00], " orphan low half")), true),
        4 => (
            J::str(LosslessString::from_unicode("null\0byte in the middle").into_escaped()),
            true,
        ),
        5 => (
            J::str(LosslessString::from_unicode("noncharacter \u{FFFF} here").into_escaped()),
            true,
        ),
        6 => (J::str("<script>alert(1)</script>"), false),
        7 => (J::str("'); DROP TABLE tasks;--"), false),
        8 => (J::str("مرحبا بالعالم \u{202E}gpj.exe"), false),
        9 => (J::str("👩‍👩‍👧‍👦 🇫🇷 trip — 𝕏 ＡＢＣ"), false),
        // Typed by the user: six characters, not an escape. JSON holds `\\ud800`.
        10 => (J::str("C:\\new\\ud800 (typed, \"quoted\")"), false),
        11 => (J::str("tab\there\r\nline\u{1} \u{2028} end"), false),
        _ => (J::str("{{constructor.constructor('alert(1)')()}}"), false),
    }
}

/// What a record generator produced: the record and what the pipeline will repair in it.
struct Built {
    json: J,
    repairs: Vec<Code>,
    /// The value of the kind's `updated_at` column, when the generator knows it.
    updated_ms: Option<i64>,
}

impl Built {
    fn new() -> Self {
        Self {
            json: J::Obj(Vec::new()),
            repairs: Vec::new(),
            updated_ms: None,
        }
    }

    fn repair(&mut self, code: Code) {
        if !self.repairs.contains(&code) {
            self.repairs.push(code);
        }
    }

    /// A hostile string for a checked field: notes the escape repair when it has one.
    fn hostile(&mut self, rng: &mut Rng) -> J {
        let (j, escapes) = hostile_string(rng);
        if escapes {
            self.repair(Code::Escaped);
        }
        j
    }

    fn expected(&self) -> Expected {
        if self.repairs.is_empty() {
            Expected::Valid
        } else {
            Expected::Repaired(self.repairs.clone())
        }
    }
}

/// What a fault variant did to a record.
struct Injected {
    fault: FaultKind,
    field: Option<&'static str>,
    code: Code,
    /// Whether the pipeline can still read the record's id.
    keeps_id: bool,
}

fn injected(fault: FaultKind, field: &'static str, code: Code) -> Injected {
    Injected {
        fault,
        field: Some(field),
        code,
        keeps_id: true,
    }
}

fn id_fault(fault: FaultKind, field: &'static str) -> Injected {
    Injected {
        fault,
        field: Some(field),
        code: Code::Id,
        keeps_id: false,
    }
}

fn whole_fault(fault: FaultKind, code: Code, keeps_id: bool) -> Injected {
    Injected {
        fault,
        field: None,
        code,
        keeps_id,
    }
}

/// A JSON text cut short, as a write interrupted by a closed tab leaves it. Never cuts
/// through a lossless escape, so the result is still in escaped form.
fn truncate_json(rng: &mut Rng, text: &str) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let len = chars.len().max(2);
    let mut cut = 1 + rng.index(len - 1);
    // Step back out of an escape (U+FFFF and its four digits).
    while cut > 1
        && chars[cut.saturating_sub(4)..cut.min(chars.len())]
            .iter()
            .any(|&(_, c)| c == lossless::ESCAPE)
    {
        cut -= 1;
    }
    let at = chars.get(cut).map_or(text.len(), |&(i, _)| i);
    text[..at].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Containers: array and map values that hold many records.
// ---------------------------------------------------------------------------------------------

/// A clean record kept aside to be copied by a duplicate fault.
struct Original {
    json: J,
    locator: Locator,
    legacy: String,
    updated_ms: Option<i64>,
}

/// Builds the value of an array or map key, record by record, with its expectations.
struct Container {
    kind: &'static str,
    key: LosslessString,
    /// A map (`{"<id>": record}`) rather than an array.
    map: bool,
    /// Written as an object (`{"<n>": record}`) even though the spec wants an array.
    as_object: bool,
    text: String,
    count: u32,
    units: u64,
    records: Vec<ExpectedRecord>,
    faults: Vec<Fault>,
    originals: Vec<Original>,
}

/// How many clean records are kept aside for duplicates: recent ones, like a real double save.
const ORIGINALS_KEPT: usize = 64;

impl Container {
    fn new(kind: &'static str, key: &str, map: bool, as_object: bool) -> Self {
        Self {
            kind,
            key: LosslessString::from_unicode(key),
            map,
            as_object,
            text: String::from(if map || as_object { "{" } else { "[" }),
            count: 0,
            units: 2,
            records: Vec::new(),
            faults: Vec::new(),
            originals: Vec::new(),
        }
    }

    /// UTF-16 bytes of key and value so far.
    fn bytes(&self) -> u64 {
        2 * (self.key.utf16_len() as u64 + self.units)
    }

    /// Appends an array item (or, with `map_key`, a map entry) and returns its locator.
    fn push(&mut self, map_key: Option<&str>, json: &J) -> Locator {
        let start = self.text.len();
        if self.count > 0 {
            self.text.push(',');
        }
        let locator = match map_key {
            Some(k) => {
                write_js_string(&mut self.text, k, Units::Stringify);
                self.text.push(':');
                Locator::MapKey(LosslessString::from_unicode(k))
            }
            None if self.as_object => {
                let _ = write!(self.text, "\"{}\":", self.count);
                Locator::Index(self.count)
            }
            None => Locator::Index(self.count),
        };
        json.write(&mut self.text);
        self.units += utf16_units(&self.text[start..]);
        self.count += 1;
        locator
    }

    fn expect(&mut self, locator: Locator, legacy: Option<&str>, expected: Expected) {
        self.records.push(ExpectedRecord {
            kind: self.kind,
            key: self.key.clone(),
            locator,
            legacy_id: legacy.map(LosslessString::from_unicode),
            expected,
        });
    }

    fn fault(&mut self, locator: Locator, legacy: Option<&str>, what: &Injected) {
        let legacy = legacy.filter(|_| what.keeps_id);
        self.faults.push(Fault {
            kind: self.kind,
            key: self.key.clone(),
            locator: locator.clone(),
            legacy_id: legacy.map(LosslessString::from_unicode),
            fault: what.fault,
            field: what.field,
            code: what.code,
        });
        self.expect(locator, legacy, Expected::Rejected(what.code));
    }

    /// Pushes a clean record and keeps it aside as a possible original of a duplicate.
    fn push_clean(&mut self, map_key: Option<&str>, legacy: &str, built: Built) {
        let locator = self.push(map_key, &built.json);
        self.expect(locator.clone(), Some(legacy), built.expected());
        if self.originals.len() == ORIGINALS_KEPT {
            self.originals.remove(0);
        }
        self.originals.push(Original {
            json: built.json,
            locator,
            legacy: legacy.to_owned(),
            updated_ms: built.updated_ms,
        });
    }

    /// Takes a kept original, if any (`with_update`: only one whose `updated_at` is known).
    fn take_original(&mut self, rng: &mut Rng, with_update: bool) -> Option<Original> {
        let candidates: Vec<usize> = (0..self.originals.len())
            .filter(|&i| !with_update || self.originals[i].updated_ms.is_some())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(self.originals.remove(*rng.pick(&candidates)))
    }

    /// Pushes an identical copy of a kept original; `false` when there is none.
    fn push_identical_copy(&mut self, rng: &mut Rng, map_key: Option<&str>) -> bool {
        let Some(original) = self.take_original(rng, false) else {
            return false;
        };
        let locator = self.push(map_key, &original.json.reversed());
        self.faults.push(Fault {
            kind: self.kind,
            key: self.key.clone(),
            locator: locator.clone(),
            legacy_id: Some(LosslessString::from_unicode(&original.legacy)),
            fault: FaultKind::IdenticalDuplicate,
            field: None,
            code: Code::Duplicate,
        });
        self.expect(
            locator,
            Some(&original.legacy),
            Expected::Duplicate(original.locator),
        );
        true
    }

    /// Pushes an older, different copy of a kept original (edited by `edit`, which gets the
    /// original's `updated_at`); `false` when there is no original to copy.
    fn push_conflicting_copy(
        &mut self,
        rng: &mut Rng,
        edit: impl FnOnce(&mut J, i64, &mut Rng),
    ) -> bool {
        let Some(original) = self.take_original(rng, true) else {
            return false;
        };
        let mut copy = original.json.clone();
        edit(&mut copy, original.updated_ms.unwrap_or(T_START), rng);
        let locator = self.push(None, &copy);
        self.fault(
            locator,
            Some(&original.legacy),
            &whole_fault(FaultKind::ConflictingDuplicate, Code::Duplicate, true),
        );
        true
    }

    /// Closes the value and hands the key and expectations to the generator.
    fn finish(mut self, g: &mut Gen<'_>) {
        self.text
            .push(if self.map || self.as_object { '}' } else { ']' });
        if self.as_object {
            // The spec wants an array: the whole key is one record, rejected for its shape.
            g.faults.push(Fault {
                kind: self.kind,
                key: self.key.clone(),
                locator: Locator::Whole,
                legacy_id: None,
                fault: FaultKind::WrongContainer,
                field: None,
                code: Code::Shape,
            });
            g.records.push(ExpectedRecord {
                kind: self.kind,
                key: self.key.clone(),
                locator: Locator::Whole,
                legacy_id: None,
                expected: Expected::Rejected(Code::Shape),
            });
        } else {
            g.records.append(&mut self.records);
            g.faults.append(&mut self.faults);
        }
        g.add_pair(self.key, self.text);
    }
}

// ---------------------------------------------------------------------------------------------
// The generator.
// ---------------------------------------------------------------------------------------------

struct Gen<'o> {
    opts: &'o SampleOptions,
    rng: Rng,
    pairs: Vec<(LosslessString, LosslessString)>,
    bytes: u64,
    records: Vec<ExpectedRecord>,
    faults: Vec<Fault>,
    unknown: Vec<LosslessString>,
}

impl Gen<'_> {
    fn add_pair(&mut self, key: LosslessString, value: String) {
        let value = to_lossless(value);
        self.bytes += 2 * (key.utf16_len() + value.utf16_len()) as u64;
        self.pairs.push((key, value));
    }

    /// Fault rate of a kind: the requested one, or at least [`FEW_RECORDS_FAULT_RATE`] for
    /// kinds with few records.
    fn rate(&self, few_records: bool) -> f64 {
        let f = self.opts.invalid_fraction.clamp(0.0, 1.0);
        if few_records && f > 0.0 {
            f.max(FEW_RECORDS_FAULT_RATE)
        } else {
            f
        }
    }

    fn hostile_here(&mut self) -> bool {
        self.opts.hostile && self.rng.chance(HOSTILE_RATE)
    }

    /// Whether the bulk kind, holding `count` records with the sample at `bytes`, takes another:
    /// up to [`SampleOptions::bulk_records`] when set, else until the target size.
    fn bulk_wants_more(&self, count: u32, bytes: u64) -> bool {
        match self.opts.bulk_records {
            Some(records) => count < records,
            None => count < MIN_BULK_RECORDS || bytes < self.opts.target_bytes,
        }
    }

    /// A few records of a kind with few records: `scale` bytes of target per record, within
    /// `min..=max`.
    fn few(&self, scale: u64, min: u64, max: u64) -> usize {
        (self.opts.target_bytes / scale).clamp(min, max) as usize
    }

    /// A key-per-record value (prefix and object sources) with its expectation.
    fn push_whole(
        &mut self,
        kind: &'static str,
        key: String,
        legacy: &str,
        value: String,
        outcome: Result<Expected, Injected>,
    ) {
        let key = to_lossless(key);
        let legacy_ok = match &outcome {
            Ok(_) => true,
            Err(what) => what.keeps_id,
        };
        let legacy_id = legacy_ok.then(|| to_lossless(legacy.to_owned()));
        let expected = match outcome {
            Ok(e) => e,
            Err(what) => {
                self.faults.push(Fault {
                    kind,
                    key: key.clone(),
                    locator: Locator::Whole,
                    legacy_id: legacy_id.clone(),
                    fault: what.fault,
                    field: what.field,
                    code: what.code,
                });
                Expected::Rejected(what.code)
            }
        };
        self.records.push(ExpectedRecord {
            kind,
            key: key.clone(),
            locator: Locator::Whole,
            legacy_id,
            expected,
        });
        self.add_pair(key, value);
    }

    fn unknown_keys(&mut self, pairs: &[(&str, &str)]) {
        for (key, value) in pairs {
            let key = LosslessString::from_unicode(key);
            self.unknown.push(key.clone());
            self.add_pair(key, (*value).to_owned());
        }
        if self.opts.hostile {
            // A key the app built from a title cut through an emoji: a raw lone surrogate.
            let key = to_lossless(from_units("recent:", &[0xD83D], ""));
            self.unknown.push(key.clone());
            self.add_pair(key, "1".to_owned());
        }
    }

    /// localStorage enumerates keys in no particular order; neither must the pipeline care.
    fn shuffle_pairs(&mut self) {
        for i in (1..self.pairs.len()).rev() {
            let j = self.rng.index(i + 1);
            self.pairs.swap(i, j);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Taskboard.
    // -----------------------------------------------------------------------------------------

    fn taskboard(&mut self) {
        self.unknown_keys(&[
            ("_ga", "GA1.1.1234567890.1700000000"),
            ("debug", "taskboard:*"),
            ("i18nextLng", "en-US"),
            ("loglevel", "WARN"),
            (
                "ally-supports-cache",
                "{\"userAgent\":\"Mozilla/5.0\",\"version\":\"1.4.1\"}",
            ),
            ("tasks.bak", "[{\"id\":1,\"title\":\"old format\"}]"),
            // The last screen, which the app rewrites on every move: the spec ignores it.
            ("taskboard:lastRoute", "/tasks/42"),
        ]);
        self.preferences();
        self.form_drafts();
        self.custom();
        self.environments();
        self.tasks();
    }

    fn tasks(&mut self) {
        let mut c = Container::new("tasks", "tasks", false, false);
        let rate = self.rate(false);
        let mut rr = RoundRobin::new(&mut self.rng, TASK_VARIANTS + 2);
        while self.bulk_wants_more(c.count, self.bytes + c.bytes()) {
            let hostile = self.hostile_here();
            let mut rng = self.rng.fork();
            if !self.rng.chance(rate) {
                let built = gen_task(&mut rng, hostile);
                let legacy = id_text(&built.json);
                c.push_clean(None, &legacy, built);
                continue;
            }
            let variant = rr.take();
            let done = match variant {
                v if v == TASK_VARIANTS => c.push_identical_copy(&mut rng, None),
                v if v == TASK_VARIANTS + 1 => {
                    c.push_conflicting_copy(&mut rng, |j, updated, rng| {
                        j.set("title", J::str("Edited in another tab"));
                        j.set(
                            "updatedAt",
                            J::Str(iso(updated - 60_000 * rng.between(1, 10_000))),
                        );
                    })
                }
                _ => false,
            };
            if !done {
                let mut built = gen_task(&mut rng, hostile);
                let legacy = id_text(&built.json);
                let what = task_fault(variant % TASK_VARIANTS, &mut rng, &mut built.json);
                let locator = c.push(None, &built.json);
                c.fault(locator, Some(&legacy), &what);
            }
        }
        c.finish(self);
    }

    fn environments(&mut self) {
        let n = self.few(80_000, 3, 64);
        let broken = self.opts.broken_containers;
        let mut c = Container::new("environments", "environments", false, broken);
        let rate = if broken { 0.0 } else { self.rate(true) };
        let plan = fault_plan(&mut self.rng, n, rate);
        let mut rr = RoundRobin::new(&mut self.rng, ENV_VARIANTS + 2);
        let mut slugs = Slugs::default();
        for faulty in plan {
            let hostile = self.hostile_here();
            let mut rng = self.rng.fork();
            let slug = slugs.next(&mut rng);
            if !faulty {
                let built = gen_environment(&mut rng, &slug, hostile);
                c.push_clean(None, &slug, built);
                continue;
            }
            let variant = rr.take();
            let done = match variant {
                v if v == ENV_VARIANTS => c.push_identical_copy(&mut rng, None),
                v if v == ENV_VARIANTS + 1 => {
                    c.push_conflicting_copy(&mut rng, |j, updated, rng| {
                        j.set("name", J::str("Old copy"));
                        j.set(
                            "updatedAt",
                            J::Int(updated - 60_000 * rng.between(1, 10_000)),
                        );
                    })
                }
                _ => false,
            };
            if !done {
                let mut built = gen_environment(&mut rng, &slug, hostile);
                let what = environment_fault(variant % ENV_VARIANTS, &mut rng, &mut built.json);
                let locator = c.push(None, &built.json);
                c.fault(locator, Some(&slug), &what);
            }
        }
        c.finish(self);
    }

    fn preferences(&mut self) {
        let hostile = self.hostile_here();
        let faulty = self.rng.chance(self.rate(true));
        let mut rng = self.rng.fork();
        let mut built = gen_preferences(&mut rng, hostile);
        let key = "userPreferences".to_owned();
        let (value, outcome) = if faulty {
            let variant = rng.index(PREFS_VARIANTS);
            prefs_fault(variant, &mut rng, &mut built.json)
        } else {
            (built.json.text(), Ok(built.expected()))
        };
        self.push_whole("preferences", key, "userPreferences", value, outcome);
    }

    fn form_drafts(&mut self) {
        let n = self.few(200_000, 3, 26);
        let rate = self.rate(true);
        let plan = fault_plan(&mut self.rng, n, rate);
        let mut rr = RoundRobin::new(&mut self.rng, FORM_VARIANTS);
        for (i, faulty) in plan.into_iter().enumerate() {
            let hostile = self.hostile_here();
            let mut rng = self.rng.fork();
            let mut name = match FORM_NAMES.get(i) {
                Some(n) => (*n).to_owned(),
                None => format!("editTask-{i}-{}", hex(&mut rng, 6)),
            };
            let mut built = gen_form(&mut rng, &name, hostile);
            let (value, outcome) = if faulty {
                let variant = rr.take();
                if variant == FORM_TOO_LONG_NAME {
                    // A form named after a URL the router encoded: too long a name.
                    name = format!("import-{i}-{}", "x".repeat(200 + rng.index(50)));
                }
                form_fault(variant, &mut rng, &mut built.json)
            } else {
                (built.json.text(), Ok(built.expected()))
            };
            self.push_whole(
                "form_drafts",
                format!("formData:{name}"),
                &name,
                value,
                outcome,
            );
        }
    }

    fn custom(&mut self) {
        let mut entries: Vec<(String, String, Expected)> = vec![
            (
                "theme".into(),
                "dark".into(),
                Expected::Repaired(vec![Code::NotJson]),
            ),
            // Classic bugs: setItem(k, {…}) and setItem(k, undefined).
            (
                "filter".into(),
                "[object Object]".into(),
                Expected::Repaired(vec![Code::NotJson]),
            ),
            (
                "selectedTask".into(),
                "undefined".into(),
                Expected::Repaired(vec![Code::NotJson]),
            ),
            ("onboardingStep".into(), "3".into(), Expected::Valid),
            ("tour".into(), "true".into(), Expected::Valid),
            ("lastSync".into(), "null".into(), Expected::Valid),
            (
                "lastSeenVersion".into(),
                "\"2.14.0\"".into(),
                Expected::Valid,
            ),
            (
                "boardLayout".into(),
                "{\"columns\":[\"todo\",\"doing\",\"done\"],\"wip\":{\"doing\":3},\"zoom\":1.25}"
                    .into(),
                Expected::Valid,
            ),
            (
                "recentSearches".into(),
                "[\"login\",\"résumé\",\"数据库\"]".into(),
                Expected::Valid,
            ),
            (
                "collapsedColumns".into(),
                "{\"done\":true,\"__proto__\":{\"admin\":true}}".into(),
                Expected::Valid,
            ),
        ];
        let caches = self.few(400_000, 1, 12);
        for i in 0..caches {
            let mut rng = self.rng.fork();
            let items: Vec<J> = (0..5 + rng.below(40))
                .map(|_| {
                    J::obj(vec![
                        ("q", J::Str(task_title(&mut rng))),
                        ("hits", J::Int(rng.between(0, 500))),
                    ])
                })
                .collect();
            entries.push((
                format!("cache:search:{i}"),
                J::Arr(items).text(),
                Expected::Valid,
            ));
        }
        if self.opts.hostile {
            // Free-form values with escapes: JSON with a lone-surrogate escape, raw text with a
            // raw lone surrogate, and a key holding a raw lone surrogate.
            let escaped = J::Str(from_units("clipboard ", &[0xD83D], "")).text();
            entries.push((
                "clipboard".into(),
                escaped,
                Expected::Repaired(vec![Code::Escaped]),
            ));
            entries.push((
                "scratch".into(),
                from_units("raw text ", &[0xDC00], " not JSON"),
                Expected::Repaired(vec![Code::NotJson, Code::Escaped]),
            ));
            entries.push((
                from_units("draft-", &[0xD83D], ""),
                "{\"open\":true}".into(),
                Expected::Repaired(vec![Code::Escaped]),
            ));
            entries.push((
                "nul".into(),
                "\"a\\u0000b\"".into(),
                Expected::Repaired(vec![Code::Escaped]),
            ));
        }
        for (suffix, value, expected) in entries {
            let key = format!("taskboard:{suffix}");
            let legacy = key.clone();
            self.push_whole("custom", key, &legacy, value, Ok(expected));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Jotter.
    // -----------------------------------------------------------------------------------------

    fn jotter(&mut self) {
        self.unknown_keys(&[
            ("_ga", "GA1.1.987654321.1690000000"),
            ("debug", "jotter:sync"),
            ("i18nextLng", "fr-FR"),
            ("jotter.version", "5"),
            ("jotter.lastOpened", "1700000000000"),
            ("jotter.draft", "{\"text\":\"no note id: not a draft key\"}"),
        ]);
        self.account();
        let broken = self.opts.broken_containers;
        let mut notes = Container::new("notes", "jotter.notes", true, false);
        let mut attachments = Container::new("attachments", "jotter.attachments", false, broken);
        let note_rate = self.rate(false);
        let attachment_rate = if broken { 0.0 } else { self.rate(false) };
        let draft_rate = self.opts.invalid_fraction.clamp(0.0, 1.0);
        let draft_rate = if draft_rate > 0.0 {
            draft_rate.max(0.1)
        } else {
            0.0
        };
        let mut note_rr = RoundRobin::new(&mut self.rng, NOTE_VARIANTS);
        let mut attachment_rr = RoundRobin::new(&mut self.rng, ATTACHMENT_VARIANTS + 1);
        let mut draft_rr = RoundRobin::new(&mut self.rng, DRAFT_VARIANTS);
        let mut id_ms = T_START + self.rng.between(0, 30 * DAY_MS);
        let mut seq: i64 = 0;
        while self.bulk_wants_more(
            notes.count,
            self.bytes + notes.bytes() + attachments.bytes(),
        ) {
            // Date.now() when the note was made: strictly increasing on one browser.
            id_ms += 1 + self.rng.between(0, 6 * 3_600_000);
            let id = id_ms.to_string();
            let hostile = self.hostile_here();
            let mut rng = self.rng.fork();
            let mut built = gen_note(&mut rng, id_ms, hostile);
            if self.rng.chance(note_rate) {
                let what = note_fault(note_rr.take(), &mut rng, &mut built.json);
                let locator = notes.push(Some(&id), &built.json);
                notes.fault(locator, Some(&id), &what);
            } else {
                notes.push_clean(Some(&id), &id, built);
            }
            for _ in 0..usize::from(self.rng.chance(0.2)) + usize::from(self.rng.chance(0.05)) {
                seq += 1;
                let hostile = self.hostile_here();
                let faulty = self.rng.chance(attachment_rate);
                let mut rng = self.rng.fork();
                let seq_text = seq.to_string();
                if !faulty {
                    attachments.push_clean(
                        None,
                        &seq_text,
                        gen_attachment(&mut rng, seq, &id, hostile),
                    );
                    continue;
                }
                let variant = attachment_rr.take();
                if variant == ATTACHMENT_VARIANTS && attachments.push_identical_copy(&mut rng, None)
                {
                    continue;
                }
                let mut built = gen_attachment(&mut rng, seq, &id, hostile);
                let what =
                    attachment_fault(variant % ATTACHMENT_VARIANTS, &mut rng, &mut built.json);
                let locator = attachments.push(None, &built.json);
                attachments.fault(locator, Some(&seq_text), &what);
            }
            if self.rng.chance(0.03) {
                let hostile = self.hostile_here();
                let faulty = self.rng.chance(draft_rate);
                let mut rng = self.rng.fork();
                let mut built = gen_draft(&mut rng, id_ms, hostile);
                let (value, outcome) = if faulty {
                    draft_fault(draft_rr.take(), &mut rng, &mut built.json)
                } else {
                    (built.json.text(), Ok(built.expected()))
                };
                self.push_whole("drafts", format!("jotter.draft.{id}"), &id, value, outcome);
            }
        }
        notes.finish(self);
        attachments.finish(self);
    }

    fn account(&mut self) {
        let hostile = self.hostile_here();
        let faulty = self.rng.chance(self.rate(true));
        let mut rng = self.rng.fork();
        let mut built = gen_account(&mut rng, hostile);
        let (value, outcome) = if faulty {
            let variant = rng.index(ACCOUNT_VARIANTS);
            account_fault(variant, &mut rng, &mut built.json)
        } else {
            (built.json.text(), Ok(built.expected()))
        };
        self.push_whole(
            "account",
            "jotter.account".to_owned(),
            "jotter.account",
            value,
            outcome,
        );
    }
}

fn id_text(json: &J) -> String {
    match json.get("id") {
        Some(J::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Unique environment slugs: the usual names first, then numbered previews.
#[derive(Default)]
struct Slugs(usize);

impl Slugs {
    fn next(&mut self, rng: &mut Rng) -> String {
        const USUAL: &[&str] = &[
            "production",
            "staging",
            "staging-eu",
            "staging-us",
            "dev",
            "qa",
            "demo",
            "sandbox",
            "canary",
            "perf",
            "uat",
            "local",
        ];
        let i = self.0;
        self.0 += 1;
        match USUAL.get(i) {
            Some(s) => (*s).to_owned(),
            None => format!("preview-{}-{}", i, hex(rng, 4)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Taskboard records and their faults.
// ---------------------------------------------------------------------------------------------

fn gen_task(rng: &mut Rng, hostile: bool) -> Built {
    let mut b = Built::new();
    let created = rng.between(T_START, T_END);
    let mut j = J::obj(vec![("id", J::Str(uuid_v4(rng)))]);
    // Only one field gets the hostile string, so the expected repairs stay exact.
    let hostile_field = if hostile { rng.below(3) } else { 3 };
    let title = if hostile_field == 0 {
        b.hostile(rng)
    } else {
        J::Str(task_title(rng))
    };
    j.set("title", title);
    let status = if rng.chance(0.55) {
        b.repair(Code::LegacyEnum);
        *rng.pick(&["todo", "in-progress", "done"])
    } else {
        *rng.pick(&["pending", "in_progress", "completed"])
    };
    j.set("status", J::str(status));
    if hostile_field == 1 {
        let text = b.hostile(rng);
        j.set("description", text);
    } else if rng.chance(0.15) {
        let text = if rng.chance(0.03) {
            paragraphs(rng, 8, 12)
        } else {
            paragraphs(rng, 2, 2)
        };
        j.set("description", J::Str(text));
    }
    if rng.chance(0.5) {
        j.set(
            "priority",
            J::str(*rng.pick(&["low", "medium", "high", "urgent"])),
        );
    }
    if hostile_field == 2 {
        let tag = b.hostile(rng);
        j.set("tags", J::Arr(vec![J::str("hostile"), tag]));
    } else if rng.chance(0.3) {
        let tags = (0..=rng.below(3))
            .map(|_| J::str(*rng.pick(TAGS)))
            .collect();
        j.set("tags", J::Arr(tags));
    }
    if rng.chance(0.2) {
        let due = rng.between(created, created + 60 * DAY_MS);
        let text = if rng.chance(0.5) {
            iso(due)[..10].to_owned()
        } else {
            iso(due)
        };
        j.set("dueDate", J::Str(text));
    }
    j.set("createdAt", J::Str(iso(created)));
    if rng.chance(0.6) {
        let updated = rng.between(created, created + 120 * DAY_MS);
        j.set("updatedAt", J::Str(iso(updated)));
        b.updated_ms = Some(updated);
    } else {
        if rng.chance(0.1) {
            j.set("updatedAt", J::Null);
        }
        b.repair(Code::DefaultFrom);
        b.updated_ms = Some(created);
    }
    if rng.chance(0.05) {
        j.set("assignee", J::str(*rng.pick(NAMES)));
    }
    if hostile && rng.chance(0.3) {
        // A property the spec ignores: its escapes are not the pipeline's business.
        let (text, _) = hostile_string(rng);
        j.set("_scratch", text);
    }
    b.json = j;
    b
}

const TASK_VARIANTS: usize = 30;

fn task_fault(variant: usize, rng: &mut Rng, j: &mut J) -> Injected {
    use Code as C;
    use FaultKind as F;
    match variant {
        0 => {
            j.remove("title");
            injected(F::MissingRequired, "title", C::Missing)
        }
        1 => {
            j.set("title", J::Null);
            injected(F::NullRequired, "title", C::Missing)
        }
        2 => {
            j.set("title", J::Int(12345));
            injected(F::WrongType, "title", C::Type)
        }
        3 => {
            j.set("title", J::str(""));
            injected(F::Empty, "title", C::Length)
        }
        4 => {
            j.set("title", J::Str("Very long title ".repeat(32)));
            injected(F::TooLong, "title", C::Length)
        }
        5 => {
            j.remove("status");
            injected(F::MissingRequired, "status", C::Missing)
        }
        6 => {
            j.set("status", J::str("archived"));
            injected(F::BadEnum, "status", C::Enum)
        }
        7 => {
            j.set("status", J::Int(2));
            injected(F::WrongType, "status", C::Type)
        }
        8 => {
            j.set("priority", J::str("critical"));
            injected(F::BadEnum, "priority", C::Enum)
        }
        9 => {
            let tags = (0..51).map(|i| J::Str(format!("tag-{i}"))).collect();
            j.set("tags", J::Arr(tags));
            injected(F::TooManyItems, "tags", C::Items)
        }
        10 => {
            j.set("tags", J::Arr(vec![J::str("bug"), J::Int(7)]));
            injected(F::ItemWrongType, "tags", C::Type)
        }
        11 => {
            j.set("tags", J::str("bug,frontend"));
            injected(F::WrongType, "tags", C::Type)
        }
        12 => {
            j.set("tags", J::Arr(vec![J::str("ok"), J::Str("x".repeat(65))]));
            injected(F::TooLong, "tags", C::Length)
        }
        13 => {
            j.set("dueDate", J::str("next friday"));
            injected(F::BadTimestamp, "dueDate", C::Timestamp)
        }
        14 => {
            // Date.now() where the spec wants ISO text.
            j.set("dueDate", J::Int(rng.between(T_START, T_END)));
            injected(F::WrongType, "dueDate", C::Timestamp)
        }
        15 => {
            j.remove("createdAt");
            injected(F::MissingRequired, "createdAt", C::Missing)
        }
        16 => {
            j.set("createdAt", J::str("2024-02-30T10:00:00.000Z"));
            injected(F::BadTimestamp, "createdAt", C::Timestamp)
        }
        17 => {
            j.set("createdAt", J::str("0000-01-01T00:00:00.000Z"));
            injected(F::BadTimestamp, "createdAt", C::Timestamp)
        }
        18 => {
            j.set("createdAt", J::str("+275760-09-13T00:00:00.000Z"));
            injected(F::BadTimestamp, "createdAt", C::Timestamp)
        }
        19 => {
            // String(new Date(NaN)).
            j.set("updatedAt", J::str("Invalid Date"));
            injected(F::BadTimestamp, "updatedAt", C::Timestamp)
        }
        20 => {
            j.remove("id");
            id_fault(F::IdMissing, "id")
        }
        21 => {
            let old = id_text(j);
            j.set("id", J::obj(vec![("uuid", J::Str(old))]));
            id_fault(F::IdWrongType, "id")
        }
        22 => {
            j.set("id", J::Float(3.5));
            id_fault(F::IdWrongType, "id")
        }
        23 => {
            j.set("id", J::str(""));
            id_fault(F::IdWrongType, "id")
        }
        24 => {
            j.set("id", J::Lit(BEYOND_2_53));
            id_fault(F::UnsafeInteger, "id")
        }
        25 => {
            *j = if rng.chance(0.5) {
                J::Null
            } else {
                J::Str(task_title(rng))
            };
            whole_fault(F::NotAnObject, C::Shape, false)
        }
        26 => {
            j.set(
                "description",
                J::Str("Lorem ipsum dolor sit amet. ".repeat(715)),
            );
            injected(F::TooLong, "description", C::Length)
        }
        27 => {
            j.set(
                "description",
                J::obj(vec![("html", J::str("<p>rich text</p>"))]),
            );
            injected(F::WrongType, "description", C::Type)
        }
        28 => {
            j.set("createdAt", J::Bool(true));
            injected(F::WrongType, "createdAt", C::Timestamp)
        }
        _ => {
            j.set("title", J::Arr(vec![J::str("split"), J::str("title")]));
            injected(F::WrongType, "title", C::Type)
        }
    }
}

fn gen_environment(rng: &mut Rng, slug: &str, hostile: bool) -> Built {
    let mut b = Built::new();
    let mut j = J::obj(vec![("id", J::str(slug))]);
    let name: String = slug
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
        })
        .collect::<Vec<_>>()
        .join(" ");
    j.set("name", J::Str(name));
    let hostile_field = if hostile { rng.below(2) } else { 2 };
    if hostile_field == 0 {
        let text = b.hostile(rng);
        j.set("description", text);
    } else if rng.chance(0.5) {
        j.set("description", J::Str(paragraphs(rng, 1, 2)));
    }
    let region = *rng.pick(&["eu-west-1", "us-east-1", "ap-northeast-1", "sa-east-1"]);
    let mut config = J::obj(vec![]);
    if rng.chance(0.6) {
        config.set("githubToken", J::Str(format!("ghp_{}", alnum(rng, 36))));
    }
    config.set(
        "apiUrl",
        J::Str(format!("https://api.{slug}.taskboard.app/v1")),
    );
    config.set("region", J::str(region));
    config.set("retries", J::Int(rng.between(0, 6)));
    config.set(
        "featureFlags",
        J::obj(vec![
            ("newBoard", J::Bool(rng.chance(0.5))),
            ("betaSearch", J::Bool(rng.chance(0.3))),
            ("maxUploadMb", J::Int(rng.between(1, 100))),
        ]),
    );
    if hostile_field == 1 {
        let text = b.hostile(rng);
        config.set("banner", text);
    }
    j.set("config", config);
    if rng.chance(0.7) {
        j.set("isActive", J::Bool(rng.chance(0.8)));
    }
    let created = rng.between(T_START, T_END);
    let as_number = rng.chance(0.5);
    let stamp = |ms: i64| {
        if as_number {
            J::Int(ms)
        } else {
            J::Str(iso(ms))
        }
    };
    if rng.chance(0.8) {
        j.set("createdAt", stamp(created));
    }
    if rng.chance(0.7) {
        let updated = rng.between(created, created + 200 * DAY_MS);
        j.set("updatedAt", stamp(updated));
        b.updated_ms = Some(updated);
    }
    b.json = j;
    b
}

const ENV_VARIANTS: usize = 16;

fn environment_fault(variant: usize, rng: &mut Rng, j: &mut J) -> Injected {
    use Code as C;
    use FaultKind as F;
    match variant {
        0 => {
            j.remove("name");
            injected(F::MissingRequired, "name", C::Missing)
        }
        1 => {
            j.set("name", J::Null);
            injected(F::NullRequired, "name", C::Missing)
        }
        2 => {
            j.set("name", J::Int(42));
            injected(F::WrongType, "name", C::Type)
        }
        3 => {
            j.set("name", J::str(""));
            injected(F::Empty, "name", C::Length)
        }
        4 => {
            j.set("name", J::Str("n".repeat(201)));
            injected(F::TooLong, "name", C::Length)
        }
        5 => {
            j.set("description", J::Str("d".repeat(2001)));
            injected(F::TooLong, "description", C::Length)
        }
        6 => {
            j.remove("config");
            injected(F::MissingRequired, "config", C::Missing)
        }
        7 => {
            j.set("isActive", J::str("true"));
            injected(F::WrongType, "isActive", C::Type)
        }
        8 => {
            j.set("createdAt", J::str("Invalid Date"));
            injected(F::BadTimestamp, "createdAt", C::Timestamp)
        }
        9 => {
            // Beyond JavaScript's Date range (±8.64e15 ms).
            j.set("updatedAt", J::Int(8_640_000_000_000_001));
            injected(F::BadTimestamp, "updatedAt", C::Timestamp)
        }
        10 => {
            j.set("createdAt", J::Bool(true));
            injected(F::WrongType, "createdAt", C::Timestamp)
        }
        11 => {
            j.remove("id");
            id_fault(F::IdMissing, "id")
        }
        12 => {
            let old = id_text(j);
            j.set("id", J::obj(vec![("slug", J::Str(old))]));
            id_fault(F::IdWrongType, "id")
        }
        13 => {
            j.set("id", J::Float(1.5));
            id_fault(F::IdWrongType, "id")
        }
        14 => {
            *j = J::Str(id_text(j));
            whole_fault(F::NotAnObject, C::Shape, false)
        }
        _ => {
            j.set("isActive", J::Int(rng.between(0, 2)));
            injected(F::WrongType, "isActive", C::Type)
        }
    }
}

fn gen_preferences(rng: &mut Rng, hostile: bool) -> Built {
    let mut b = Built::new();
    let theme = *rng.pick(&["light", "dark", "auto", "system"]);
    if theme == "auto" {
        b.repair(Code::LegacyEnum);
    }
    let mut j = J::obj(vec![("theme", J::str(theme))]);
    if rng.chance(0.8) {
        j.set(
            "language",
            J::str(*rng.pick(&["en", "fr-FR", "de-DE", "ja", "pt-BR", "en-GB"])),
        );
    }
    j.set("fontSize", J::Int(rng.between(12, 21)));
    j.set(
        "notifications",
        J::obj(vec![
            ("email", J::Bool(rng.chance(0.5))),
            ("push", J::Bool(rng.chance(0.5))),
            ("digest", J::str(*rng.pick(&["daily", "weekly", "never"]))),
        ]),
    );
    j.set("sidebarCollapsed", J::Bool(rng.chance(0.3)));
    if hostile {
        // The whole value is a json column: any escape in it is repaired.
        let text = b.hostile(rng);
        j.set("lastSearch", text);
    }
    b.json = j;
    b
}

const PREFS_VARIANTS: usize = 6;

/// Breaks the preferences; returns the value to store and the fault.
fn prefs_fault(variant: usize, rng: &mut Rng, j: &mut J) -> (String, Result<Expected, Injected>) {
    use Code as C;
    use FaultKind as F;
    let what = match variant {
        0 => {
            j.set("theme", J::str("blue"));
            injected(F::BadEnum, "theme", C::Enum)
        }
        1 => {
            j.set("theme", J::Int(1));
            injected(F::WrongType, "theme", C::Type)
        }
        2 => {
            j.set("language", J::str("English"));
            injected(F::BadPattern, "language", C::Regex)
        }
        3 => {
            j.set("language", J::Arr(vec![J::str("en")]));
            injected(F::WrongType, "language", C::Type)
        }
        4 => {
            let text = truncate_json(rng, &j.text());
            return (text, Err(whole_fault(F::NotJson, C::NotJson, false)));
        }
        _ => {
            *j = J::Arr(vec![j.clone()]);
            whole_fault(F::NotAnObject, C::Shape, true)
        }
    };
    (j.text(), Err(what))
}

const FORM_NAMES: &[&str] = &[
    "newTask",
    "settings-profile",
    "settings-notifications",
    "environment-new",
    "login",
    "feedback",
    "import-csv",
    "bulk-edit",
];

fn gen_form(rng: &mut Rng, name: &str, hostile: bool) -> Built {
    let mut b = Built::new();
    let mut fields = if name.starts_with("settings") || name == "login" {
        J::obj(vec![
            ("displayName", J::str(*rng.pick(NAMES))),
            (
                "email",
                J::Str(format!("{}@example.com", rng.pick(NAMES).to_lowercase())),
            ),
            ("bio", J::Str(paragraphs(rng, 1, 2))),
        ])
    } else {
        J::obj(vec![
            ("title", J::Str(task_title(rng))),
            ("description", J::Str(paragraphs(rng, 1, 3))),
            ("priority", J::str(*rng.pick(&["low", "high"]))),
            ("tags", J::Arr(vec![J::str(*rng.pick(TAGS))])),
        ])
    };
    if hostile {
        let text = b.hostile(rng);
        fields.set("note", text);
    }
    let mut j = J::obj(vec![("fields", fields)]);
    if rng.chance(0.85) {
        j.set("savedAt", J::Int(rng.between(T_START, T_END)));
    }
    b.json = j;
    b
}

const FORM_VARIANTS: usize = 6;
const FORM_TOO_LONG_NAME: usize = 4;

fn form_fault(variant: usize, rng: &mut Rng, j: &mut J) -> (String, Result<Expected, Injected>) {
    use Code as C;
    use FaultKind as F;
    let what = match variant {
        0 => {
            let text = truncate_json(rng, &j.text());
            return (text, Err(whole_fault(F::NotJson, C::NotJson, false)));
        }
        1 => {
            j.set("savedAt", J::Str(iso(rng.between(T_START, T_END))));
            injected(F::WrongType, "savedAt", C::Timestamp)
        }
        2 => {
            j.set("savedAt", J::Int(100_000_000_000_000_000));
            injected(F::BadTimestamp, "savedAt", C::Timestamp)
        }
        3 => {
            *j = J::Arr(vec![j.clone()]);
            whole_fault(F::NotAnObject, C::Shape, true)
        }
        FORM_TOO_LONG_NAME => injected(F::TooLong, "form_name", C::Length),
        _ => {
            j.set("savedAt", J::Str(rng.between(T_START, T_END).to_string()));
            injected(F::WrongType, "savedAt", C::Timestamp)
        }
    };
    (j.text(), Err(what))
}

// ---------------------------------------------------------------------------------------------
// Jotter records and their faults.
// ---------------------------------------------------------------------------------------------

fn gen_note(rng: &mut Rng, created: i64, hostile: bool) -> Built {
    let mut b = Built::new();
    let mut j = J::obj(vec![]);
    let hostile_field = if hostile { rng.below(3) } else { 3 };
    if hostile_field == 0 {
        let text = b.hostile(rng);
        j.set("title", text);
    } else if rng.chance(0.8) {
        j.set("title", J::Str(task_title(rng)));
    }
    let body = if hostile_field == 1 {
        b.hostile(rng)
    } else if rng.chance(0.01) {
        J::Str(paragraphs(rng, 20, 10))
    } else {
        J::Str(paragraphs(rng, 3, 4))
    };
    let words = match &body {
        J::Str(s) | J::RawStr(s) => s.split_whitespace().count() as i64,
        _ => 0,
    };
    j.set("body", body);
    if rng.chance(0.3) {
        j.set("pinned", J::Bool(rng.chance(0.5)));
    }
    if rng.chance(0.5) {
        let color = *rng.pick(&["none", "red", "yellow", "green", "blue", "", "orange"]);
        if color.is_empty() || color == "orange" {
            b.repair(Code::LegacyEnum);
        }
        j.set("color", J::str(color));
    }
    if rng.chance(0.6) {
        j.set("wordCount", J::Int(words));
    }
    j.set("created", J::Int(created));
    if rng.chance(0.7) {
        let modified = rng.between(created, created + 90 * DAY_MS);
        j.set("modified", J::Int(modified));
        b.updated_ms = Some(modified);
    } else {
        b.repair(Code::DefaultFrom);
        b.updated_ms = Some(created);
    }
    if hostile_field == 2 {
        // A label cannot hold a hostile string (its pattern refuses it): the rating gets an
        // odd but valid number instead, and the body an escape.
        j.set("rating", J::Float(4.5));
        let text = b.hostile(rng);
        j.set("body", text);
    } else {
        if rng.chance(0.4) {
            let labels = (0..=rng.below(2))
                .map(|_| J::str(*rng.pick(LABELS)))
                .collect();
            j.set("labels", J::Arr(labels));
        }
        if rng.chance(0.2) {
            j.set("rating", J::Float(rng.between(0, 11) as f64 / 2.0));
        }
    }
    b.json = j;
    b
}

const NOTE_VARIANTS: usize = 22;

fn note_fault(variant: usize, rng: &mut Rng, j: &mut J) -> Injected {
    use Code as C;
    use FaultKind as F;
    match variant {
        0 => {
            j.remove("body");
            injected(F::MissingRequired, "body", C::Missing)
        }
        1 => {
            j.set("body", J::Null);
            injected(F::NullRequired, "body", C::Missing)
        }
        2 => {
            j.set("body", J::Int(42));
            injected(F::WrongType, "body", C::Type)
        }
        3 => {
            j.set("title", J::Str("t".repeat(301)));
            injected(F::TooLong, "title", C::Length)
        }
        4 => {
            j.set("pinned", J::str("true"));
            injected(F::WrongType, "pinned", C::Type)
        }
        5 => {
            j.set("color", J::str("purple"));
            injected(F::BadEnum, "color", C::Enum)
        }
        6 => {
            j.set("wordCount", J::Int(-1));
            injected(F::OutOfRange, "wordCount", C::Range)
        }
        7 => {
            j.set("wordCount", J::Int(1_000_001));
            injected(F::OutOfRange, "wordCount", C::Range)
        }
        8 => {
            j.set("wordCount", J::Float(12.5));
            injected(F::NotWholeNumber, "wordCount", C::Type)
        }
        9 => {
            j.set("wordCount", J::Lit(BEYOND_2_53));
            injected(F::UnsafeInteger, "wordCount", C::Type)
        }
        10 => {
            j.remove("created");
            injected(F::MissingRequired, "created", C::Missing)
        }
        11 => {
            j.set("created", J::Str(iso(rng.between(T_START, T_END))));
            injected(F::WrongType, "created", C::Timestamp)
        }
        12 => {
            j.set("created", J::Int(10_000_000_000_000_000));
            injected(F::BadTimestamp, "created", C::Timestamp)
        }
        13 => {
            j.set("modified", J::str("yesterday"));
            injected(F::WrongType, "modified", C::Timestamp)
        }
        14 => {
            let labels = (0..21).map(|i| J::Str(format!("l{i}"))).collect();
            j.set("labels", J::Arr(labels));
            injected(F::TooManyItems, "labels", C::Items)
        }
        15 => {
            j.set("labels", J::Arr(vec![J::str("work"), J::str("Work Stuff")]));
            injected(F::BadPattern, "labels", C::Regex)
        }
        16 => {
            j.set("labels", J::Arr(vec![J::Int(7)]));
            injected(F::ItemWrongType, "labels", C::Type)
        }
        17 => {
            j.set("rating", J::Float(7.5));
            injected(F::OutOfRange, "rating", C::Range)
        }
        18 => {
            j.set("rating", J::str("5"));
            injected(F::WrongType, "rating", C::Type)
        }
        19 => {
            j.set("archived", J::Bool(true));
            injected(F::UnknownField, "archived", C::Unknown)
        }
        20 => {
            *j = J::str("deleted");
            whole_fault(F::NotAnObject, C::Shape, true)
        }
        _ => {
            j.set("labels", J::str("work,home"));
            injected(F::WrongType, "labels", C::Type)
        }
    }
}

fn gen_account(rng: &mut Rng, hostile: bool) -> Built {
    let mut b = Built::new();
    let name = rng.pick(&["jane.doe", "ngozi", "eun-ji.park", "zoe+jotter"]);
    let mut j = J::obj(vec![("email", J::Str(format!("{name}@example.com")))]);
    if rng.chance(0.6) {
        j.set(
            "homepage",
            J::Str(format!("https://{}.example.org/", hex(rng, 6))),
        );
    }
    if hostile {
        // Sensitive, so never quoted; its escape is still repaired.
        let (text, escapes) = hostile_string(rng);
        if escapes {
            b.repair(Code::Escaped);
        }
        j.set("apiKey", text);
    } else if rng.chance(0.7) {
        j.set("apiKey", J::Str(format!("jk_live_{}", hex(rng, 32))));
    }
    if rng.chance(0.5) {
        j.set("fontSize", J::Int(rng.between(10, 25)));
    }
    if rng.chance(0.8) {
        j.set("lastSync", J::Int(rng.between(T_START, T_END) / 1000));
    }
    b.json = j;
    b
}

const ACCOUNT_VARIANTS: usize = 9;

fn account_fault(variant: usize, rng: &mut Rng, j: &mut J) -> (String, Result<Expected, Injected>) {
    use Code as C;
    use FaultKind as F;
    let what = match variant {
        0 => {
            j.set("email", J::str("jane.doe@"));
            injected(F::BadEmail, "email", C::Email)
        }
        1 => {
            j.remove("email");
            injected(F::MissingRequired, "email", C::Missing)
        }
        2 => {
            j.set("homepage", J::str("htp//jane.example.org"));
            injected(F::BadUrl, "homepage", C::Url)
        }
        3 => {
            j.set("fontSize", J::Int(72));
            injected(F::OutOfRange, "fontSize", C::Range)
        }
        4 => {
            j.set("fontSize", J::str("14"));
            injected(F::WrongType, "fontSize", C::Type)
        }
        5 => {
            // Date.now() (milliseconds) where the spec wants seconds.
            j.set("lastSync", J::Int(rng.between(T_START, T_END)));
            injected(F::BadTimestamp, "lastSync", C::Timestamp)
        }
        6 => {
            j.set("lastSync", J::Str(iso(rng.between(T_START, T_END))));
            injected(F::WrongType, "lastSync", C::Timestamp)
        }
        7 => {
            // Cut before any secret, so the message quoting the start of it stays clean.
            j.remove("apiKey");
            let text = truncate_json(rng, &j.text());
            return (text, Err(whole_fault(F::NotJson, C::NotJson, false)));
        }
        _ => {
            *j = J::Arr(vec![]);
            whole_fault(F::NotAnObject, C::Shape, true)
        }
    };
    (j.text(), Err(what))
}

fn gen_attachment(rng: &mut Rng, seq: i64, note_id: &str, hostile: bool) -> Built {
    let mut b = Built::new();
    let name = if hostile {
        b.hostile(rng)
    } else {
        J::Str(format!(
            "{}_{}.{}",
            rng.pick(&["IMG", "scan", "Screenshot", "reçu", "会議"]),
            rng.between(1000, 9999),
            rng.pick(&["jpg", "png", "pdf", "heic"])
        ))
    };
    let url = match rng.below(3) {
        0 => format!(
            "https://cdn.jotter.app/a/{}/{}",
            hex(rng, 16),
            rng.between(1, 99_999)
        ),
        1 => format!("blob:https://jotter.app/{}", uuid_v4(rng)),
        _ => "data:text/plain;base64,SGVsbG8sIEpvdHRlciE=".to_owned(),
    };
    let mut j = J::obj(vec![
        ("seq", J::Int(seq)),
        ("noteId", J::str(note_id)),
        ("name", name),
        ("url", J::Str(url)),
    ]);
    if rng.chance(0.6) {
        j.set(
            "meta",
            J::obj(vec![
                ("size", J::Int(rng.between(100, 20_000_000))),
                (
                    "mime",
                    J::str(*rng.pick(&["image/jpeg", "image/png", "application/pdf"])),
                ),
            ]),
        );
    }
    b.json = j;
    b
}

const ATTACHMENT_VARIANTS: usize = 14;

fn attachment_fault(variant: usize, rng: &mut Rng, j: &mut J) -> Injected {
    use Code as C;
    use FaultKind as F;
    match variant {
        0 => {
            j.remove("seq");
            id_fault(F::IdMissing, "seq")
        }
        1 => {
            j.set("seq", J::Float(3.5));
            id_fault(F::IdWrongType, "seq")
        }
        2 => {
            j.set("seq", J::obj(vec![("n", J::Int(3))]));
            id_fault(F::IdWrongType, "seq")
        }
        3 => {
            j.set("seq", J::str(""));
            id_fault(F::IdWrongType, "seq")
        }
        4 => {
            j.set("seq", J::Lit(BEYOND_2_53));
            id_fault(F::UnsafeInteger, "seq")
        }
        5 => {
            j.set("noteId", J::Int(rng.between(T_START, T_END)));
            injected(F::WrongType, "noteId", C::Type)
        }
        6 => {
            j.remove("noteId");
            injected(F::MissingRequired, "noteId", C::Missing)
        }
        7 => {
            j.set("name", J::str(""));
            injected(F::Empty, "name", C::Length)
        }
        8 => {
            j.set("name", J::Str(format!("{}.jpg", "a".repeat(252))));
            injected(F::TooLong, "name", C::Length)
        }
        9 => {
            j.set("url", J::str("not a url"));
            injected(F::BadUrl, "url", C::Url)
        }
        10 => {
            j.remove("url");
            injected(F::MissingRequired, "url", C::Missing)
        }
        11 => {
            *j = J::str("IMG_0001.jpg");
            whole_fault(F::NotAnObject, C::Shape, false)
        }
        12 => {
            j.set("name", J::Null);
            injected(F::NullRequired, "name", C::Missing)
        }
        _ => {
            j.set("url", J::Bool(false));
            injected(F::WrongType, "url", C::Type)
        }
    }
}

fn gen_draft(rng: &mut Rng, note_ms: i64, hostile: bool) -> Built {
    let mut b = Built::new();
    let text = if hostile {
        b.hostile(rng)
    } else {
        J::Str(paragraphs(rng, 2, 3))
    };
    let at = rng.between(note_ms, note_ms + 30 * DAY_MS);
    let at = if rng.chance(0.5) {
        J::Int(at / 1000)
    } else {
        J::Str(iso(at))
    };
    b.json = J::obj(vec![("text", text), ("at", at)]);
    b
}

const DRAFT_VARIANTS: usize = 7;

fn draft_fault(variant: usize, rng: &mut Rng, j: &mut J) -> (String, Result<Expected, Injected>) {
    use Code as C;
    use FaultKind as F;
    let what = match variant {
        0 => {
            j.remove("text");
            injected(F::MissingRequired, "text", C::Missing)
        }
        1 => {
            j.set("text", J::Int(5));
            injected(F::WrongType, "text", C::Type)
        }
        2 => {
            // Milliseconds where the spec wants seconds: beyond year 9999.
            j.set("at", J::Int(rng.between(T_START, T_END)));
            injected(F::BadTimestamp, "at", C::Timestamp)
        }
        3 => {
            j.set("at", J::str("2023-02-29T08:00:00Z"));
            injected(F::BadTimestamp, "at", C::Timestamp)
        }
        4 => {
            let text = truncate_json(rng, &j.text());
            return (text, Err(whole_fault(F::NotJson, C::NotJson, false)));
        }
        5 => {
            *j = J::str("just the text");
            whole_fault(F::NotAnObject, C::Shape, true)
        }
        _ => {
            j.set("at", J::Null);
            injected(F::NullRequired, "at", C::Missing)
        }
    };
    (j.text(), Err(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sample_other_seed_other_sample() {
        let mut o = SampleOptions::new(LegacyApp::Taskboard);
        o.target_bytes = 50_000;
        let a = generate(&o);
        let b = generate(&o);
        assert_eq!(a.pairs, b.pairs);
        assert_eq!(a.manifest.records, b.manifest.records);
        o.seed = 1;
        assert_ne!(generate(&o).pairs, a.pairs);
    }

    #[test]
    fn js_strings_are_written_as_json_stringify_writes_them() {
        let lone = from_units("a", &[0xD800], "b");
        let mut out = String::new();
        write_js_string(&mut out, &lone, Units::Stringify);
        assert_eq!(out, "\"a\\ud800b\"");
        out.clear();
        write_js_string(&mut out, &lone, Units::OldEngine);
        assert_eq!(
            out, "\"a\u{FFFF}D800b\"",
            "an old engine stored the unit raw"
        );
        out.clear();
        let text = LosslessString::from_unicode("q\"\\\n\0\u{1}\u{FFFF}é");
        write_js_string(&mut out, text.as_escaped(), Units::Stringify);
        assert_eq!(out, "\"q\\\"\\\\\\n\\u0000\\u0001\u{FFFF}FFFFé\"");
        assert!(LosslessString::from_escaped(out).is_ok());
    }

    #[test]
    fn truncated_json_is_never_json_and_keeps_escapes_whole() {
        let mut rng = Rng::new(7);
        let text = J::obj(vec![(
            "a",
            J::RawStr(from_units("x", &[0xD800, 0xD800], "y")),
        )])
        .text();
        for _ in 0..200 {
            let cut = truncate_json(&mut rng, &text);
            assert!(LosslessString::from_escaped(cut.clone()).is_ok(), "{cut:?}");
            assert!(
                ferry_core::pipeline::parse_json(&cut).is_err(),
                "{cut:?} parses"
            );
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let id = uuid_v4(&mut rng);
            let parsed = uuid::Uuid::try_parse(&id).map(|u| u.get_version_num());
            assert_eq!(parsed, Ok(4), "{id}");
            assert_eq!(id, id.to_lowercase());
        }
    }

    #[test]
    fn generated_values_are_well_formed_escaped_text() {
        for app in [LegacyApp::Taskboard, LegacyApp::Jotter] {
            let mut o = SampleOptions::new(app);
            o.target_bytes = 200_000;
            let s = generate(&o);
            assert!(
                s.pairs
                    .iter()
                    .all(|(k, v)| !k.as_escaped().is_empty() && !v.as_escaped().is_empty())
            );
            let bytes: u64 = s
                .pairs
                .iter()
                .map(|(k, v)| 2 * (k.utf16_len() + v.utf16_len()) as u64)
                .sum();
            assert_eq!(bytes, s.manifest.bytes);
        }
    }

    #[test]
    fn pairs_json_gives_the_browser_the_exact_strings() {
        // Why: the demo loads samples over HTTP; a lone surrogate turned into U+FFFD on the way
        // would quietly drop the hostile cases from every demo and browser benchmark.
        let key = LosslessString::from_utf16(&[0x6B, 0xD800]);
        let value = LosslessString::from_utf16(&[0x22, 0x5C, 0x0, 0x1, 0xFFFF, 0xDC00, 0xE9]);
        let text = pairs_json(&[(key, value)]);
        assert_eq!(
            text,
            "[[\"k\\ud800\",\"\\\"\\\\\\u0000\\u0001\\uffff\\udc00é\"]]"
        );
        for app in [LegacyApp::Taskboard, LegacyApp::Jotter] {
            let mut o = SampleOptions::new(app);
            o.target_bytes = 200_000;
            let sample = generate(&o);
            assert!(
                sample
                    .pairs
                    .iter()
                    .any(|(k, v)| k.has_escapes() || v.has_escapes())
            );
            let text = pairs_json(&sample.pairs);
            assert!(!text.contains(['\0', lossless::ESCAPE]), "{app:?}");
            // prepare_json turns the `\uXXXX` escapes back into the escaped form.
            let back: Vec<(String, String)> =
                serde_json::from_str(&lossless::prepare_json(&text)).unwrap();
            let want: Vec<(String, String)> = sample
                .pairs
                .iter()
                .map(|(k, v)| (k.as_escaped().to_owned(), v.as_escaped().to_owned()))
                .collect();
            assert_eq!(back, want, "{app:?}");
        }
    }

    #[test]
    fn bulk_records_gives_that_many_bulk_records() {
        for (app, kind) in [
            (LegacyApp::Taskboard, "tasks"),
            (LegacyApp::Jotter, "notes"),
        ] {
            for records in [0, 3, 250] {
                let mut o = SampleOptions::new(app);
                o.bulk_records = Some(records);
                o.target_bytes = 0;
                let got = generate(&o)
                    .manifest
                    .records
                    .iter()
                    .filter(|r| r.kind == kind)
                    .count();
                assert_eq!(got, records as usize, "{app:?}");
            }
        }
    }
}
