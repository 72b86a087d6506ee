//! localStorage, read and written losslessly. web-sys's `Storage` takes and returns Rust
//! strings, which silently replace lone surrogates with U+FFFD, so the calls here bind
//! `getItem`, `setItem` and `key` with `JsString` in and out. Reading applies the lossless rule
//! in JavaScript first (one regular-expression pass, and only when the string needs it), so
//! every value crosses into wasm in one UTF-16 → UTF-8 copy that is already its escaped form.

use std::rc::Rc;

use ferry_core::backup::Pair;
use ferry_core::lossless::LosslessString;
use js_sys::{Array, JsString, Uint32Array};
use wasm_bindgen::prelude::*;

use super::{describe, window};
use crate::checkpoint::Fingerprint;
use crate::error::Error;
use crate::ports::AppStorage;

#[wasm_bindgen]
extern "C" {
    /// `Storage`, bound with `JsString` in and out.
    type RawStorage;
    #[wasm_bindgen(method, js_name = getItem, catch)]
    fn get_item_js(this: &RawStorage, key: &JsString) -> Result<Option<JsString>, JsValue>;
    #[wasm_bindgen(method, js_name = setItem, catch)]
    fn set_item_js(this: &RawStorage, key: &JsString, value: &JsString) -> Result<(), JsValue>;
    #[wasm_bindgen(method, js_name = removeItem, catch)]
    fn remove_item_js(this: &RawStorage, key: &JsString) -> Result<(), JsValue>;
    #[wasm_bindgen(method, js_name = key, catch)]
    fn key_js(this: &RawStorage, index: u32) -> Result<Option<JsString>, JsValue>;
}

#[wasm_bindgen(inline_js = r#"
const SPECIAL = /[\u0000\uFFFF]/;
const SPECIAL_ALL = /[\u0000\uFFFF]/g;
const LONE_OR_SPECIAL =
  /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|[\u0000\uFFFF]/g;
const escapeUnit = (c) =>
  "\uFFFF" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
const escapePart = (s) =>
  s.isWellFormed()
    ? (SPECIAL.test(s) ? s.replace(SPECIAL_ALL, escapeUnit) : s)
    : s.replace(LONE_OR_SPECIAL, escapeUnit);
const CHUNK = 65536;
// A big value usually holds a lone surrogate or two in megabytes of text: only the chunks
// around them take the slow expression. A chunk never ends between the two halves of a pair.
function chunks(s, f) {
  const parts = [];
  for (let at = 0; at < s.length; ) {
    let end = Math.min(at + CHUNK, s.length);
    const last = s.charCodeAt(end - 1);
    if (end < s.length && last >= 0xd800 && last <= 0xdbff) end += 1;
    parts.push(f(s.slice(at, end)));
    at = end;
  }
  return parts;
}
export function ferryEscape(s) {
  if (typeof s.isWellFormed !== "function") return s.replace(LONE_OR_SPECIAL, escapeUnit);
  return escapePart(s);
}
export function ferryEscapedParts(s) {
  if (typeof s.isWellFormed !== "function") return chunks(s.replace(LONE_OR_SPECIAL, escapeUnit), (p) => p);
  return chunks(s, escapePart);
}
"#)]
extern "C" {
    /// The lossless rule applied to a JavaScript string, in JavaScript: each NUL, lone
    /// surrogate and U+FFFF becomes U+FFFF + four uppercase hex digits. The result is well
    /// formed, so it crosses into wasm without loss. For values below [`IN_PARTS_FROM_UNITS`];
    /// bigger ones come in parts ([`escaped_parts_in_js`]).
    #[wasm_bindgen(js_name = ferryEscape)]
    fn escape_in_js(text: &JsString) -> JsString;
    /// [`escape_in_js`] of a big value, as parts of at most 64 Ki code units (a surrogate pair
    /// is never cut).
    #[wasm_bindgen(js_name = ferryEscapedParts)]
    fn escaped_parts_in_js(text: &JsString) -> Array;
}

