//! localStorage, read and written losslessly. web-sys's `Storage` takes and returns Rust
//! strings, which silently replace lone surrogates with U+FFFD, so the calls here bind
//! `getItem`, `setItem` and `key` with `JsString` in and out. Reading takes the fast path (one
//! UTF-16 → UTF-8 copy) unless the copy holds U+FFFD; only then `is_valid_utf16` decides, and
//! a string with lone surrogates is read code unit by code unit (`LosslessString::from_utf16`).

use std::rc::Rc;

use ferry_core::backup::Pair;
use ferry_core::lossless::LosslessString;
use js_sys::JsString;
use wasm_bindgen::prelude::*;

use super::{describe, window};
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

/// The exact escaped form of a JavaScript string.
pub fn lossless(js: &JsString) -> LosslessString {
    let text = String::from(js);
    // A lone surrogate always becomes U+FFFD in the copy, so a copy without it is exact.
    if !text.contains('\u{FFFD}') || js.is_valid_utf16() {
        LosslessString::from_unicode(&text)
    } else {
        let units: Vec<u16> = js.iter().collect();
        LosslessString::from_utf16(&units)
    }
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

    fn fail(what: String, e: &JsValue) -> Error {
        Error::Storage {
            what,
            detail: describe(e),
        }
    }
}

impl AppStorage for LocalStorage {
    fn read_all(&self) -> Result<Vec<Pair>, Error> {
        let n = self
            .storage
            .length()
            .map_err(|e| Self::fail("counting localStorage keys".to_owned(), &e))?;
        let mut pairs = Vec::with_capacity(n as usize);
        for i in 0..n {
            let key = self
                .raw()
                .key_js(i)
                .map_err(|e| Self::fail("listing localStorage keys".to_owned(), &e))?;
            let Some(key) = key else { continue };
            let value = self
                .raw()
                .get_item_js(&key)
                .map_err(|e| Self::fail("reading localStorage".to_owned(), &e))?;
            if let Some(value) = value {
                pairs.push((lossless(&key), lossless(&value)));
            }
        }
        Ok(pairs)
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

impl LocalStorage {
    /// A raw string value (lease bookkeeping; not app data).
    pub fn get_plain(&self, key: &str) -> Option<String> {
        self.storage.get_item(key).ok().flatten()
    }
    /// Sets a raw string value (lease bookkeeping; not app data).
    pub fn set_plain(&self, key: &str, value: &str) -> Result<(), Error> {
        self.storage
            .set_item(key, value)
            .map_err(|e| Self::fail(format!("writing localStorage key {key:?}"), &e))
    }
    /// Removes a raw key.
    pub fn remove_plain(&self, key: &str) {
        let _ = self.storage.remove_item(key);
    }
}
