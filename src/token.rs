//! The token source: one azure_identity credential per app registration, bearer tokens for
//! Defender's scope, cached and renewed before expiry.
//!
//! This module owns turning a [`Tenant`]'s credential into an azure_identity credential (a
//! `ClientSecretCredential`, or a `ClientAssertionCredential` whose assertions
//! [`crate::credential::Certificate`] signs in Rust), building it once and reusing it, and
//! classifying Entra ID's failures into [`TokenError`]. The credential's own cache keeps each
//! token until five minutes before it expires and makes concurrent callers share one request.
//!
//! It deliberately does not retry, time out or rate-limit: every credential runs with azure_core
//! retries switched off over the one shared HTTP client, and [`crate::upstream`] owns retries
//! and deadlines, so that those decisions are made in one place.
//!
//! Tokens and secrets are never logged, displayed or put in an error.

use crate::credential::{token_endpoint, Certificate, Credential};
use crate::tenants::{Registry, Tenant, TenantId};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientMethodOptions, ClientOptions, Context, Request, RetryOptions, Transport,
};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use parking_lot::Mutex;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::sync::Arc;

/// Bearer tokens for every registration, from credentials built on first use and kept.
///
/// Cheap to clone: clones share the credentials (and so the cached tokens).
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// The shared HTTP client as azure_core's transport: one connection pool, one set of
    /// trusted CAs, for token requests and Defender calls alike.
    transport: Transport,
    /// Credentials by gateway id, each with the registration it was built from, so that a
    /// reloaded (changed) registration gets a new credential. A panic while it is held cannot
    /// leave it inconsistent (every change is one insert or remove), hence a lock without
    /// poisoning.
    credentials: Mutex<HashMap<TenantId, Entry>>,
}

struct Entry {
    /// The registration the credential was built from (compared with `Arc::ptr_eq`).
    tenant: Arc<Tenant>,
    /// The azure_identity credential; it holds the token cache.
    credential: Arc<dyn TokenCredential>,
}

impl fmt::Debug for TokenSource {
    // Names the tenants that have a credential; never a secret or a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = self.inner.credentials.lock();
        let mut tenants: Vec<&str> = credentials.keys().map(TenantId::as_str).collect();
        tenants.sort_unstable();
        f.debug_struct("TokenSource")
            .field("credentials", &tenants)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// `http` is the one shared reqwest client (trusting extra CAs when configured); it becomes
    /// every credential's transport.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_transport(Transport::new(Arc::new(http)))
    }

    /// A token source over any azure_core transport (tests use a scripted one).
    pub(crate) fn with_transport(transport: Transport) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                credentials: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A bearer token for the tenant's scope (`tenant.scope`), from the tenant's credential
    /// (built on first use, rebuilt if the registration changed).
    pub async fn token(&self, tenant: &Arc<Tenant>) -> Result<BearerToken, TokenError> {
        self.token_for(tenant, &tenant.scope).await
    }

    /// A bearer token for `scope` from the tenant's credential: each source names the scope it
    /// needs (Defender's and Graph's differ). The credential caches one token per scope.
    pub async fn token_for(
        &self,
        tenant: &Arc<Tenant>,
        scope: &str,
    ) -> Result<BearerToken, TokenError> {
        let credential = self.credential(tenant)?;
        let scopes = [scope];
        match credential.get_token(&scopes, None).await {
            Ok(token) => Ok(BearerToken {
                secret: token.token,
                expires_on: token.expires_on,
            }),
            Err(error) => {
                let classified = classify(&error);
                if let Some(ids) = entra_ids(&error) {
                    // The only place Entra's ids go: the log, once per refused request, for a
                    // support case with Microsoft. Callers get the redacted detail.
                    tracing::warn!(
                        tenant = %tenant.id,
                        correlation_id = %ids.correlation_id,
                        trace_id = %ids.trace_id,
                        "Entra ID answered a token request with an error: {classified}"
                    );
                }
                Err(classified)
            }
        }
    }

    /// Forgets the tenant's credential (and so its cached token): the next [`TokenSource::token`]
    /// asks Entra again. Used once after Defender answers 401.
    pub fn renew(&self, tenant: &TenantId) {
        if self.inner.credentials.lock().remove(tenant).is_some() {
            tracing::debug!(tenant = %tenant, "token credential dropped for renewal");
        }
    }

    /// Drops the credentials of tenants not in `registry`, or whose registration changed (not
    /// the same `Arc`), for live reload.
    pub fn retain(&self, registry: &Registry) {
        self.inner.credentials.lock().retain(|id, entry| {
            registry
                .get(id.as_str())
                .is_some_and(|current| Arc::ptr_eq(current, &entry.tenant))
        });
    }

    /// The tenant's credential, built now if there is none for this registration.
    fn credential(&self, tenant: &Arc<Tenant>) -> Result<Arc<dyn TokenCredential>, TokenError> {
        let mut credentials = self.inner.credentials.lock();
        if let Some(entry) = credentials.get(&tenant.id) {
            if Arc::ptr_eq(&entry.tenant, tenant) {
                return Ok(entry.credential.clone());
            }
        }
        // Building does no I/O, so it is fine under the lock; it also means two first callers
        // get the same credential and so share its single token request.
        let credential = build_credential(tenant, &self.inner.transport)?;
        tracing::debug!(
            tenant = %tenant.id,
            kind = tenant.credential.kind(),
            "token credential built"
        );
        credentials.insert(
            tenant.id.clone(),
            Entry {
                tenant: tenant.clone(),
                credential: credential.clone(),
            },
        );
        Ok(credential)
    }
}

