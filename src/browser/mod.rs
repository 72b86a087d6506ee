//! The browser edge: the only code that touches `window`, `localStorage`, IndexedDB, WebCrypto,
//! `fetch`, `navigator.locks` and `BroadcastChannel`. Each submodule implements
//! [ports](crate::ports) and nothing else; orchestration lives in [`runner`](crate::runner).
//!
//! - [`local`]: localStorage read and written losslessly (lone surrogates included).
//! - [`idb`]: the IndexedDB [`Store`](crate::ports::Store).
//! - [`crypto`]: randomness and the WebCrypto vault (non-extractable device key).
//! - [`net`]: fetch with timeouts, tokens from the app's callback, online state, clock.
//! - [`locks`]: Web Locks (lease fallback) and BroadcastChannel announcements.

pub mod crypto;
pub mod idb;
pub mod local;
pub mod locks;
pub mod net;

use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::Error;
use crate::ports::Ports;

/// The page's `window`, or an error in workers and other scopes without one.
pub fn window() -> Result<web_sys::Window, Error> {
    web_sys::window().ok_or_else(|| {
        Error::Unsupported("a `window` (the migrator runs on a page, not in a worker)".to_owned())
    })
}

/// A readable description of a thrown JavaScript value: `name: message` for errors.
pub fn describe(value: &JsValue) -> String {
    let field = |name: &str| {
        Reflect::get(value, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_string())
    };
    match (field("name"), field("message")) {
        // Chromium's QuotaExceededError from IndexedDB has an empty message.
        (Some(n), Some(m)) if m.trim().is_empty() => n,
        (Some(n), Some(m)) => format!("{n}: {m}"),
        (None, Some(m)) => m,
        _ => value.as_string().unwrap_or_else(|| format!("{value:?}")),
    }
}

/// Whether a thrown value is a `QuotaExceededError` `DOMException`.
pub fn is_quota_exceeded(value: &JsValue) -> bool {
    value
        .dyn_ref::<web_sys::DomException>()
        .is_some_and(|e| e.name() == "QuotaExceededError")
}

/// Turns a storage failure into [`Error::QuotaExceeded`] or [`Error::Storage`]: every
/// IndexedDB error goes through here, so a full disk is never reported as anything else.
pub fn storage_error(what: &str, value: &JsValue) -> Error {
    if is_quota_exceeded(value) {
        Error::QuotaExceeded {
            what: what.to_owned(),
            detail: describe(value),
        }
    } else {
        Error::Storage {
            what: what.to_owned(),
            detail: describe(value),
        }
    }
}

/// A promise with its `resolve` function, for callbacks that must settle it later.
pub fn deferred() -> (Promise, Function) {
    let mut resolve_fn = None;
    let promise = Promise::new(&mut |resolve, _reject| resolve_fn = Some(resolve));
    // The executor runs synchronously, so the function is always set.
    let resolve = resolve_fn.unwrap_or_else(|| Function::new_no_args(""));
    (promise, resolve)
}

/// Awaits a promise.
pub async fn wait(promise: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

/// Which cross-tab lock to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockKind {
    /// Web Locks when the browser has them, else the localStorage lease.
    #[default]
    Best,
    /// The localStorage lease (to test the fallback).
    Lease,
}

/// Every port, implemented by the browser, over the IndexedDB database `db_name`.
pub fn ports(db_name: &str, token_provider: Function, lock: LockKind) -> Result<Ports, Error> {
    let store = Rc::new(idb::IdbStore::new(db_name));
    let entropy = Rc::new(crypto::BrowserEntropy);
    let app = Rc::new(local::LocalStorage::new()?);
    let locks: Rc<dyn crate::ports::Locks> = match (lock, locks::WebLocks::available()) {
        (LockKind::Best, true) => Rc::new(locks::WebLocks),
        _ => Rc::new(locks::LeaseLocks::new(app.clone())),
    };
    Ok(Ports {
        app,
        vault: Rc::new(crypto::WebCryptoVault::new(store.clone())),
        store,
        clock: Rc::new(net::BrowserClock),
        entropy,
        transport: Rc::new(net::HttpTransport::new()),
        tokens: Rc::new(net::JsTokens::new(token_provider)),
        net: Rc::new(net::BrowserNet),
        locks,
        announcer: Rc::new(locks::ChannelAnnouncer::new(db_name)),
    })
}