/// Code units from which a value crosses into wasm in parts. wasm-bindgen's string passing
/// reserves three bytes per code unit once it meets a non-ASCII character and gives the rest
/// back afterwards: for a 2.6 M-unit value that is 7.8 MB of wasm memory, which only grows.
/// Part by part, that reservation is a part's; the parts are then joined at their exact size.
const IN_PARTS_FROM_UNITS: u32 = 16 * 1024;

// The fingerprint lives in the package's light loader (`stamp.js`), which computes the same
// fingerprints before the wasm is even downloaded: one implementation for both.
#[wasm_bindgen(module = "/src/js/stamp.js")]
extern "C" {
    /// [`Fingerprint::of_utf16`] computed in JavaScript: `[length, fnv, mix]`.
    #[wasm_bindgen(js_name = ferryFingerprint)]
    fn fingerprint_in_js(text: &JsString) -> Uint32Array;
}

/// The fingerprint of a JavaScript string, without copying it into wasm.
pub fn fingerprint(js: &JsString) -> Fingerprint {
    let parts = fingerprint_in_js(js);
    Fingerprint::from_parts(
        u64::from(parts.get_index(0)),
        parts.get_index(1),
        parts.get_index(2),
    )
}

/// The exact escaped form of a JavaScript string.
pub fn lossless(js: &JsString) -> LosslessString {
    let escaped = if js.length() < IN_PARTS_FROM_UNITS {
        Some(String::from(&escape_in_js(js)))
    } else {
        joined(&escaped_parts_in_js(js))
    };
    match escaped.map(LosslessString::from_escaped) {
        Some(Ok(value)) => value,
        // Unreachable when the JavaScript above is right; the slow path is exact regardless.
        _ => LosslessString::from_utf16(&js.iter().collect::<Vec<u16>>()),
    }
}

/// JavaScript strings (well formed) as one Rust string of exactly their UTF-8 size.
fn joined(parts: &Array) -> Option<String> {
    let parts: Vec<String> = parts.iter().map(|p| p.as_string()).collect::<Option<_>>()?;
    let mut out = String::with_capacity(parts.iter().map(String::len).sum());
    for part in parts {
        out.push_str(&part);
    }
    Some(out)
}

/// The JavaScript string a lossless value stands for, built from its code units.
pub fn to_js(value: &LosslessString) -> JsString {
    if !value.has_escapes() {
        return JsString::from(value.as_escaped());
    }
    // `String.fromCharCode` takes its code units as call arguments: megabytes at once overflow
    // the JavaScript stack, so the string is built in slices. A surrogate pair cut between two
    // slices is joined again by the concatenation, which works on code units.
    const SLICE: usize = 8192;
    let units = value.to_utf16();
    let mut out = JsString::from("");
    for slice in units.chunks(SLICE) {
        out = out.concat(&JsString::from_char_code(slice));
    }
    out
}

/// The page's localStorage.
pub struct LocalStorage {
    storage: web_sys::Storage,
}

impl LocalStorage {
    /// Binds `window.localStorage`.
    pub fn new() -> Result<Self, Error> {
        let storage = window()?
            .local_storage()
            .map_err(|e| Error::Unsupported(format!("localStorage ({})", describe(&e))))?
            .ok_or_else(|| Error::Unsupported("localStorage".to_owned()))?;
        Ok(Self { storage })
    }

    fn raw(&self) -> &RawStorage {
        self.storage.unchecked_ref()
    }

    fn raw_keys(&self) -> Result<Vec<JsString>, Error> {
        let n = self
            .storage
            .length()
            .map_err(|e| Self::fail("counting localStorage keys".to_owned(), &e))?;
        let mut keys = Vec::with_capacity(n as usize);
        for i in 0..n {
            let key = self
                .raw()
                .key_js(i)
                .map_err(|e| Self::fail("listing localStorage keys".to_owned(), &e))?;
            keys.extend(key);
        }
        Ok(keys)
    }