/// azure_identity's credential for the tenant, with our transport and cloud and no retries.
fn build_credential(
    tenant: &Tenant,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, TokenError> {
    let mut cloud = CustomConfiguration::default();
    // Always Custom: the authority host comes from our configuration (which resolved the
    // cloud table) in every cloud, never from azure_core's defaults or the environment.
    cloud.authority_host = tenant.authority_host.as_str().to_owned();
    let client_options = ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        transport: Some(transport.clone()),
        retry: RetryOptions::none(),
        per_try_policies: vec![Arc::new(EntraErrors)],
        ..Default::default()
    };
    let built: azure_core::Result<Arc<dyn TokenCredential>> = match &tenant.credential {
        Credential::Secret(secret) => ClientSecretCredential::new(
            &tenant.tenant_id,
            tenant.client_id.clone(),
            Secret::new(secret.expose_secret().to_owned()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map(|credential| credential as Arc<dyn TokenCredential>),
        Credential::Certificate(certificate) => {
            let audience =
                token_endpoint(&tenant.authority_host, &tenant.tenant_id).map_err(|_| {
                    TokenError::Invalid {
                        detail: "the tenant id does not fit in a token endpoint URL".into(),
                    }
                })?;
            let assertion = CertificateAssertion {
                certificate: certificate.clone(),
                audience: audience.into(),
                client_id: tenant.client_id.clone(),
            };
            ClientAssertionCredential::new(
                tenant.tenant_id.clone(),
                tenant.client_id.clone(),
                assertion,
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map(|credential| credential as Arc<dyn TokenCredential>)
        }
    };
    built.map_err(|error| TokenError::Invalid {
        detail: first_sentence(&innermost(&error).to_string()),
    })
}

/// Turns every non-2xx answer of the token endpoint into azure_core's `HttpResponse` error,
/// before azure_identity parses it.
///
/// azure_identity 1.0 reads Entra's error body into a borrowed `&str`, which fails for every
/// real `error_description` (they hold escaped `\r\n` before the trace and correlation ids):
/// the status and AADSTS codes are then lost in a `DataConversion` error, and a revoked secret
/// would look like a transient failure. An HTML page from a proxy loses its status the same way.
/// This policy parses the body itself (owned strings) and fails the call with the status, the
/// codes (comma-separated numbers, as azure_identity would) and the description.
#[derive(Debug)]
struct EntraErrors;

#[async_trait::async_trait]
impl Policy for EntraErrors {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "no transport after the Entra error policy",
            ));
        };
        let response = first.send(ctx, request, rest).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let raw = response.try_into_raw_response().await?;
        let body: EntraErrorBody = serde_json::from_slice(raw.body().as_ref()).unwrap_or_default();
        let error_code = (!body.error_codes.is_empty()).then(|| {
            body.error_codes
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        Err(azure_core::Error::new(
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response: Some(Box::new(raw)),
            },
            body.error_description,
        ))
    }
}

