//! The migrator's [`Store`] in IndexedDB: one database per migrator (name configurable), one
//! object store `kv` of byte arrays (and the device `CryptoKey`, stored as a structured clone
//! so its raw bytes never reach JavaScript or wasm). [`Store::commit`] is one readwrite
//! transaction, so a step's writes land together or not at all. Every failure goes through
//! [`storage_error`], which recognises `QuotaExceededError`.

use std::cell::RefCell;

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{IdbDatabase, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode};

use super::{storage_error, wait, window};
use crate::error::Error;
use crate::ports::{LocalFuture, Store, StoreOp};

const OBJECT_STORE: &str = "kv";

/// An IndexedDB database holding the checkpoint, outbox, backups and device key.
pub struct IdbStore {
    name: String,
    db: RefCell<Option<IdbDatabase>>,
}

/// Resolves with a request's result, or rejects with its error.
async fn request_done(req: &IdbRequest) -> Result<JsValue, JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        let r = req.clone();
        let ok = Closure::once_into_js(move |_e: JsValue| {
            let v = r.result().unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &v);
        });
        let r = req.clone();
        let err = Closure::once_into_js(move |_e: JsValue| {
            let v = r
                .error()
                .ok()
                .flatten()
                .map_or(JsValue::NULL, JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &v);
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(err.unchecked_ref()));
    });
    wait(promise).await
}

/// Resolves when a transaction commits; rejects with its error when it aborts.
async fn transaction_done(tx: &IdbTransaction) -> Result<(), JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move |_e: JsValue| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let t = tx.clone();
        let fail = Closure::once_into_js(move |_e: JsValue| {
            let v = t.error().map_or(JsValue::NULL, JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &v);
        });
        tx.set_oncomplete(Some(ok.unchecked_ref()));
        // A failed request aborts the transaction: `onabort` always follows, with the cause.
        tx.set_onabort(Some(fail.unchecked_ref()));
    });
    wait(promise).await.map(|_| ())
}

impl IdbStore {
    /// A store over the database `name` (opened on first use).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            db: RefCell::new(None),
        }
    }

    async fn db(&self) -> Result<IdbDatabase, Error> {
        if let Some(db) = self.db.borrow().clone() {
            return Ok(db);
        }
        let factory = window()?
            .indexed_db()
            .map_err(|e| storage_error("opening IndexedDB", &e))?
            .ok_or_else(|| Error::Unsupported("IndexedDB".to_owned()))?;
        let req: IdbOpenDbRequest = factory
            .open_with_u32(&self.name, 1)
            .map_err(|e| storage_error("opening IndexedDB", &e))?;
        let upgrade = Closure::once_into_js(move |e: web_sys::Event| {
            let db = e
                .target()
                .and_then(|t| t.dyn_into::<IdbRequest>().ok())
                .and_then(|r| r.result().ok())
                .and_then(|r| r.dyn_into::<IdbDatabase>().ok());
            if let Some(db) = db
                && !db.object_store_names().contains(OBJECT_STORE)
            {
                let _ = db.create_object_store(OBJECT_STORE);
            }
        });
        req.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
        let db: IdbDatabase = request_done(&req)
            .await
            .map_err(|e| storage_error("opening IndexedDB", &e))?
            .dyn_into()
            .map_err(|e| storage_error("opening IndexedDB", &e))?;
        *self.db.borrow_mut() = Some(db.clone());
        Ok(db)
    }

    async fn transaction(
        &self,
        mode: IdbTransactionMode,
        what: &str,
    ) -> Result<IdbTransaction, Error> {
        self.db()
            .await?
            .transaction_with_str_and_mode(OBJECT_STORE, mode)
            .map_err(|e| storage_error(what, &e))
    }

    /// The raw value under `key` (`undefined` when absent).
    pub async fn get_value(&self, key: &str) -> Result<JsValue, Error> {
        let what = "reading IndexedDB";
        let tx = self.transaction(IdbTransactionMode::Readonly, what).await?;
        let req = tx
            .object_store(OBJECT_STORE)
            .and_then(|s| s.get(&JsValue::from_str(key)))
            .map_err(|e| storage_error(what, &e))?;
        request_done(&req)
            .await
            .map_err(|e| storage_error(what, &e))
    }

    /// Stores a structured-cloneable value (such as a `CryptoKey`) under `key`.
    pub async fn put_value(&self, key: &str, value: &JsValue) -> Result<(), Error> {
        let what = "writing IndexedDB";
        let tx = self
            .transaction(IdbTransactionMode::Readwrite, what)
            .await?;
        tx.object_store(OBJECT_STORE)
            .and_then(|s| s.put_with_key(value, &JsValue::from_str(key)))
            .map_err(|e| storage_error(what, &e))?;
        transaction_done(&tx)
            .await
            .map_err(|e| storage_error(what, &e))
    }

    /// Deletes the whole database (tests start from nothing with it).
    pub async fn delete_database(&self) -> Result<(), Error> {
        if let Some(db) = self.db.borrow_mut().take() {
            db.close();
        }
        let factory = window()?
            .indexed_db()
            .map_err(|e| storage_error("deleting IndexedDB", &e))?
            .ok_or_else(|| Error::Unsupported("IndexedDB".to_owned()))?;
        let req = factory
            .delete_database(&self.name)
            .map_err(|e| storage_error("deleting IndexedDB", &e))?;
        request_done(&req)
            .await
            .map(|_| ())
            .map_err(|e| storage_error("deleting IndexedDB", &e))
    }
}

impl Store for IdbStore {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(async move {
            let v = self.get_value(key).await?;
            if v.is_undefined() || v.is_null() {
                return Ok(None);
            }
            Ok(v.dyn_into::<Uint8Array>().ok().map(|a| a.to_vec()))
        })
    }

    fn keys<'a>(&'a self, prefix: &'a str) -> LocalFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            let what = "listing IndexedDB keys";
            let tx = self.transaction(IdbTransactionMode::Readonly, what).await?;
            let req = tx
                .object_store(OBJECT_STORE)
                .and_then(|s| s.get_all_keys())
                .map_err(|e| storage_error(what, &e))?;
            let all = request_done(&req)
                .await
                .map_err(|e| storage_error(what, &e))?;
            let mut keys: Vec<String> = js_sys::Array::from(&all)
                .iter()
                .filter_map(|k| k.as_string())
                .filter(|k| k.starts_with(prefix))
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    fn commit(&self, ops: Vec<StoreOp>) -> LocalFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let what = "writing IndexedDB";
            let tx = self
                .transaction(IdbTransactionMode::Readwrite, what)
                .await?;
            let store = tx
                .object_store(OBJECT_STORE)
                .map_err(|e| storage_error(what, &e))?;
            for op in ops {
                let queued = match op {
                    StoreOp::Put(k, v) => {
                        store.put_with_key(&Uint8Array::from(v.as_slice()), &JsValue::from_str(&k))
                    }
                    StoreOp::Delete(k) => store.delete(&JsValue::from_str(&k)),
                };
                if let Err(e) = queued {
                    let _ = tx.abort();
                    return Err(storage_error(what, &e));
                }
            }
            transaction_done(&tx)
                .await
                .map_err(|e| storage_error(what, &e))
        })
    }
}
