//! Token source (placeholder until the azure_identity implementation lands).

use crate::tenants::{Registry, Tenant, TenantId};
use std::sync::Arc;

/// Tokens per tenant.
#[derive(Debug, Clone)]
pub struct TokenSource {}

/// A bearer token.
pub struct BearerToken(String);

impl BearerToken {
    /// The token text.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Entra refused the credentials.
    #[error("{detail}")]
    Rejected {
        /// Status.
        status: u16,
        /// Codes.
        codes: String,
        /// Detail.
        detail: String,
    },
    /// Entra unavailable.
    #[error("{detail}")]
    Unavailable {
        /// Detail.
        detail: String,
    },
    /// Bad credential.
    #[error("{detail}")]
    Invalid {
        /// Detail.
        detail: String,
    },
}

impl TokenSource {
    /// New.
    pub fn new(_http: reqwest::Client) -> Self {
        Self {}
    }
    /// Token.
    pub async fn token(&self, _tenant: &Arc<Tenant>) -> Result<BearerToken, TokenError> {
        Err(TokenError::Invalid {
            detail: "not implemented".into(),
        })
    }
    /// Renew.
    pub fn renew(&self, _tenant: &TenantId) {}
    /// Retain.
    pub fn retain(&self, _registry: &Registry) {}
}