/// The parts of Entra's error body this module reads (`crate::wire::EntraErrorBody` requires
/// fields that proxies and gateways in front of Entra do not send).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct EntraErrorBody {
    error_description: String,
    error_codes: Vec<i64>,
}

/// Signs a fresh client assertion for every token request (azure_identity asks once per
/// request, and tokens are cached, so this is about once an hour per tenant).
struct CertificateAssertion {
    certificate: Arc<Certificate>,
    /// The tenant's token endpoint: the assertion's `aud`.
    audience: String,
    client_id: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("thumbprint", &self.certificate.thumbprint())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.certificate
            .client_assertion(&self.audience, &self.client_id)
            .map_err(|error| {
                azure_core::Error::with_message(ErrorKind::Credential, error.to_string())
            })
    }
}

/// Where the policy stack gets bearer tokens: [`TokenSource`] in the gateway, a double in the
/// policies' unit tests.
#[async_trait::async_trait]
pub trait Tokens: Send + Sync {
    /// A bearer token for `scope` from the tenant's credential.
    async fn token(&self, tenant: &Arc<Tenant>, scope: &str) -> Result<BearerToken, TokenError>;
    /// Forgets the tenant's cached tokens (after a 401).
    fn renew(&self, tenant: &TenantId);
    /// Drops what is held for tenants that left or changed (live reload).
    fn retain(&self, registry: &Registry);
}

#[async_trait::async_trait]
impl Tokens for TokenSource {
    async fn token(&self, tenant: &Arc<Tenant>, scope: &str) -> Result<BearerToken, TokenError> {
        self.token_for(tenant, scope).await
    }

    fn renew(&self, tenant: &TenantId) {
        TokenSource::renew(self, tenant);
    }

    fn retain(&self, registry: &Registry) {
        TokenSource::retain(self, registry);
    }
}

/// A bearer token for Defender. A credential: it never appears in `Debug`, logs or errors.
#[derive(Clone)]
pub struct BearerToken {
    secret: Secret,
    expires_on: time::OffsetDateTime,
}

impl BearerToken {
    /// The token, for the `Authorization: Bearer` header and nothing else.
    pub fn secret(&self) -> &str {
        self.secret.secret()
    }

    /// A token that no Entra ID issued, for the policies' test doubles.
    #[cfg(test)]
    pub(crate) fn for_tests(secret: &str) -> Self {
        Self {
            secret: Secret::new(secret.to_owned()),
            expires_on: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        }
    }

