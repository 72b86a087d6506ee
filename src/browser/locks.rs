//! One runner across tabs: Web Locks (`navigator.locks.request`, reached through `Reflect`
//! because web-sys marks it unstable) with `ifAvailable` for auto runs, and a localStorage
//! lease with expiry where Web Locks are missing. Outcomes are announced to other tabs on a
//! `BroadcastChannel`.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

use super::local::LocalStorage;
use super::net::sleep_ms;
use super::{deferred, describe, wait, window};
use crate::error::Error;
use crate::ports::{Announcer, Entropy, LocalFuture, LockGuard, Locks};

fn lock_error(e: &JsValue) -> Error {
    Error::Unsupported(format!("a working navigator.locks ({})", describe(e)))
}

/// `navigator.locks`.
pub struct WebLocks;

struct WebLockRelease(Function);

impl Drop for WebLockRelease {
    fn drop(&mut self) {
        let _ = self.0.call0(&JsValue::NULL);
    }
}

impl WebLocks {
    fn manager() -> Option<JsValue> {
        let navigator = window().ok()?.navigator();
        Reflect::get(&navigator, &JsValue::from_str("locks"))
            .ok()
            .filter(|l| !l.is_undefined() && !l.is_null())
    }

    /// Whether this browser has Web Locks.
    pub fn available() -> bool {
        Self::manager().is_some()
    }
}

impl Locks for WebLocks {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        wait_turn: bool,
    ) -> LocalFuture<'a, Result<Option<LockGuard>, Error>> {
        Box::pin(async move {
            let manager =
                Self::manager().ok_or_else(|| Error::Unsupported("navigator.locks".to_owned()))?;
            let request: Function = Reflect::get(&manager, &JsValue::from_str("request"))
                .and_then(|f| f.dyn_into::<Function>())
                .map_err(|e| lock_error(&e))?;
            let options = Object::new();
            Reflect::set(
                &options,
                &JsValue::from_str("ifAvailable"),
                &JsValue::from_bool(!wait_turn),
            )
            .map_err(|e| lock_error(&e))?;
            // The lock is held until `held` settles; `acquired` tells us the callback ran.
            let (held, release) = deferred();
            let (acquired, signal) = deferred();
            let on_grant = signal.clone();
            let callback = Closure::once_into_js(move |lock: JsValue| -> Promise {
                let _ = on_grant.call1(&JsValue::NULL, &lock);
                held
            });
            let outer: Promise = request
                .call3(&manager, &JsValue::from_str(name), &options, &callback)
                .and_then(|p| p.dyn_into::<Promise>())
                .map_err(|e| lock_error(&e))?;
            // A refused request (e.g. an invalid name) settles `acquired` with its error, which
            // is not a lock object and so becomes an error below.
            let on_fail = Closure::once(move |e: JsValue| {
                let _ = signal.call1(&JsValue::NULL, &e);
            });
            let _ = outer.catch(&on_fail);
            on_fail.forget();
            let lock = wait(acquired).await.map_err(|e| lock_error(&e))?;
            if lock.is_null() || lock.is_undefined() {
                let _ = release.call0(&JsValue::NULL);
                return Ok(None);
            }
            if !lock.is_object()
                || Reflect::get(&lock, &JsValue::from_str("name"))
                    .ok()
                    .and_then(|n| n.as_string())
                    .is_none()
            {
                let _ = release.call0(&JsValue::NULL);
                return Err(lock_error(&lock));
            }
            Ok(Some(LockGuard(Box::new(WebLockRelease(release)))))
        })
    }
}

/// How long a lease lives without renewal, and how often it is renewed.
const LEASE_MS: f64 = 15_000.0;
const RENEW_MS: i32 = 5_000;

/// A lease in localStorage (`ferry-lease:<name>` = `<owner>|<expiry ms>`), for browsers
/// without Web Locks. Renewed while held, so a crashed tab's lease simply expires.
pub struct LeaseLocks {
    app: Rc<LocalStorage>,
}

