//! `spec infer`: a draft spec guessed from one user's localStorage export.
//!
//! The input is the pairs of an export (a JSON object of key → stored string, or the
//! `[{"key", "value"}]` list `ferry-server backup open` prints; values that are already JSON
//! objects or arrays are accepted as pasted). The output is a draft spec as JSON (it passes
//! `spec check`) and the notes saying what was guessed and what was skipped. Platform-free: no
//! I/O, deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A draft spec and the notes on what was guessed.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The draft spec (a Ferry spec document).
    pub spec: Value,
    /// One line per guess or skipped key, for a person.
    pub notes: Vec<String>,
}

/// Why an export could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Not JSON at all.
    #[error("the export is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither layout.
    #[error(
        "the export must be a JSON object of key → value, or the `[{{\"key\": …, \"value\": …}}]` list of `backup open`; found {0}"
    )]
    Shape(String),
}

/// The `(key, value)` pairs of an export, values parsed where they hold JSON.
pub fn read_export(text: &str) -> Result<Vec<(String, Value)>, ExportError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| ExportError::NotJson(e.to_string()))?;
    let mut pairs = Vec::new();
    match doc {
        Value::Object(map) => {
            for (key, value) in map {
                pairs.push((key, stored(value)));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let (Some(Value::String(key)), Some(value)) = (item.get("key"), item.get("value"))
                else {
                    return Err(ExportError::Shape(format!(
                        "element {i} without a string `key` and a `value`"
                    )));
                };
                pairs.push((key.clone(), stored(value.clone())));
            }
        }
        other => return Err(ExportError::Shape(shorten(&other.to_string()))),
    }
    Ok(pairs)
}

/// A stored value: a string holding JSON is parsed, any other string stays a string.
fn stored(value: Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    }
}

