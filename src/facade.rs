//! The JavaScript API: one `Migrator` class. Inputs and outputs cross as JSON-compatible plain
//! objects built and read by serde-wasm-bindgen (no JSON text in between; no `Map`s appear;
//! the one argument holding user text, `resolve`'s edited record, crosses losslessly as JSON), every failure becomes a
//! JavaScript `Error` through [`js_error`] (name `FerryError`, `code` and `failure` set), and the panic hook
//! is installed once, when the first migrator is made. TypeScript types for every object are
//! in the custom section below and land in `pkg/ferry.d.ts`.

use std::rc::Rc;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde::Deserialize;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::browser::{self, LockKind};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::runner::{self, Config, RunOptions};

// The facade's own input types (options objects holding JavaScript callbacks) and error shape.
// What the migrator returns (`RunReport`, `Progress`, `Inspection`, `BackupInfo`, …) is declared
// from the Rust types by tsify (src/runner.rs, src/progress.rs, src/checkpoint.rs), and the
// server's answers (`RecordResult`, `RecordOutcome`, `Conflict`, `ResolveAnswer`, `ErrorCode`, …)
// from `ferry_core::contract` (its `typescript` feature), not here.
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
export interface MigratorOptions {
  /** IndexedDB database (and BroadcastChannel) name; default "ferry". */
  storageName?: string;
  /** Batch bounds; defaults 2000 records, 1 MiB. */
  maxRecords?: number;
  maxBytes?: number;
  /** Retry policy; defaults 500 ms base, 30 s cap, 10 attempts, 30 s timeout. */
  retry?: { baseMs?: number; maxDelayMs?: number; maxAttempts?: number; timeoutMs?: number };
  /** Batches uploaded at once; default 3. */
  parallelUploads?: number;
  /** "lease" forces the localStorage lease instead of Web Locks. */
  lock?: "best" | "lease";
}
export type TokenProvider = (refresh: boolean) => Promise<string>;
export interface RunOptions {
  mode?: "auto" | "manual"; dryRun?: boolean; kinds?: string[]; cleanup?: boolean;
  uploadBackup?: boolean; onProgress?: (p: Progress) => void;
}
/** What kind of failure a `FerryError` is (its `failure` property). */
export type Failure = "refused" | "server_fault" | "unreachable" | "browser";
/** The `code` of a `FerryError` (`Error::code` in src/error.rs; tests/housekeeping.rs keeps them equal). */
export type FerryErrorCode =
  | "spec_invalid" | "invalid_argument" | "quota_exceeded" | "storage" | "crypto" | "backup"
  | "backup_not_found" | "unauthorized" | "token_provider" | "idempotency_conflict"
  | "spec_mismatch" | "refused" | "server_fault" | "migration_rolled_back" | "unavailable"
  | "record_too_large" | "verification_failed" | "protocol" | "unsupported";
/** What every rejected migrator promise (and a throwing constructor) gives. */
export interface FerryError extends Error { name: "FerryError"; code: FerryErrorCode; failure: Failure }
/** The keys the spec watches and their fingerprints `[key, length, fnv, mix]` at the last verified migration (auto.js makes the light loader's stamp of it). */
export interface VerifiedState { exact: string[]; prefixes: string[]; keys: [string, number, number, number][]; ignoredExact: string[]; ignoredPrefixes: string[] }
/** What `onOutcome` hears when a run in any tab of this origin ends. */
export type Outcome = RunReport | { status: "failed"; error: string };
"#;

/// Turns any migrator error into a JavaScript `Error` with `name = "FerryError"`, a
/// machine-readable `code` and the `failure` kind.
pub fn js_error(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("FerryError");
    let _ = Reflect::set(
        &err,
        &JsValue::from_str("code"),
        &JsValue::from_str(e.code()),
    );
    // Which kind of failure (refused, server_fault, unreachable, browser): what to do next.
    let _ = Reflect::set(
        &err,
        &JsValue::from_str("failure"),
        &JsValue::from_str(e.failure().as_str()),
    );
    err.into()
}

/// A Rust value as a plain JavaScript object, built directly by serde-wasm-bindgen (no JSON
/// text in between): maps become objects, `None` becomes `null`, as `JSON.parse` would give.
fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error(Error::InvalidArgument(e.to_string())))
}

/// An options object read directly by serde-wasm-bindgen; `undefined`/`null` is the default.
/// (Options hold no user text; the one argument that does, `resolve`'s edited record, crosses
/// losslessly through [`from_js_lossless`].)
fn from_js<T: for<'de> Deserialize<'de> + Default>(
    value: &JsValue,
    what: &str,
) -> Result<T, Error> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(value.clone())
        .map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

