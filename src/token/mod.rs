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
//! retries switched off over the one shared HTTP client, and the policy stack
//! ([`crate::policy`]) owns retries and deadlines, so that those decisions are made in one place.
//!
//! Tokens and secrets are never logged, displayed or put in an error.
//!
//! # Layout
//!
//! - this file: [`TokenSource`] (the credentials, one per registration, and their lifecycle),
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
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::Transport;
use entra::{classify, entra_ids};
use identity::build_credential;
use parking_lot::Mutex;
use std::collections::HashMap;
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
