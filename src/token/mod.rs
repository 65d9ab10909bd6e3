//! The token source: bearer tokens for each app registration and scope, from azure_identity,
//! cached and renewed before expiry.
//!
//! This module owns turning a [`Tenant`]'s credential into an azure_identity credential (a
//! `ClientSecretCredential`, or a `ClientAssertionCredential` whose assertions
//! [`crate::credential::Certificate`] signs in Rust), caching the tokens it gets, and
//! classifying Entra ID's failures into [`TokenError`]. The cache keeps each token until five
//! minutes before it expires (azure_identity's own margin) and makes concurrent callers share
//! one request.
//!
//! Why tokens, not credentials, are kept: an azure_identity credential carries its own HTTP
//! pipelines (three, each with a set of header names) and token cache, about 2 KiB per
//! registration whether or not it is used. With thousands of registrations that was most of the
//! gateway's memory (issue 15, `docs/performance.md`), so a credential is built for each token
//! request (about once an hour per tenant and scope, a few microseconds) and dropped after it;
//! what stays is the token itself.
//!
//! It deliberately does not retry, time out or rate-limit: every credential runs with azure_core
//! retries switched off over the one shared HTTP client, and the policy stack
//! ([`crate::policy`]) owns retries and deadlines, so that those decisions are made in one place.
//!
//! Tokens and secrets are never logged, displayed or put in an error.
//!
//! # Layout
//!
//! - this file: [`TokenSource`] (the tokens, per registration and scope, and their lifecycle),
//!   the [`Tokens`] seam the policy stack calls, [`BearerToken`] and [`TokenError`].
//! - `identity`: building the azure_identity credential for a registration (secret or signed
//!   certificate assertion), with our transport, cloud and no retries.
//! - `entra`: Entra ID's error answers: the `EntraErrors` workaround for azure_identity, the
//!   classification into [`TokenError`] and the redaction of ids from what callers see.
//! - `tests`: unit tests against a scripted token endpoint.

mod entra;
mod identity;
#[cfg(test)]
mod tests;

use crate::tenants::{Registry, Tenant, TenantId};
use azure_core::credentials::Secret;
use azure_core::http::Transport;
use entra::{classify, entra_ids};
use futures::future::{BoxFuture, FutureExt, Shared};
use identity::build_credential;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// How long before Entra's expiry a token stops being used: azure_identity's own margin, so a
/// token never reaches Defender with less than five minutes left.
const RENEW_BEFORE_EXPIRY: time::Duration = time::Duration::minutes(5);

/// Bearer tokens for every registration and scope, asked of azure_identity on first use and
/// kept until shortly before they expire.
///
/// Cheap to clone: clones share the cached tokens.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// The shared HTTP client as azure_core's transport: one connection pool, one set of
    /// trusted CAs, for token requests and Defender calls alike.
    transport: Transport,
    /// Tokens by (gateway id, scope), or the request under way for one: concurrent first
    /// callers share that request. A held token serves until [`RENEW_BEFORE_EXPIRY`] before
    /// Entra's expiry. A map of our own rather than a general cache (moka, before): one entry
    /// per registration and scope, known and bounded by the registry, and moka's bookkeeping
    /// per entry was several megabytes at 10,000 tenants (docs/performance.md).
    tokens: Mutex<HashMap<TokenKey, Slot>>,
}

/// A gateway tenant id and a scope (Defender's or Graph's), both shared with the registration:
/// a key costs no allocation of its own.
type TokenKey = (TenantId, Arc<str>);

/// A token request under way, shared by every caller waiting for it.
type Asking = Shared<BoxFuture<'static, Result<Held, TokenError>>>;

/// What the map holds for a key.
enum Slot {
    /// A token, until it is due for renewal.
    Held(Held),
    /// The request for one; its first caller to finish stores what it got.
    Asking(Asking),
}

/// A cached token and the registration it was asked for.
#[derive(Clone)]
struct Held {
    /// Compared with `Arc::ptr_eq`: a reloaded (changed) registration gets a new token.
    tenant: Arc<Tenant>,
    token: BearerToken,
}

impl Held {
    /// Whether it still serves: more than [`RENEW_BEFORE_EXPIRY`] left, for this registration.
    fn serves(&self, tenant: &Arc<Tenant>) -> bool {
        Arc::ptr_eq(&self.tenant, tenant)
            && self.token.expires_on - RENEW_BEFORE_EXPIRY > time::OffsetDateTime::now_utc()
    }
}