impl LeaseLocks {
    /// A lease manager over localStorage.
    pub fn new(app: Rc<LocalStorage>) -> Self {
        Self { app }
    }
}

struct LeaseRelease {
    app: Rc<LocalStorage>,
    key: String,
    owner: String,
    interval: Option<i32>,
    _renew: Option<Closure<dyn FnMut()>>,
}

impl Drop for LeaseRelease {
    fn drop(&mut self) {
        if let (Some(id), Ok(w)) = (self.interval, window()) {
            w.clear_interval_with_handle(id);
        }
        if lease_owner(self.app.get_plain(&self.key).as_deref()) == Some(self.owner.as_str()) {
            self.app.remove_plain(&self.key);
        }
    }
}

fn lease_owner(value: Option<&str>) -> Option<&str> {
    value.and_then(|v| v.split_once('|')).map(|(o, _)| o)
}

fn lease_live(value: Option<&str>, now: f64) -> bool {
    value
        .and_then(|v| v.split_once('|'))
        .and_then(|(_, t)| t.parse::<f64>().ok())
        .is_some_and(|expiry| expiry > now)
}

impl Locks for LeaseLocks {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        wait_turn: bool,
    ) -> LocalFuture<'a, Result<Option<LockGuard>, Error>> {
        Box::pin(async move {
            let key = format!("{}{name}", ferry_core::backup::LEASE_KEY_PREFIX);
            let mut raw = [0u8; 8];
            super::crypto::BrowserEntropy.fill(&mut raw)?;
            let owner = format!("{:016x}", u64::from_le_bytes(raw));
            loop {
                let now = js_sys::Date::now();
                if !lease_live(self.app.get_plain(&key).as_deref(), now) {
                    self.app
                        .set_plain(&key, &format!("{owner}|{}", now + LEASE_MS))?;
                    // Two tabs may write at once: whoever reads its own value back wins.
                    if lease_owner(self.app.get_plain(&key).as_deref()) == Some(owner.as_str()) {
                        let app = self.app.clone();
                        let (k, o) = (key.clone(), owner.clone());
                        let renew = Closure::<dyn FnMut()>::new(move || {
                            let _ = app
                                .set_plain(&k, &format!("{o}|{}", js_sys::Date::now() + LEASE_MS));
                        });
                        let interval = window()?
                            .set_interval_with_callback_and_timeout_and_arguments_0(
                                renew.as_ref().unchecked_ref(),
                                RENEW_MS,
                            )
                            .ok();
                        return Ok(Some(LockGuard(Box::new(LeaseRelease {
                            app: self.app.clone(),
                            key,
                            owner,
                            interval,
                            _renew: Some(renew),
                        }))));
                    }
                }
                if !wait_turn {
                    return Ok(None);
                }
                sleep_ms(1000).await;
            }
        })
    }
}

/// The channel name outcomes are announced on, for a migrator database name.
pub fn channel_name(db_name: &str) -> String {
    format!("ferry:{db_name}")
}

/// Posts run reports on a `BroadcastChannel`.
pub struct ChannelAnnouncer {
    name: String,
    channel: RefCell<Option<web_sys::BroadcastChannel>>,
}

impl ChannelAnnouncer {
    /// An announcer for the migrator database `db_name`.
    pub fn new(db_name: &str) -> Self {
        Self {
            name: channel_name(db_name),
            channel: RefCell::new(None),
        }
    }
}

impl Announcer for ChannelAnnouncer {
    fn announce(&self, report_json: &str) {
        let mut slot = self.channel.borrow_mut();
        if slot.is_none() {
            *slot = web_sys::BroadcastChannel::new(&self.name).ok();
        }
        if let Some(c) = slot.as_ref() {
            // Best effort: a tab that misses the news learns it from its own next run.
            let _ = c.post_message(&JsValue::from_str(report_json));
        }
    }
}
