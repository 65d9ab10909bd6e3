//! A local webhook receiver for `scoregate demo` and tests: an HTTP server on a loopback port
//! that verifies each request's Standard Webhooks signature, logs the event and keeps it.
//!
//! The verification is written from the specification, not with the signer's code path:
//! HMAC-SHA256 over `id.timestamp.body`, compared in constant time with every `v1,` signature
//! of the space-separated `webhook-signature` header.

use super::WebhookSecret;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use parking_lot::Mutex;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// One event the receiver accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The `webhook-id` header.
    pub id: String,
    /// The `webhook-timestamp` header.
    pub timestamp: i64,
    /// The body, parsed.
    pub body: serde_json::Value,
}

struct State {
    secret: WebhookSecret,
    events: Mutex<Vec<ReceivedEvent>>,
}

/// A running receiver; stopped when dropped.
pub struct LoggingReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for LoggingReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for LoggingReceiver {
    fn drop(&mut self) {
        // Stopping returns a future; the server stops whether or not it is awaited.
        drop(self.handle.stop(false));
    }
}

impl LoggingReceiver {
    /// Starts a receiver on `127.0.0.1` (a free port) that accepts events signed with
    /// `secret`: 204 for a valid signature (the event is logged at info and kept), 401
    /// otherwise. Must be called inside a tokio runtime.
    pub fn start(secret: WebhookSecret) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            secret,
            events: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            addr,
            state,
            handle,
        })
    }

    /// The URL to put in `[[webhooks]] url`.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The events accepted so far, in arrival order.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.state.events.lock().clone()
    }
}

async fn receive(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return HttpResponse::BadRequest().body("missing webhook-* headers");
    };
    if !verify(state.secret.bytes(), &id, &timestamp, &body, &signatures) {
        tracing::warn!(webhook_id = %id, "receiver: a webhook with a wrong signature was refused");
        return HttpResponse::Unauthorized().body("bad signature");
    }
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return HttpResponse::BadRequest().body("not JSON");
    };
    tracing::info!(
        webhook_id = %id,
        event = %parsed["type"].as_str().unwrap_or_default(),
        alert = %parsed["data"]["alert"].as_str().unwrap_or_default(),
        tenant = %parsed["data"]["tenant"].as_str().unwrap_or_default(),
        "receiver: webhook received, signature valid: {parsed}"
    );
    state.events.lock().push(ReceivedEvent {
        id,
        timestamp: timestamp.parse().unwrap_or_default(),
        body: parsed,
    });
    HttpResponse::NoContent().finish()
}

/// Whether any `v1,` signature in `signatures` is the HMAC of `id.timestamp.body`.
fn verify(secret: &[u8], id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
    use aws_lc_rs::hmac;
    use base64::Engine as _;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    signatures.split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
            })
            .is_some_and(|tag| hmac::verify(&key, &signed, &tag).is_ok())
    })
}