impl fmt::Debug for TokenSource {
    // Names the tenants that hold a token; never a secret or a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tenants: Vec<String> = self
            .inner
            .tokens
            .lock()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Held(_)))
            .map(|(key, _)| key.0.as_str().to_owned())
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        f.debug_struct("TokenSource")
            .field("tokens_for", &tenants)
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
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A bearer token for the tenant's Defender scope, from the tenant's credential (built on
    /// first use, rebuilt if the registration changed).
    pub async fn token(&self, tenant: &Arc<Tenant>) -> Result<BearerToken, TokenError> {
        let scope = tenant
            .endpoint(crate::model::UpstreamService::Defender)
            .map_or_else(
                || Arc::from(crate::wire::DEFENDER_SCOPE),
                |endpoint| endpoint.scope.clone(),
            );
        self.token_for(tenant, &scope).await
    }

    /// A bearer token for `scope` from the tenant's credential: each source names the scope it
    /// needs (Defender's and Graph's differ). Each (tenant, scope) has its own cached token.
    pub async fn token_for(
        &self,
        tenant: &Arc<Tenant>,
        scope: &Arc<str>,
    ) -> Result<BearerToken, TokenError> {
        let key: TokenKey = (tenant.id.clone(), scope.clone());
        let asking = {
            let mut tokens = self.inner.tokens.lock();
            match tokens.get(&key) {
                Some(Slot::Held(held)) if held.serves(tenant) => return Ok(held.token.clone()),
                Some(Slot::Asking(asking)) => asking.clone(),
                // None, due for renewal, or asked for a registration a reload replaced.
                _ => {
                    // The request holds the transport, not the source: no cycle through the map.
                    let transport = self.inner.transport.clone();
                    let (owned, scope) = (tenant.clone(), scope.clone());
                    let asking: Asking = async move { request(&transport, &owned, &scope).await }
                        .boxed()
                        .shared();
                    tokens.insert(key.clone(), Slot::Asking(asking.clone()));
                    asking
                }
            }
        };
        let result = asking.clone().await;
        let mut tokens = self.inner.tokens.lock();
        // The first caller back stores the outcome, unless the slot moved on meanwhile (renewed,
        // retained away, or another request started).
        let ours =
            matches!(tokens.get(&key), Some(Slot::Asking(current)) if current.ptr_eq(&asking));
        if ours {
            match &result {
                Ok(held) => {
                    tokens.insert(key, Slot::Held(held.clone()));
                }
                // A failure is not kept: the next call asks again (the policy stack paces it).
                Err(_) => {
                    tokens.remove(&key);
                }
            }
        }
        result.map(|held| held.token)
    }

    /// Forgets the tenant's cached tokens: the next [`TokenSource::token`] asks Entra again.
    /// Used once after Defender answers 401.
    pub fn renew(&self, tenant: &TenantId) {
        tracing::debug!(tenant = %tenant, "cached tokens dropped for renewal");
        self.inner.tokens.lock().retain(|key, _| &key.0 != tenant);
    }

    /// Drops the tokens of tenants not in `registry`, or whose registration changed (not the
    /// same `Arc`), for live reload; and the tokens past their renewal time, which no call
    /// would serve again.
    pub fn retain(&self, registry: &Registry) {
        self.inner.tokens.lock().retain(|key, slot| {
            let Some(current) = registry.get(key.0.as_str()) else {
                return false;
            };
            match slot {
                Slot::Held(held) => held.serves(current),
                Slot::Asking(_) => true,
            }
        });
    }
}

/// Asks Entra ID for a token through a credential built for this one request.
async fn request(
    transport: &Transport,
    tenant: &Arc<Tenant>,
    scope: &str,
) -> Result<Held, TokenError> {
    let credential = build_credential(tenant, transport)?;
    tracing::debug!(
        tenant = %tenant.id,
        kind = tenant.credential.kind(),
        "asking Entra ID for a token"
    );
    match credential.get_token(&[scope], None).await {
        Ok(token) => Ok(Held {
            tenant: tenant.clone(),
            token: BearerToken {
                secret: token.token,
                expires_on: token.expires_on,
            },
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

/// Where the policy stack gets bearer tokens: [`TokenSource`] in the gateway, a double in the
/// policies' unit tests.
#[async_trait::async_trait]
pub trait Tokens: Send + Sync {
    /// A bearer token for `scope` from the tenant's credential.
    async fn token(
        &self,
        tenant: &Arc<Tenant>,
        scope: &Arc<str>,
    ) -> Result<BearerToken, TokenError>;
    /// Forgets the tenant's cached tokens (after a 401).
    fn renew(&self, tenant: &TenantId);
    /// Drops what is held for tenants that left or changed (live reload).
    fn retain(&self, registry: &Registry);
}

#[async_trait::async_trait]
impl Tokens for TokenSource {
    async fn token(
        &self,
        tenant: &Arc<Tenant>,
        scope: &Arc<str>,
    ) -> Result<BearerToken, TokenError> {
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
/// URL or raw response body. `Clone`, because callers who shared one token request share its
/// failure.
#[derive(Debug, Clone, thiserror::Error)]
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