/// User data from JavaScript, exactly: serde-wasm-bindgen reads strings with `as_string`,
/// which replaces a lone surrogate with U+FFFD; `JSON.stringify` keeps it as an escape that the
/// parser then refuses with a message, so a string is never silently changed.
fn from_js_lossless<T: for<'de> Deserialize<'de> + Default>(
    value: &JsValue,
    what: &str,
) -> Result<T, Error> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    let text = js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Options {
    storage_name: Option<String>,
    max_records: Option<usize>,
    max_bytes: Option<usize>,
    retry: Option<RetryPolicy>,
    lock: Option<String>,
    parallel_uploads: Option<usize>,
}

/// The browser migrator. `new Migrator(specJson, serverUrl, getToken, options?)`.
#[wasm_bindgen]
pub struct Migrator {
    inner: Rc<runner::Migrator>,
    storage_name: String,
}

#[wasm_bindgen]
impl Migrator {
    /// Parses the spec and binds the browser; throws on a bad spec or missing browser APIs.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = "specJson")] spec_json: &str,
        #[wasm_bindgen(js_name = "serverUrl")] server_url: &str,
        #[wasm_bindgen(js_name = "getToken", unchecked_param_type = "TokenProvider")]
        token_provider: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "MigratorOptions")] options: JsValue,
    ) -> Result<Migrator, JsValue> {
        console_error_panic_hook::set_once();
        let options: Options = from_js(&options, "options").map_err(js_error)?;
        let storage_name = options.storage_name.unwrap_or_else(|| "ferry".to_owned());
        let lock = match options.lock.as_deref() {
            None | Some("best") => LockKind::Best,
            Some("lease") => LockKind::Lease,
            Some(other) => {
                return Err(js_error(Error::InvalidArgument(format!(
                    "options.lock is {other:?}; use \"best\" or \"lease\""
                ))));
            }
        };
        let mut config = Config::default();
        if let Some(n) = options.max_records {
            config.limits.max_records = n.max(1);
        }
        if let Some(n) = options.max_bytes {
            config.limits.max_bytes = n;
        }
        if let Some(r) = options.retry {
            config.retry = r;
        }
        if let Some(n) = options.parallel_uploads {
            config.parallel_uploads = n.max(1);
        }
        config.origin = browser::window()
            .ok()
            .and_then(|w| w.location().origin().ok())
            .unwrap_or_default();
        let ports = browser::ports(&storage_name, token_provider, lock).map_err(js_error)?;
        let inner =
            runner::Migrator::new(spec_json, server_url, ports, config).map_err(js_error)?;
        Ok(Migrator {
            inner: Rc::new(inner),
            storage_name,
        })
    }

    fn call<T, F>(&self, f: impl FnOnce(Rc<runner::Migrator>) -> F + 'static) -> Promise
    where
        T: Serialize,
        F: std::future::Future<Output = Result<T, Error>> + 'static,
    {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let value = f(inner).await.map_err(js_error)?;
            to_js(&value)
        })
    }

    /// What would be migrated: kinds, counts, sizes, unknown keys, and the migration state.
    #[wasm_bindgen(unchecked_return_type = "Promise<Inspection>")]
    pub fn inspect(&self) -> Promise {
        self.call(|m| async move { m.inspect().await })
    }

    /// Runs (or resumes) the migration.
    #[wasm_bindgen(unchecked_return_type = "Promise<RunReport>")]
    pub fn run(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "RunOptions")] options: JsValue,
    ) -> Promise {
        let parsed: Result<RunOptions, Error> = from_js(&options, "run options");
        let on_progress = Reflect::get(&options, &JsValue::from_str("onProgress"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        self.call(move |m| async move {
            let options = parsed?;
            let report = m
                .run(&options, &|p| {
                    if let (Some(f), Ok(v)) = (&on_progress, to_js(p)) {
                        // A throwing progress callback must not stop the migration.
                        let _ = f.call1(&JsValue::NULL, &v);
                    }
                })
                .await?;
            Ok(report)
        })
    }

    /// The keys the spec watches and their fingerprints at the last verified migration, for
    /// the light loader's stamp; `null` while a migration is in flight. Keys cross as the exact
    /// JavaScript strings (lone surrogates kept), not through JSON.
    #[wasm_bindgen(js_name = verifiedState, unchecked_return_type = "Promise<VerifiedState | null>")]
    pub fn verified_state(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let Some(state) = inner.verified_state().await.map_err(js_error)? else {
                return Ok(JsValue::NULL);
            };
            let strings = |list: &[ferry_core::lossless::LosslessString]| {
                list.iter()
                    .map(|k| JsValue::from(browser::local::to_js(k)))
                    .collect::<js_sys::Array>()
            };
            let keys: js_sys::Array = state
                .fingerprints
                .iter()
                .map(|(key, fp)| {
                    let (len, fnv, mix) = fp.parts();
                    let entry = js_sys::Array::of4(
                        &browser::local::to_js(key),
                        &JsValue::from_f64(len as f64),
                        &JsValue::from_f64(f64::from(fnv)),
                        &JsValue::from_f64(f64::from(mix)),
                    );
                    JsValue::from(entry)
                })
                .collect();
            let out = js_sys::Object::new();
            for (name, value) in [
                ("exact", strings(&state.exact)),
                ("prefixes", strings(&state.prefixes)),
                ("keys", keys),
                ("ignoredExact", strings(&state.ignored_exact)),
                ("ignoredPrefixes", strings(&state.ignored_prefixes)),
            ] {
                Reflect::set(&out, &JsValue::from_str(name), &value)?;
            }
            Ok(out.into())
        })
    }

    /// The backups stored in this browser.
    #[wasm_bindgen(unchecked_return_type = "Promise<BackupInfo[]>")]
    pub fn backups(&self) -> Promise {
        self.call(|m| async move { m.backups().await })
    }

    /// Writes a backup's keys back into localStorage exactly; resolves to `{ restored }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<{ restored: number }>")]
    pub fn restore(&self, #[wasm_bindgen(js_name = "backupId")] backup_id: String) -> Promise {
        self.call(move |m| async move {
            let n = m.restore(&backup_id).await?;
            Ok(serde_json::json!({ "restored": n }))
        })
    }

    /// A passphrase-protected copy of a backup (the bytes of a `.ferry` file).
    #[wasm_bindgen(js_name = exportBackup, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_backup(
        &self,
        #[wasm_bindgen(js_name = "backupId")] backup_id: String,
        passphrase: String,
    ) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let bytes = inner
                .export_backup(&backup_id, &passphrase)
                .await
                .map_err(js_error)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Backs up the app's localStorage now (device key, kept with the other backups).
    #[wasm_bindgen(js_name = backupNow, unchecked_return_type = "Promise<BackupInfo>")]
    pub fn backup_now(&self) -> Promise {
        self.call(|m| async move { m.backup_now().await })
    }

    /// A passphrase-protected backup of the app's localStorage as it is now (the bytes of a
    /// `.ferry` file to download); nothing is kept in the browser.
    #[wasm_bindgen(js_name = exportNow, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_now(&self, passphrase: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let bytes = inner.export_now(&passphrase).await.map_err(js_error)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// The server's pending conflicts.
    #[wasm_bindgen(unchecked_return_type = "Promise<Conflict[]>")]
    pub fn conflicts(&self) -> Promise {
        self.call(|m| async move { m.conflicts().await })
    }

    /// Resolves a conflict: `choice` is "stored", "incoming" or "edited" (with `value`).
    #[wasm_bindgen(unchecked_return_type = "Promise<ResolveAnswer>")]
    pub fn resolve(
        &self,
        #[wasm_bindgen(js_name = "conflictId")] conflict_id: f64,
        #[wasm_bindgen(unchecked_param_type = "Choice")] choice: String,
        #[wasm_bindgen(unchecked_optional_param_type = "Record<string, unknown>")] value: JsValue,
    ) -> Promise {
        let value: Result<Option<serde_json::Value>, Error> = from_js_lossless(&value, "value");
        self.call(move |m| async move {
            if !(conflict_id >= 0.0 && conflict_id.fract() == 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "conflict id {conflict_id} is not a whole number"
                )));
            }
            m.resolve(conflict_id as u64, &choice, value?).await
        })
    }

    /// Rolls back a migration on the server (default: the last verified one).
    #[wasm_bindgen(unchecked_return_type = "Promise<RollbackAnswer>")]
    pub fn rollback(
        &self,
        #[wasm_bindgen(js_name = "migrationId")] migration_id: Option<String>,
    ) -> Promise {
        self.call(move |m| async move {
            let id = match migration_id {
                Some(s) => Some(
                    uuid::Uuid::parse_str(&s)
                        .map_err(|e| Error::InvalidArgument(format!("migration id {s:?}: {e}")))?,
                ),
                None => None,
            };
            m.rollback(id).await
        })
    }

    /// Calls `callback(report)` whenever a run in any tab of this origin ends (a skipped auto
    /// run learns the other tab's outcome this way). Failed runs give `{status: "failed", error}`.
    #[wasm_bindgen(js_name = onOutcome)]
    pub fn on_outcome(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(outcome: Outcome) => void")] callback: Function,
    ) -> Result<(), JsValue> {
        let channel =
            web_sys::BroadcastChannel::new(&browser::locks::channel_name(&self.storage_name))?;
        let handler =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let parsed = e
                    .data()
                    .as_string()
                    .and_then(|s| js_sys::JSON::parse(&s).ok());
                if let Some(v) = parsed {
                    let _ = callback.call1(&JsValue::NULL, &v);
                }
            });
        channel.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        // Listening lasts as long as the page.
        handler.forget();
        std::mem::forget(channel);
        Ok(())
    }
}