    /// When Entra said the token expires.
    pub fn expires_on(&self) -> time::OffsetDateTime {
        self.expires_on
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("secret", &"[redacted]")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Why no token could be had. `Display` is safe to return to API callers: no secret, token,
/// URL or raw response body.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Entra refused the credentials (4xx): AADSTS code(s) and a short, secret-free detail (the
    /// first sentence of `error_description`). Retrying does not help.
    #[error("Entra ID refused the credentials (HTTP {status}): {detail}")]
    Rejected {
        /// HTTP status of the token endpoint's answer.
        status: u16,
        /// AADSTS codes, comma-separated (`AADSTS7000215`), or the OAuth error
        /// (`invalid_client`) when Entra sent no code; may be empty.
        codes: String,
        /// First sentence of Entra's `error_description`.
        detail: String,
    },
    /// Entra could not be reached or failed (transport, timeout, 5xx, 408/429, an answer that is
    /// not a token response). Transient: worth retrying.
    #[error("Entra ID is unavailable: {detail}")]
    Unavailable {
        /// What went wrong, without URLs.
        detail: String,
    },
    /// The credential could not be built or used (bad tenant id, an assertion that cannot be
    /// signed). A configuration problem: retrying does not help.
    #[error("the credential cannot be used: {detail}")]
    Invalid {
        /// What is wrong.
        detail: String,
    },
}

/// Longest detail taken from an Entra message.
const MAX_DETAIL_CHARS: usize = 200;

/// Maps an azure_core error from `get_token` to a [`TokenError`].
///
/// azure_identity wraps every failure as `Credential` ("… authentication failed. …" plus a
/// troubleshooting link) around the real cause: an `HttpResponse` error for Entra's non-2xx
/// answers (`error_code` = the AADSTS codes, message = `error_description`), a
/// `Connection`/`Io` error from the transport, or `DataConversion` for a body that is not
/// JSON. So the chain is walked down to the first error that says what happened.
fn classify(error: &azure_core::Error) -> TokenError {
    let mut current = error;
    loop {
        match current.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                let status = u16::from(*status);
                let description = first_sentence(&current.to_string());
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    let codes = match error_code {
                        Some(codes) => codes
                            .split(',')
                            .map(|code| format!("AADSTS{}", code.trim()))
                            .collect::<Vec<_>>()
                            .join(","),
                        None => raw_response
                            .as_deref()
                            .and_then(|response| oauth_error(response.body().as_ref()))
                            .unwrap_or_default(),
                    };
                    let detail = if description.is_empty() {
                        format!("the token endpoint answered {status}")
                    } else {
                        description
                    };
                    return TokenError::Rejected {
                        status,
                        codes,
                        detail,
                    };
                }
                let detail = if description.is_empty() {
                    format!("the token endpoint answered {status}")
                } else {
                    format!("the token endpoint answered {status}: {description}")
                };
                return TokenError::Unavailable { detail };
            }
            ErrorKind::Connection | ErrorKind::Io => {
                return TokenError::Unavailable {
                    detail: transport_detail(current),
                }
            }
            ErrorKind::DataConversion => {
                return TokenError::Unavailable {
                    detail: "the token endpoint's answer is not a token response".into(),
                }
            }
            ErrorKind::Credential | ErrorKind::Other => {}
        }
        match current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
        {
            Some(inner) => current = inner,
            None => break,
        }
    }
    // No transport or HTTP cause: the credential itself failed (validation, signing).
    TokenError::Invalid {
        detail: first_sentence(&current.to_string()),
    }
}

/// The deepest azure_core error of a chain (the one without azure_identity's wrapping).
fn innermost(error: &azure_core::Error) -> &azure_core::Error {
    let mut current = error;
    while let Some(inner) = current
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
    {
        current = inner;
    }
    current
}

/// A URL-free description of a transport failure: what kind, and the root cause (the I/O or
/// TLS error, e.g. "invalid peer certificate: UnknownIssuer").
fn transport_detail(error: &azure_core::Error) -> String {
    let mut what = match error.kind() {
        ErrorKind::Connection => "cannot connect to the token endpoint",
        _ => "the token request failed",
    };
    let mut root: Option<String> = None;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(reqwest) = cause.downcast_ref::<reqwest::Error>() {
            if reqwest.is_timeout() {
                what = "the token endpoint did not answer in time";
            } else if reqwest.is_connect() {
                what = "cannot connect to the token endpoint";
            }
        } else if cause.downcast_ref::<azure_core::Error>().is_none() {
            // reqwest's own message names the URL; the causes below it do not.
            root = Some(cause.to_string());
        }
        source = cause.source();
    }
    match root {
        Some(root) if !root.is_empty() => format!("{what}: {}", first_sentence(&root)),
        _ => what.to_owned(),
    }
}