    /// `f(key, value)` for every key that still holds a value, in storage order.
    fn each_value<T>(&self, f: impl Fn(&JsString, &JsString) -> T) -> Result<Vec<T>, Error> {
        let keys = self.raw_keys()?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self
                .raw()
                .get_item_js(&key)
                .map_err(|e| Self::fail("reading localStorage".to_owned(), &e))?;
            if let Some(value) = value {
                out.push(f(&key, &value));
            }
        }
        Ok(out)
    }

    fn fail(what: String, e: &JsValue) -> Error {
        Error::Storage {
            what,
            detail: describe(e),
        }
    }
}

impl AppStorage for LocalStorage {
    fn read_all(&self) -> Result<Vec<Pair>, Error> {
        self.each_value(|key, value| (lossless(key), lossless(value)))
    }

    fn read_where(&self, keep: &dyn Fn(&LosslessString) -> bool) -> Result<Vec<Pair>, Error> {
        let mut out = Vec::new();
        for key in self.raw_keys()? {
            let key_text = lossless(&key);
            if !keep(&key_text) {
                continue;
            }
            let value = self
                .raw()
                .get_item_js(&key)
                .map_err(|e| Self::fail("reading localStorage".to_owned(), &e))?;
            if let Some(value) = value {
                out.push((key_text, lossless(&value)));
            }
        }
        Ok(out)
    }

    fn keys(&self) -> Result<Vec<LosslessString>, Error> {
        Ok(self.raw_keys()?.iter().map(lossless).collect())
    }

    fn fingerprints(&self) -> Result<Vec<(LosslessString, Fingerprint)>, Error> {
        self.each_value(|key, value| (lossless(key), fingerprint(value)))
    }

    fn write(&self, key: &LosslessString, value: &LosslessString) -> Result<(), Error> {
        self.raw()
            .set_item_js(&to_js(key), &to_js(value))
            .map_err(|e| {
                if super::is_quota_exceeded(&e) {
                    Error::QuotaExceeded {
                        what: format!("localStorage key {:?}", key.as_escaped()),
                        detail: describe(&e),
                    }
                } else {
                    Self::fail(
                        format!("writing localStorage key {:?}", key.as_escaped()),
                        &e,
                    )
                }
            })
    }

    fn remove(&self, key: &LosslessString) -> Result<(), Error> {
        self.raw().remove_item_js(&to_js(key)).map_err(|e| {
            Self::fail(
                format!("removing localStorage key {:?}", key.as_escaped()),
                &e,
            )
        })
    }
}

/// Shared handle used by the lease lock.
pub type SharedLocal = Rc<LocalStorage>;

// Ferry's own plain-string values (lease bookkeeping; not app data) go through gloo-storage,
// which stores them JSON-encoded. App keys and values never do: gloo reads with web-sys's
// `String`, which replaces a lone surrogate with U+FFFD (see the module doc).
impl LocalStorage {
    /// One of Ferry's own string values; `None` if absent or not written by Ferry.
    pub fn get_plain(&self, key: &str) -> Option<String> {
        <gloo_storage::LocalStorage as gloo_storage::Storage>::get(key).ok()
    }
    /// Sets one of Ferry's own string values.
    pub fn set_plain(&self, key: &str, value: &str) -> Result<(), Error> {
        <gloo_storage::LocalStorage as gloo_storage::Storage>::set(key, value).map_err(|e| {
            Error::Storage {
                what: format!("writing localStorage key {key:?}"),
                detail: e.to_string(),
            }
        })
    }
    /// Removes one of Ferry's own keys.
    pub fn remove_plain(&self, key: &str) {
        <gloo_storage::LocalStorage as gloo_storage::Storage>::delete(key);
    }
}