fn shorten(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// One kind found: where, and its records.
struct Found {
    name: String,
    source: Value,
    id: IdGuess,
    records: Vec<Map<String, Value>>,
    note: String,
}

enum IdGuess {
    /// `$map_key`, `$key_suffix` or `$singleton`, with the ids seen.
    Pseudo(&'static str, Vec<String>),
    /// Find a unique property among the records.
    Property,
}

/// A prefix family's members: each key's suffix and its record.
type Members = Vec<(String, Map<String, Value>)>;

const SEPARATORS: &[char] = &['.', ':', '/', '_', '-', '|'];

/// Guesses a draft spec from an export's pairs.
pub fn infer(pairs: &[(String, Value)]) -> Draft {
    let mut notes = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    // Prefix families: keys sharing everything up to their last separator, each holding one
    // object of a common shape: at least two of them, or one whose suffix is an id.
    let mut families: BTreeMap<String, Members> = BTreeMap::new();
    for (key, value) in pairs {
        if let (Value::Object(record), Some(pos)) = (value, key.rfind(SEPARATORS)) {
            let (prefix, suffix) = key.split_at(pos + 1);
            if !suffix.is_empty() {
                families
                    .entry(prefix.to_owned())
                    .or_default()
                    .push((suffix.to_owned(), record.clone()));
            }
        }
    }
    families.retain(|_, members| {
        // One key is a family too when its suffix is an id (a number or a UUID).
        let id_like = members.iter().all(|(suffix, _)| looks_like_id(suffix));
        (members.len() >= 2 || id_like)
            && similar_shapes(&members.iter().map(|(_, r)| r).collect::<Vec<_>>())
    });
    // Overlapping prefixes would claim the same keys: the longer (more specific) one stays.
    let longer: Vec<String> = families.keys().cloned().collect();
    families.retain(|p, _| {
        !longer
            .iter()
            .any(|q| q.len() > p.len() && q.starts_with(p.as_str()))
    });
    let in_family = |key: &str| {
        families
            .keys()
            .any(|p| key.starts_with(p.as_str()) && key.len() > p.len())
    };
    let mut used_as_index = BTreeSet::new();
    for (prefix, members) in &families {
        let suffixes: BTreeSet<&str> = members.iter().map(|(s, _)| s.as_str()).collect();
        let mut source = json!({ "prefix": prefix });
        let mut note = format!("one record per key `{prefix}<id>` ({} keys)", members.len());
        // An index: another key holding an array of ids, most of them suffixes of the family.
        for (key, value) in pairs {
            if let Value::Array(ids) = value {
                let texts: Vec<String> = ids.iter().filter_map(id_text).collect();
                if !texts.is_empty()
                    && texts.len() == ids.len()
                    && texts
                        .iter()
                        .filter(|t| suffixes.contains(t.as_str()))
                        .count()
                        * 2
                        >= texts.len()
                    && !in_family(key)
                {
                    source["index"] = json!(key);
                    note.push_str(&format!("; `{key}` lists the live ids (an index, guessed)"));
                    used_as_index.insert(key.clone());
                    break;
                }
            }
        }
        found.push(Found {
            name: name_of(prefix, ""),
            source,
            id: IdGuess::Pseudo(
                "$key_suffix",
                members.iter().map(|(s, _)| s.clone()).collect(),
            ),
            records: members.iter().map(|(_, r)| r.clone()).collect(),
            note,
        });
    }
    for (key, value) in pairs {
        if in_family(key) || used_as_index.contains(key) {
            continue;
        }
        walk(key, "", value, 0, &mut found, &mut notes);
    }
    let app = app_name(pairs);
    let mut kinds = Vec::new();
    let mut names = BTreeSet::new();
    for f in found {
        let mut name = f.name.clone();
        let mut n = 2;
        while !names.insert(name.clone()) {
            name = format!("{}_{n}", f.name);
            n += 1;
        }
        kinds.push(kind(name, f, &mut notes));
    }
    if kinds.is_empty() {
        notes.push("no key holds records (objects or arrays of objects): the draft has no kinds and will not pass `spec check`".to_owned());
    }
    let spec = json!({
        "$schema": "./ferry-spec.schema.json",
        "ferry_spec": 1,
        "app": app,
        "version": "1",
        "description": "Draft made by `ferry-server spec infer` from one user's localStorage: every type, id, scope, rule and conflict policy is a guess from that one sample. Review each kind (its description says what was guessed), then run `spec check` and `spec ddl`.",
        "kinds": kinds,
    });
    Draft { spec, notes }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn pointer_escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

fn source(layout: &str, key: &str, path: &str) -> Value {
    let mut s = json!({ layout: key });
    if !path.is_empty() {
        s["path"] = json!(path);
    }
    s
}

fn objects(items: &[Value]) -> Option<Vec<Map<String, Value>>> {
    if items.is_empty() {
        return None;
    }
    items.iter().map(|v| v.as_object().cloned()).collect()
}

/// A map keyed by id: at least two entries, all objects, sharing most of their properties or
/// keyed by id-like keys.
fn is_map(obj: &Map<String, Value>) -> bool {
    if obj.len() < 2 || !obj.values().all(Value::is_object) {
        return false;
    }
    if obj.keys().all(|k| looks_like_id(k)) {
        return true;
    }
    similar_shapes(
        &obj.values()
            .filter_map(Value::as_object)
            .collect::<Vec<_>>(),
    )
}

/// Records of one kind: their common properties are at least half of the largest one's.
fn similar_shapes(records: &[&Map<String, Value>]) -> bool {
    let sets: Vec<BTreeSet<&String>> = records.iter().map(|o| o.keys().collect()).collect();
    let Some(first) = sets.first() else {
        return false;
    };
    let common = sets.iter().skip(1).fold(first.clone(), |acc, s| {
        acc.intersection(s).copied().collect()
    });
    let largest = sets.iter().map(BTreeSet::len).max().unwrap_or(0);
    largest > 0 && common.len() * 2 >= largest
}

fn looks_like_id(k: &str) -> bool {
    is_uuid(k) || (!k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

fn walk(
    key: &str,
    path: &str,
    value: &Value,
    depth: usize,
    found: &mut Vec<Found>,
    notes: &mut Vec<String>,
) {
    let at = if path.is_empty() {
        format!("`{key}`")
    } else {
        format!("`{key}` at `{path}`")
    };
    match value {
        Value::Array(items) => match objects(items) {
            Some(records) => found.push(Found {
                name: name_of(key, path),
                source: source("array", key, path),
                id: IdGuess::Property,
                note: format!("{at} holds an array of {} record(s)", records.len()),
                records,
            }),
            None => notes.push(format!(
                "skipped {at}: an array of {} value(s) that are not all objects (not records; map it as a `json` or `array` field of another kind if it matters)",
                items.len()
            )),
        },
        Value::Object(obj) if is_map(obj) => {
            let ids: Vec<String> = obj.keys().cloned().collect();
            found.push(Found {
                name: name_of(key, path),
                source: source("map", key, path),
                id: IdGuess::Pseudo("$map_key", ids),
                note: format!("{at} holds an object of {} record(s) keyed by id (a map, guessed from their common shape)", obj.len()),
                records: obj.values().filter_map(|v| v.as_object().cloned()).collect(),
            });
        }
        Value::Object(obj) => {
            let containers = obj
                .values()
                .filter(|v| v.is_object() || v.as_array().is_some_and(|a| objects(a).is_some()))
                .count();
            let scalars = obj.len() - containers;
            let has_list = obj.values().any(|v| v.as_array().is_some_and(|a| objects(a).is_some()));
            if depth < 4 && containers > 0 && (has_list || scalars <= 1) {
                for (member, inner) in obj {
                    let inner_path = format!("{path}/{}", pointer_escape(member));
                    let is_container = inner.is_object() || inner.as_array().is_some_and(|a| objects(a).is_some());
                    if is_container {
                        walk(key, &inner_path, inner, depth + 1, found, notes);
                    } else {
                        notes.push(format!(
                            "skipped `{key}` at `{inner_path}`: {} beside the records of a state container (e.g. a persisted-state version)",
                            shorten(&inner.to_string())
                        ));
                    }
                }
            } else if obj.is_empty() {
                notes.push(format!("skipped {at}: an empty object"));
            } else {
                found.push(Found {
                    name: name_of(key, path),
                    source: source("object", key, path),
                    id: IdGuess::Pseudo("$singleton", Vec::new()),
                    note: format!("{at} holds one object (one record per user)"),
                    records: vec![obj.clone()],
                });
            }
        }
        other => notes.push(format!(
            "skipped {at}: a single value {} (not records: a flag, a cache or a UI state, guessed)",
            shorten(&other.to_string())
        )),
    }
}

/// A lowercase identifier from a key and path: `pantry-store` + `/state/items` →
/// `pantry_store_items`.
fn name_of(key: &str, path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    let base = if last.is_empty() {
        key.to_owned()
    } else {
        format!("{key}_{last}")
    };
    identifier(&base, "records")
}

fn identifier(text: &str, fallback: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_owned();
    if out.is_empty() {
        fallback.to_owned()
    } else if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("{fallback}_{out}")
    } else {
        out
    }
}

/// The app's name: the part before the first separator that most keys share.
fn app_name(pairs: &[(String, Value)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in pairs {
        let head = key.split(SEPARATORS).next().unwrap_or(key);
        *counts.entry(head).or_default() += 1;
    }
    let best = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(h, _)| *h)
        .unwrap_or("app");
    identifier(best, "app")
}

#[derive(Clone, Copy, PartialEq)]
enum Guess {
    String,
    Integer,
    Number,
    Boolean,
    EpochMs,
    EpochS,
    Iso,
    StringArray,
    Json,
}

const TIME_WORDS: &[&str] = &[
    "at",
    "time",
    "date",
    "created",
    "updated",
    "modified",
    "ts",
    "timestamp",
    "when",
    "due",
    "sync",
    "seen",
];

fn time_named(prop: &str) -> bool {
    let snake = identifier(prop, "x");
    snake.split('_').any(|w| TIME_WORDS.contains(&w))
}

fn guess(prop: &str, values: &[&Value]) -> (Guess, Option<String>) {
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    if present.is_empty() {
        return (
            Guess::Json,
            Some(format!(
                "`{prop}` is always null here: typed `json`, guessed"
            )),
        );
    }
    if present.iter().all(|v| v.is_boolean()) {
        return (Guess::Boolean, None);
    }
    if present.iter().all(|v| v.is_i64() || v.is_u64()) {
        let nums: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
        if nums.iter().all(|n| (1e12..1e13).contains(n)) {
            return (
                Guess::EpochMs,
                Some(format!(
                    "`{prop}` looks like milliseconds since 1970 (by magnitude)"
                )),
            );
        }
        if time_named(prop) && nums.iter().all(|n| (1e9..1e10).contains(n)) {
            return (
                Guess::EpochS,
                Some(format!(
                    "`{prop}` looks like seconds since 1970 (by name and magnitude)"
                )),
            );
        }
        return (Guess::Integer, None);
    }
    if present.iter().all(|v| v.is_number()) {
        return (Guess::Number, None);
    }
    if present.iter().all(|v| {
        v.as_str()
            .is_some_and(|s| crate::timestamp::parse_iso8601(s).is_ok())
    }) {
        return (
            Guess::Iso,
            Some(format!("`{prop}` holds ISO 8601 timestamps")),
        );
    }
    if present.iter().all(|v| v.is_string()) {
        return (Guess::String, None);
    }
    if present
        .iter()
        .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return (Guess::StringArray, None);
    }
    let mixed = !present.iter().all(|v| v.is_object() || v.is_array());
    (
        Guess::Json,
        mixed.then(|| format!("`{prop}` has values of several types: typed `json` (kept whole), guessed; a `legacy` map may repair them into one type")),
    )
}

fn kind(name: String, f: Found, notes: &mut Vec<String>) -> Value {
    let mut guessed = vec![f.note.clone()];
    // Properties in order of first appearance.
    let mut props: Vec<String> = Vec::new();
    for r in &f.records {
        for k in r.keys() {
            if !props.contains(k) {
                props.push(k.clone());
            }
        }
    }
    let (id, id_prop) = match &f.id {
        IdGuess::Pseudo(from, ids) => {
            let (scope, why) = scope_of(ids.iter().map(String::as_str));
            if *from != "$singleton" {
                guessed.push(format!("ids are {why}: scope `{scope}`"));
            }
            (
                id_doc(
                    from,
                    if *from == "$singleton" {
                        "global"
                    } else {
                        scope
                    },
                ),
                None,
            )
        }
        IdGuess::Property => {
            let candidate = id_candidate(&props, &f.records);
            match candidate {
                Some((prop, unique)) => {
                    let ids: Vec<String> = f
                        .records
                        .iter()
                        .filter_map(|r| r.get(&prop).and_then(id_text))
                        .collect();
                    let (scope, why) = scope_of(ids.iter().map(String::as_str));
                    guessed.push(if unique {
                        format!("id `{prop}` (unique across the records; {why}: scope `{scope}`)")
                    } else {
                        format!("id `{prop}` is NOT unique across these records, the best there is: check it (duplicates follow the `duplicates` rule)")
                    });
                    (id_doc(&prop, scope), Some(prop))
                }
                None => {
                    guessed.push(
                        "no property could be the id: `id` named, add one to the app's records"
                            .to_owned(),
                    );
                    (id_doc("id", "global"), None)
                }
            }
        }
    };
    let mut fields = Vec::new();
    let mut columns: BTreeSet<String> = ["id", "user_id", "legacy_id"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut updated_at = None;
    for prop in &props {
        if Some(prop) == id_prop.as_ref() {
            continue;
        }
        let values: Vec<&Value> = f
            .records
            .iter()
            .map(|r| r.get(prop).unwrap_or(&Value::Null))
            .collect();
        let required = values.iter().all(|v| !v.is_null());
        let (g, note) = guess(prop, &values);
        if let Some(note) = note {
            guessed.push(note);
        }
        let mut column = identifier(prop, "field");
        let base = column.clone();
        let mut n = 2;
        while !columns.insert(column.clone()) {
            column = format!("{base}_{n}");
            n += 1;
        }
        let mut field = json!({ "from": prop, "column": column });
        let ty = match g {
            Guess::String => {
                if let Some(values) = enum_values(&values, f.records.len()) {
                    guessed.push(format!("`{prop}` looks like an enum of {} value(s), guessed from few distinct values: add the values this sample lacks", values.len()));
                    field["values"] = json!(values);
                    "enum"
                } else {
                    "string"
                }
            }
            Guess::Integer => "integer",
            Guess::Number => "number",
            Guess::Boolean => "boolean",
            Guess::EpochMs | Guess::EpochS | Guess::Iso => {
                field["formats"] = json!([match g {
                    Guess::EpochMs => "epoch_ms",
                    Guess::EpochS => "epoch_s",
                    _ => "iso8601",
                }]);
                let snake = identifier(prop, "x");
                if required
                    && updated_at.is_none()
                    && ["updated", "modified", "changed", "edited"]
                        .iter()
                        .any(|w| snake.contains(w))
                {
                    updated_at = Some(column.clone());
                }
                "timestamp"
            }
            Guess::StringArray => {
                field["items"] = json!("string");
                "array"
            }
            Guess::Json => "json",
        };
        field["type"] = json!(ty);
        if required {
            field["required"] = json!(true);
        }
        fields.push(field);
    }
    if fields.is_empty() {
        guessed.push("no property besides the id: the whole record is kept as `json`".to_owned());
        fields.push(json!({ "from": "$value", "column": "record", "type": "json" }));
    }
    let mut kind = json!({
        "name": name,
        "source": f.source,
        "id": id,
        "table": name,
        "fields": fields,
    });
    match updated_at {
        Some(col) => {
            guessed.push(format!(
                "conflict `newest` by `{col}` (guessed from its name)"
            ));
            kind["conflict"] = json!("newest");
            kind["updated_at"] = json!(col);
        }
        None => {
            guessed.push("conflict `skip` (a stored row wins; guessed: no required updated/modified timestamp)".to_owned());
            kind["conflict"] = json!("skip");
        }
    }
    let description = guessed.join("; ");
    notes.push(format!("kind `{name}`: {description}"));
    kind["description"] = json!(description);
    kind
}

fn id_doc(from: &str, scope: &str) -> Value {
    let mut id = json!({ "from": from, "scope": scope });
    if scope == "device" {
        id["legacy_column"] = json!("legacy_id");
    }
    id
}

/// `device` for numbers (counters, `Date.now()`), `global` for UUIDs and other strings.
fn scope_of<'a>(ids: impl Iterator<Item = &'a str>) -> (&'static str, &'static str) {
    let ids: Vec<&str> = ids.collect();
    if !ids.is_empty() && ids.iter().all(|s| is_uuid(s)) {
        ("global", "UUIDs")
    } else if !ids.is_empty()
        && ids
            .iter()
            .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
    {
        ("device", "numbers (counters or Date.now(), per browser)")
    } else {
        (
            "global",
            "strings (names or slugs, taken as the same record on every browser)",
        )
    }
}

/// The id property: present as a string or integer in every record, unique if possible;
/// `id`-like names first.
fn id_candidate(props: &[String], records: &[Map<String, Value>]) -> Option<(String, bool)> {
    let mut best: Option<(String, bool, u8)> = None;
    for prop in props {
        let ids: Option<Vec<String>> = records
            .iter()
            .map(|r| {
                r.get(prop).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                    _ => None,
                })
            })
            .collect();
        let Some(ids) = ids else { continue };
        let unique = ids.iter().collect::<BTreeSet<_>>().len() == ids.len();
        let lower = prop.to_ascii_lowercase();
        let rank = match (unique, lower.as_str()) {
            (true, "id" | "uuid" | "_id") => 5,
            (true, l) if l.ends_with("id") || l.ends_with("key") || l == "seq" => 4,
            (true, _) if ids.iter().all(|s| is_uuid(s)) => 3,
            (true, _) => 1,
            (false, "id" | "uuid" | "_id") => 0,
            _ => continue,
        };
        if best.as_ref().is_none_or(|(_, _, r)| rank > *r) {
            best = Some((prop.clone(), unique, rank));
        }
    }
    best.map(|(p, u, _)| (p, u))
}

/// Few distinct short values over several records: an enum (a guess).
fn enum_values(values: &[&Value], records: usize) -> Option<Vec<String>> {
    let distinct: BTreeSet<&str> = values.iter().filter_map(|v| v.as_str()).collect();
    let fits = records >= 3
        && distinct.len() <= 6
        && distinct.len() < records
        && distinct
            .iter()
            .all(|s| !s.is_empty() && s.len() <= 20 && !s.contains(' '));
    fits.then(|| distinct.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn draft(export: &str) -> Draft {
        let pairs = read_export(export).unwrap();
        let d = infer(&pairs);
        if let Err(e) = Spec::parse(&d.spec.to_string()) {
            panic!(
                "draft refused: {e}\n{}",
                serde_json::to_string_pretty(&d.spec).unwrap()
            );
        }
        d
    }

    fn kind<'a>(d: &'a Draft, name: &str) -> &'a Value {
        d.spec["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no kind {name}: {}", d.spec))
    }

    #[test]
    fn array_of_records_gets_types_ids_timestamps_and_required() {
        let tasks = json!([
            {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "title": "a", "done": false, "status": "todo", "updatedAt": "2024-01-02T03:04:05Z", "tags": ["x"], "n": 1},
            {"id": "6fa459ea-ee8a-3ca4-894e-db77e160355e", "title": "b", "done": true, "status": "done", "updatedAt": "2024-01-03T03:04:05Z", "n": 2.5},
            {"id": "16fd2706-8baf-433b-82eb-8c7fada847da", "title": "c", "done": false, "status": "todo", "updatedAt": "2024-01-04T03:04:05Z", "n": 3},
        ]);
        let export = json!({ "board.tasks": tasks.to_string(), "board.theme": "dark" }).to_string();
        let d = draft(&export);
        let k = kind(&d, "board_tasks");
        assert_eq!(k["source"], json!({"array": "board.tasks"}));
        assert_eq!(k["id"], json!({"from": "id", "scope": "global"}));
        assert_eq!(k["conflict"], "newest");
        assert_eq!(k["updated_at"], "updated_at");
        let fields = k["fields"].as_array().unwrap();
        let f = |c: &str| fields.iter().find(|f| f["column"] == c).unwrap().clone();
        assert_eq!(f("title")["type"], "string");
        assert_eq!(f("done")["type"], "boolean");
        assert_eq!(f("status")["type"], "enum");
        assert_eq!(f("status")["values"], json!(["done", "todo"]));
        assert_eq!(f("updated_at")["formats"], json!(["iso8601"]));
        assert_eq!(f("tags")["type"], "array");
        assert_eq!(f("tags").get("required"), None);
        assert_eq!(f("n")["type"], "number");
        assert_eq!(f("title")["required"], true);
        assert!(
            d.notes.iter().any(|n| n.contains("skipped `board.theme`")),
            "{:?}",
            d.notes
        );
        assert_eq!(d.spec["app"], "board");
    }

    #[test]
    fn map_object_and_prefix_with_device_ids_and_epochs() {
        let export = json!({
            "jotter.notes": {"1700000000000": {"body": "x", "created": 1700000000000_i64, "modified": 1700000001000_i64},
                              "1700000002000": {"body": "y", "created": 1700000002000_i64}},
            "jotter.account": {"email": "a@b.c", "lastSync": 1700000000},
            "jotter.draft.1700000000000": "{\"text\":\"t\",\"at\":1700000000}",
            "jotter.draft.1700000002000": "{\"text\":\"u\",\"at\":1700000001}",
        })
        .to_string();
        let d = draft(&export);
        let notes = kind(&d, "jotter_notes");
        assert_eq!(notes["source"], json!({"map": "jotter.notes"}));
        assert_eq!(notes["id"]["scope"], "device");
        assert_eq!(notes["conflict"], "skip", "modified is not in every record");
        let account = kind(&d, "jotter_account");
        assert_eq!(account["id"]["from"], "$singleton");
        assert_eq!(account["fields"][1]["formats"], json!(["epoch_s"]));
        let drafts = kind(&d, "jotter_draft");
        assert_eq!(drafts["source"], json!({"prefix": "jotter.draft."}));
        assert_eq!(
            drafts["id"],
            json!({"from": "$key_suffix", "scope": "device", "legacy_column": "legacy_id"})
        );
    }

    #[test]
    fn nested_state_container_and_index_key() {
        let export = json!({
            "pantry-store": {"state": {"items": [{"id": 1, "name": "rice"}, {"id": 2, "name": "salt"}], "settings": {"units": "metric", "dark": true}}, "version": 3},
            "recipes.index": "[\"a\",\"b\"]",
            "recipes.item.a": {"title": "A"},
            "recipes.item.b": {"title": "B"},
        })
        .to_string();
        let d = draft(&export);
        assert_eq!(
            kind(&d, "pantry_store_items")["source"],
            json!({"array": "pantry-store", "path": "/state/items"})
        );
        assert_eq!(kind(&d, "pantry_store_items")["id"]["scope"], "device");
        assert_eq!(
            kind(&d, "pantry_store_settings")["source"],
            json!({"object": "pantry-store", "path": "/state/settings"})
        );
        assert_eq!(
            kind(&d, "recipes_item")["source"],
            json!({"prefix": "recipes.item.", "index": "recipes.index"})
        );
        assert!(
            d.notes.iter().any(|n| n.contains("/version")),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn one_key_with_an_id_suffix_is_a_prefix_family_a_named_one_is_not() {
        let export =
            json!({"app.draft.1700000000000": {"text": "t"}, "app.profile": {"name": "n"}})
                .to_string();
        let d = draft(&export);
        assert_eq!(
            kind(&d, "app_draft")["source"],
            json!({"prefix": "app.draft."})
        );
        assert_eq!(
            kind(&d, "app_profile")["source"],
            json!({"object": "app.profile"})
        );
    }

    #[test]
    fn backup_open_output_and_bad_exports() {
        let export = json!([{"key": "a.list", "value": "[{\"k\":\"x\",\"v\":1}]"}]).to_string();
        let d = draft(&export);
        assert_eq!(kind(&d, "a_list")["id"]["from"], "k");
        assert!(matches!(read_export("nope"), Err(ExportError::NotJson(_))));
        assert!(matches!(
            read_export("[{\"k\": 1}]"),
            Err(ExportError::Shape(_))
        ));
        assert!(matches!(read_export("3"), Err(ExportError::Shape(_))));
    }
}