/// The OAuth `error` field of an Entra error body (`invalid_client`), if it has one.
fn oauth_error(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    serde_json::from_slice::<OAuthError>(body)
        .ok()
        .map(|body| body.error)
        .filter(|error| {
            !error.is_empty()
                && error.len() <= 64
                && error
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Entra's trace and correlation ids of a refusal, as Entra's JSON body gives them.
struct EntraIds {
    trace_id: String,
    correlation_id: String,
}

/// The ids of the Entra error body in `error`'s chain, when they are GUIDs (anything else is
/// not logged: the body is the network's, and a log line must not be forged from it).
fn entra_ids(error: &azure_core::Error) -> Option<EntraIds> {
    #[derive(serde::Deserialize)]
    struct Ids {
        #[serde(default)]
        trace_id: String,
        #[serde(default)]
        correlation_id: String,
    }
    let mut current = error;
    loop {
        if let ErrorKind::HttpResponse {
            raw_response: Some(response),
            ..
        } = current.kind()
        {
            let ids: Ids = serde_json::from_slice(response.body().as_ref()).ok()?;
            let is_guid = |id: &str| id.len() == 36 && uuid::Uuid::parse_str(id).is_ok();
            return (is_guid(&ids.trace_id) || is_guid(&ids.correlation_id)).then(|| EntraIds {
                trace_id: if is_guid(&ids.trace_id) {
                    ids.trace_id
                } else {
                    String::new()
                },
                correlation_id: if is_guid(&ids.correlation_id) {
                    ids.correlation_id
                } else {
                    String::new()
                },
            });
        }
        current = current
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())?;
    }
}

/// What replaces an id (GUID) in a detail shown to callers.
const REDACTED_ID: &str = "(id removed)";

/// Entra's text without what a caller has no need for: everything from the first `Trace ID:`,
/// `Correlation ID:` or `Timestamp:` on (Entra appends them, on new lines or the same one), and
/// every GUID (app, client and tenant ids), which becomes [`REDACTED_ID`]. The AADSTS code and
/// the message stay. The ids go to the log instead (see [`TokenSource::token`]).
fn redact(message: &str) -> String {
    let cut = ["Trace ID:", "Correlation ID:", "Timestamp:"]
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
    let message = &message[..cut];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((start, end)) = find_guid(rest) {
        out.push_str(&rest[..start]);
        out.push_str(REDACTED_ID);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Byte range of the first GUID (`8-4-4-4-12` hex digits, any case, not part of a longer run of
/// hex digits) in `text`.
fn find_guid(text: &str) -> Option<(usize, usize)> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let bytes = text.as_bytes();
    let matches_at = |start: usize| {
        let mut position = start;
        for (index, group) in GROUPS.iter().enumerate() {
            if index > 0 {
                if bytes.get(position) != Some(&b'-') {
                    return false;
                }
                position += 1;
            }
            let Some(digits) = bytes.get(position..position + group) else {
                return false;
            };
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            position += group;
        }
        true
    };
    let hex_at = |index: usize| bytes.get(index).is_some_and(u8::is_ascii_hexdigit);
    (0..bytes.len().saturating_sub(LEN - 1))
        .find(|&start| {
            (start == 0 || !hex_at(start - 1)) && !hex_at(start + LEN) && matches_at(start)
        })
        .map(|start| (start, start + LEN))
}

/// The first line and sentence of a message, [redacted](redact), at most [`MAX_DETAIL_CHARS`]
/// characters: Entra's descriptions go on with trace and correlation ids and timestamps, and
/// name the app and the tenant by id.
fn first_sentence(message: &str) -> String {
    let message = redact(message);
    let line = message.trim().lines().next().unwrap_or_default().trim();
    let sentence = match line.find(". ") {
        Some(end) => &line[..=end],
        None => line,
    };
    if sentence.chars().count() <= MAX_DETAIL_CHARS {
        sentence.to_owned()
    } else {
        let mut short: String = sentence.chars().take(MAX_DETAIL_CHARS).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{Cloud, QuotaLimits};
    use azure_core::http::headers::Headers;
    use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode};
    use base64::Engine as _;
    use secrecy::SecretString;
    use std::collections::VecDeque;
    use url::Url;

    const TENANT_GUID: &str = "8f2c1a3e-0000-4000-8000-000000000001";
    const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
    const SECRET: &str = "super-secret-value-123";

    /// A scripted token endpoint: answers in order, records what it was sent.
    #[derive(Debug, Default)]
    struct ScriptedEntra {
        answers: Mutex<VecDeque<azure_core::Result<(u16, String)>>>,
        requests: Mutex<Vec<(String, String)>>,
    }

    impl ScriptedEntra {
        fn answering(answers: Vec<azure_core::Result<(u16, String)>>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                requests: Mutex::default(),
            })
        }

        fn requests(&self) -> Vec<(String, String)> {
            self.requests.lock().clone()
        }
    }

    #[async_trait::async_trait]
    impl HttpClient for ScriptedEntra {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
            let body = match request.body() {
                Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Body::SeekableStream(_) => String::new(),
            };
            self.requests.lock().push((request.url().to_string(), body));
            let answer = self
                .answers
                .lock()
                .pop_front()
                .unwrap_or_else(|| Ok((500, "{}".into())));
            let (status, body) = answer?;
            Ok(AsyncRawResponse::from_bytes(
                StatusCode::from(status),
                Headers::new(),
                body.into_bytes(),
            ))
        }
    }

    fn token_body(token: &str) -> azure_core::Result<(u16, String)> {
        Ok((
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"{token}"}}"#
            ),
        ))
    }

    fn entra_error(status: u16, code: u32, description: &str) -> azure_core::Result<(u16, String)> {
        Ok((
            status,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": description,
                "error_codes": [code],
                "trace_id": "t", "correlation_id": "c"
            })
            .to_string(),
        ))
    }

    fn tenant(id: &str, credential: Credential) -> Tenant {
        Tenant {
            id: TenantId::parse(id).expect("id"),
            name: id.to_owned(),
            tenant_id: TENANT_GUID.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            credential,
            cloud: Cloud::Custom,
            geo: None,
            authority_host: Url::parse("https://login.example.test").expect("url"),
            api_base: Url::parse("https://api.example.test").expect("url"),
            scope: crate::wire::DEFENDER_SCOPE.to_owned(),
            tags: Vec::new(),
            quota: QuotaLimits {
                per_minute: 100,
                per_hour: 1500,
            },
            sources: crate::tenants::TenantSources::default(),
        }
    }

    fn secret() -> Credential {
        Credential::Secret(SecretString::from(SECRET))
    }

    fn secret_tenant(id: &str) -> Arc<Tenant> {
        Arc::new(tenant(id, secret()))
    }

    fn source(entra: &Arc<ScriptedEntra>) -> TokenSource {
        TokenSource::with_transport(Transport::new(entra.clone()))
    }

    fn form(body: &str) -> HashMap<String, String> {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[tokio::test]
    async fn a_secret_credential_posts_client_credentials_and_caches_the_token() {
        let entra = ScriptedEntra::answering(vec![token_body("token-1")]);
        let tokens = source(&entra);
        let contoso = secret_tenant("contoso");

        let token = tokens.token(&contoso).await.expect("token");
        assert_eq!(token.secret(), "token-1");
        assert!(token.expires_on() > time::OffsetDateTime::now_utc());
        let again = tokens.clone().token(&contoso).await.expect("cached token");
        assert_eq!(again.secret(), "token-1");

        let requests = entra.requests();
        assert_eq!(requests.len(), 1, "the second token came from the cache");
        let (url, body) = &requests[0];
        assert_eq!(
            url,
            &format!("https://login.example.test/{TENANT_GUID}/oauth2/v2.0/token")
        );
        let form = form(body);
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], CLIENT_ID);
        assert_eq!(form["client_secret"], SECRET);
        assert_eq!(form["scope"], crate::wire::DEFENDER_SCOPE);
    }

    #[tokio::test]
    async fn concurrent_first_callers_share_one_token_request() {
        let entra = ScriptedEntra::answering(vec![token_body("shared")]);
        let tokens = source(&entra);
        let contoso = secret_tenant("contoso");
        let calls = (0..8).map(|_| tokens.token(&contoso));
        for token in futures::future::join_all(calls).await {
            assert_eq!(token.expect("token").secret(), "shared");
        }
        assert_eq!(entra.requests().len(), 1);
    }

    #[tokio::test]
    async fn renew_and_retain_make_the_next_call_ask_entra_again() {
        let entra = ScriptedEntra::answering(vec![
            token_body("first"),
            token_body("renewed"),
            token_body("reloaded"),
            token_body("changed"),
        ]);
        let tokens = source(&entra);
        let registry = Registry::new(vec![
            tenant("contoso", secret()),
            tenant("fabrikam", secret()),
        ]);
        let contoso = registry.get("contoso").expect("contoso").clone();

        assert_eq!(
            tokens.token(&contoso).await.expect("token").secret(),
            "first"
        );
        tokens.renew(&contoso.id);
        assert_eq!(
            tokens.token(&contoso).await.expect("token").secret(),
            "renewed"
        );

        // A reload that keeps the registration keeps its credential and cached token.
        tokens.retain(&registry);
        assert_eq!(
            tokens.token(&contoso).await.expect("token").secret(),
            "renewed"
        );
        assert_eq!(entra.requests().len(), 2);

        // A reload that rebuilt it (another `Arc`) drops it.
        let reloaded = Registry::new(vec![tenant("contoso", secret())]);
        tokens.retain(&reloaded);
        assert!(!format!("{tokens:?}").contains("contoso"), "{tokens:?}");
        let contoso = reloaded.get("contoso").expect("contoso").clone();
        assert_eq!(
            tokens.token(&contoso).await.expect("token").secret(),
            "reloaded"
        );

        // A changed registration gets a new credential even before `retain` runs.
        let changed = Arc::new(tenant("contoso", secret()));
        assert_eq!(
            tokens.token(&changed).await.expect("token").secret(),
            "changed"
        );
        assert_eq!(entra.requests().len(), 4);
    }

    #[tokio::test]
    async fn a_certificate_credential_posts_a_signed_assertion_for_the_token_endpoint() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let cert = rcgen::CertificateParams::new(vec!["t".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let certificate = Certificate::from_bytes(pem.as_bytes(), None).expect("certificate");
        let entra = ScriptedEntra::answering(vec![token_body("cert-token")]);
        let tokens = source(&entra);
        let litware = Arc::new(tenant(
            "litware",
            Credential::Certificate(Arc::new(certificate)),
        ));

        assert_eq!(
            tokens.token(&litware).await.expect("token").secret(),
            "cert-token"
        );
        let requests = entra.requests();
        let (url, body) = &requests[0];
        let form = form(body);
        assert_eq!(
            form["client_assertion_type"],
            crate::wire::JWT_BEARER_ASSERTION_TYPE
        );
        assert!(!form.contains_key("client_secret"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[url.as_str()]);
        validation.set_issuer(&[CLIENT_ID]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &form["client_assertion"],
            &jsonwebtoken::DecodingKey::from_rsa_der(key.public_key_raw()),
            &validation,
        )
        .expect("the assertion verifies with the certificate's key")
        .claims;
        assert_eq!(claims["sub"], CLIENT_ID);
        let header = jsonwebtoken::decode_header(&form["client_assertion"]).expect("header");
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der());
        assert_eq!(
            header.x5t,
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1.as_ref()))
        );
    }

    #[tokio::test]
    async fn entra_refusals_are_rejected_with_codes_and_a_short_detail() {
        let description = "AADSTS7000215: Invalid client secret provided. Ensure the secret \
            being sent in the request is the client secret value.\r\nTrace ID: abc\r\n\
            Correlation ID: def\r\nTimestamp: 2026-11-29 10:00:00Z";
        let entra = ScriptedEntra::answering(vec![entra_error(401, 7000215, description)]);
        let error = source(&entra)
            .token(&secret_tenant("contoso"))
            .await
            .expect_err("refused");
        match &error {
            TokenError::Rejected {
                status,
                codes,
                detail,
            } => {
                assert_eq!(*status, 401);
                assert_eq!(codes, "AADSTS7000215");
                assert_eq!(detail, "AADSTS7000215: Invalid client secret provided.");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        let shown = error.to_string();
        assert!(
            !shown.contains(SECRET) && !shown.contains("Trace ID"),
            "{shown}"
        );
        assert!(!shown.contains("https://"), "{shown}");
    }

    #[tokio::test]
    async fn a_refusal_without_codes_falls_back_to_the_oauth_error() {
        let entra = ScriptedEntra::answering(vec![Ok((
            400,
            r#"{"error":"invalid_request","error_description":"Bad scope."}"#.into(),
        ))]);
        let error = source(&entra)
            .token(&secret_tenant("contoso"))
            .await
            .expect_err("refused");
        assert!(
            matches!(&error, TokenError::Rejected { status: 400, codes, .. } if codes == "invalid_request"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn entra_outages_throttling_and_garbage_are_unavailable() {
        let cases = vec![
            entra_error(
                503,
                90033,
                "AADSTS90033: A transient error has occurred. Try again.",
            ),
            entra_error(
                429,
                50196,
                "AADSTS50196: The server terminated an operation.",
            ),
            Ok((502, "<html>Bad gateway</html>".into())),
            Ok((200, "not json".into())),
            Err(azure_core::Error::with_error(
                ErrorKind::Connection,
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
                "failed to execute `reqwest` request",
            )),
        ];
        let expected = [
            "answered 503: AADSTS90033: A transient error has occurred.",
            "answered 429",
            "the token endpoint answered 502",
            "not a token response",
            "cannot connect to the token endpoint: connection refused",
        ];
        for (answer, expected) in cases.into_iter().zip(expected) {
            let entra = ScriptedEntra::answering(vec![answer]);
            let error = source(&entra)
                .token(&secret_tenant("contoso"))
                .await
                .expect_err("fails");
            assert!(
                matches!(&error, TokenError::Unavailable { detail } if detail.contains(expected)),
                "{error:?} / {expected}"
            );
        }
    }

    #[tokio::test]
    async fn a_credential_that_cannot_be_built_is_invalid_and_sends_nothing() {
        let entra = ScriptedEntra::answering(Vec::new());
        let mut bad = tenant("contoso", secret());
        bad.tenant_id = "not a tenant/../id".into();
        let error = source(&entra)
            .token(&Arc::new(bad))
            .await
            .expect_err("invalid");
        assert!(matches!(error, TokenError::Invalid { .. }), "{error:?}");
        assert!(!error.to_string().contains("troubleshoot"), "{error}");
        assert!(entra.requests().is_empty());
    }

    #[tokio::test]
    async fn tokens_and_sources_never_show_secrets_in_debug() {
        let entra = ScriptedEntra::answering(vec![token_body("eyJ.secret-token.sig")]);
        let tokens = source(&entra);
        let token = tokens
            .token(&secret_tenant("contoso"))
            .await
            .expect("token");
        for shown in [format!("{token:?}"), format!("{tokens:?}")] {
            assert!(!shown.contains("secret-token"), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }

    #[tokio::test]
    async fn refusals_naming_the_app_or_the_tenant_by_id_keep_the_code_and_drop_the_ids() {
        let cases = [
            (
                7000222,
                format!("AADSTS7000222: The provided client secret keys for app '{CLIENT_ID}' are expired. Visit the Azure portal. Trace ID: 0a1b2c3d-0000-4000-8000-000000000001 Correlation ID: 0a1b2c3d-0000-4000-8000-000000000002 Timestamp: 2026-11-29 10:00:00Z"),
                "AADSTS7000222: The provided client secret keys for app '(id removed)' are expired.",
            ),
            (
                700016,
                format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{}'. This can happen.\r\nTrace ID: x", CLIENT_ID.to_uppercase(), TENANT_GUID),
                "AADSTS700016: Application with identifier '(id removed)' was not found in the directory '(id removed)'.",
            ),
        ];
        for (code, description, expected) in cases {
            let entra = ScriptedEntra::answering(vec![entra_error(401, code, &description)]);
            let error = source(&entra)
                .token(&secret_tenant("contoso"))
                .await
                .expect_err("refused");
            match &error {
                TokenError::Rejected { detail, codes, .. } => {
                    assert_eq!(detail, expected);
                    assert_eq!(codes, &format!("AADSTS{code}"));
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn redaction_cuts_the_trailing_ids_and_replaces_every_guid() {
        assert_eq!(
            redact("AADSTS1: a 8F2C1A3E-0000-4000-8000-000000000001 b.\r\nTrace ID: t\r\nCorrelation ID: c"),
            "AADSTS1: a (id removed) b.\r\n"
        );
        assert_eq!(redact("Timestamp: 2026 then"), "");
        // Not a GUID: too short, wrong groups, or part of a longer hex run.
        for kept in [
            "8f2c1a3e-0000-4000-8000-00000000000",
            "8f2c1a3e00000-4000-8000-000000000001",
            "a8f2c1a3e-0000-4000-8000-000000000001",
            "8f2c1a3e-0000-4000-8000-0000000000012",
        ] {
            assert_eq!(redact(kept), kept);
        }
        assert_eq!(
            redact("é11111111-2222-4333-8444-555555555555é"),
            "é(id removed)é"
        );
    }

    #[test]
    fn first_sentences_are_short_single_lines() {
        assert_eq!(first_sentence("One. Two."), "One.");
        assert_eq!(first_sentence("  no period  "), "no period");
        assert_eq!(first_sentence("line one\nline two"), "line one");
        assert_eq!(first_sentence("v1.0 is fine. Next"), "v1.0 is fine.");
        let long = "x".repeat(500);
        assert_eq!(first_sentence(&long).chars().count(), MAX_DETAIL_CHARS + 1);
    }
}
