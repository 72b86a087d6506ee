//! The network edge: HTTP through reqwest (its wasm client is the browser's `fetch`), access
//! tokens from the app's callback, `navigator.onLine` and the `online` event, and the clock
//! (`Date.now`, `setTimeout`). Batch bodies are gzip-compressed by the browser's
//! `CompressionStream` on the way out (the server bounds what they expand to).
//!
//! reqwest's `RequestBuilder::timeout` aborts the request through an `AbortController` whose
//! timer lives as long as the response, so it also bounds the body read (the faults e2e "a
//! very slow network" has answers trickle in past the timeout). What reqwest does not do is
//! say so: a body read cut by that timer fails as a decode error carrying the abort reason,
//! not as a timeout. [`send`] tells them apart by the clock (a failure at or after the
//! deadline is the timeout) — the only wrapper kept around it.

use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::Response;

use super::{deferred, describe, wait, window};
use crate::error::Error;
use crate::ports::{
    Clock, Connectivity, HttpRequest, HttpResponse, LocalFuture, Tokens, Transport, TransportError,
};

/// `setTimeout` as a future.
pub async fn sleep_ms(ms: u64) {
    let (promise, resolve) = deferred();
    let Ok(w) = window() else { return };
    let timeout = i32::try_from(ms).unwrap_or(i32::MAX);
    if w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, timeout)
        .is_ok()
    {
        let _ = wait(promise).await;
    }
}

/// `Date.now()` and `setTimeout`.
pub struct BrowserClock;

impl Clock for BrowserClock {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }
    fn sleep(&self, ms: u64) -> LocalFuture<'_, ()> {
        Box::pin(sleep_ms(ms))
    }
}

/// `navigator.onLine` and the `online` event.
pub struct BrowserNet;

impl Connectivity for BrowserNet {
    fn is_online(&self) -> bool {
        window().map(|w| w.navigator().on_line()).unwrap_or(true)
    }
    fn until_online(&self) -> LocalFuture<'_, ()> {
        Box::pin(async {
            let Ok(w) = window() else { return };
            let (promise, resolve) = deferred();
            let options = web_sys::AddEventListenerOptions::new();
            options.set_once(true);
            if w.add_event_listener_with_callback_and_add_event_listener_options(
                "online", &resolve, &options,
            )
            .is_err()
            {
                return;
            }
            // Came back between the check and the listener: do not wait for the next change.
            if w.navigator().on_line() {
                let _ = w.remove_event_listener_with_callback("online", &resolve);
                return;
            }
            let _ = wait(promise).await;
        })
    }
}

/// The app's token provider: `(refresh: boolean) => Promise<string>`.
pub struct JsTokens {
    provider: Function,
}

impl JsTokens {
    /// Wraps the callback.
    pub fn new(provider: Function) -> Self {
        Self { provider }
    }
}

impl Tokens for JsTokens {
    fn token(&self, refresh: bool) -> LocalFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let fail = |e: &JsValue| Error::TokenProvider(describe(e));
            let returned = self
                .provider
                .call1(&JsValue::NULL, &JsValue::from_bool(refresh))
                .map_err(|e| fail(&e))?;
            let value = match returned.dyn_into::<Promise>() {
                Ok(p) => wait(p).await.map_err(|e| fail(&e))?,
                Err(v) => v,
            };
            value.as_string().filter(|t| !t.is_empty()).ok_or_else(|| {
                Error::TokenProvider(format!(
                    "it must resolve to a non-empty string (the bearer token), but gave {}",
                    describe(&value)
                ))
            })
        })
    }
}

/// reqwest over the browser's `fetch`, with an abort timeout; JSON bodies of
/// [`GZIP_FROM_BYTES`] or more go gzip-compressed.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport with its own reqwest client.
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::new(),
        }
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new()
    }
}

/// JSON bodies this long or longer are sent gzip-compressed (`Content-Encoding: gzip`) where
/// the browser has `CompressionStream`; shorter ones gain less than the header costs.
pub const GZIP_FROM_BYTES: usize = 1024;

#[wasm_bindgen]
extern "C" {
    /// The platform's `CompressionStream` (web-sys has it only behind its unstable-APIs flag).
    #[wasm_bindgen(js_name = CompressionStream)]
    type GzipStream;

    #[wasm_bindgen(constructor, catch, js_class = "CompressionStream")]
    fn new(format: &str) -> Result<GzipStream, JsValue>;
}

/// `body` gzip-compressed by the browser's own `CompressionStream` (native code, off the wasm
/// heap), or `None` where the browser has none (then the body goes as it is).
async fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let has = js_sys::Reflect::has(&js_sys::global(), &JsValue::from_str("CompressionStream"));
    if !matches!(has, Ok(true)) {
        return None;
    }
    let stream = GzipStream::new("gzip").ok()?;
    let parts = js_sys::Array::of1(&Uint8Array::from(body));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).ok()?;
    let compressed = blob
        .stream()
        .pipe_through(stream.unchecked_ref::<web_sys::ReadableWritablePair>());
    let response = Response::new_with_opt_readable_stream(Some(&compressed)).ok()?;
    let buffer = wait(response.array_buffer().ok()?).await.ok()?;
    Some(Uint8Array::new(&buffer).to_vec())
}

async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, TransportError> {
    let method = if request.method == "POST" {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    let timeout = std::time::Duration::from_millis(request.timeout_ms);
    let mut builder = client
        .request(method, &request.url)
        .bearer_auth(&request.token)
        .timeout(timeout);
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some((body, content_type)) = request.body {
        builder = builder.header("Content-Type", content_type);
        let compressed = if content_type.ends_with("json") && body.len() >= GZIP_FROM_BYTES {
            gzip(&body).await
        } else {
            None
        };
        builder = match compressed {
            Some(gz) => builder.header("Content-Encoding", "gzip").body(gz),
            None => builder.body(body),
        };
    }
    let deadline = js_sys::Date::now() + request.timeout_ms as f64;
    let failed = |e: reqwest::Error| {
        if e.is_timeout() || js_sys::Date::now() >= deadline {
            TransportError::Timeout
        } else {
            TransportError::Network(e.to_string())
        }
    };
    let response = builder.send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.map_err(failed)?;
    Ok(HttpResponse {
        status,
        retry_after,
        body: body.to_vec(),
    })
}

impl Transport for HttpTransport {
    fn send(&self, request: HttpRequest) -> LocalFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(send(&self.client, request))
    }
}
