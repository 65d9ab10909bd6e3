//! Wire types of the two Microsoft services scoregate talks to: Entra ID's token endpoint and
//! Defender for Endpoint's `GET /api/configurationScore`.
//!
//! They are the only types the gateway and the emulator share: both sides must agree on the
//! bytes on the wire, and nothing else. Shapes follow `MDE-API.md`; unknown fields are ignored
//! when reading, as Microsoft may add fields at any time.

use serde::{Deserialize, Serialize};

/// The resource (token audience) Defender for Endpoint expects, whatever host is called.
pub const DEFENDER_RESOURCE: &str = "https://api.securitycenter.microsoft.com";

/// The client-credentials scope for [`DEFENDER_RESOURCE`].
pub const DEFENDER_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// Path of the device secure score call, relative to an API base.
pub const CONFIGURATION_SCORE_PATH: &str = "/api/configurationScore";

/// `client_assertion_type` of a certificate (JWT bearer) client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Body of a successful `GET /api/configurationScore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationScore {
    /// OData context; may name a regional host, so it is never validated.
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    /// When Defender answered, as Defender wrote it (7 fractional digits are normal): kept verbatim.
    pub time: String,
    /// Raw score points (no maximum is returned).
    pub score: f64,
}

/// Defender's error envelope: `{"error": {"code", "message", "target"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenderErrorBody {
    /// The error itself.
    pub error: DefenderError,
}

/// One Defender error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenderError {
    /// Stable code such as `TooManyRequests`, `Unauthorized`, `Forbidden`.
    pub code: String,
    /// Free text; never parsed for meaning.
    #[serde(default)]
    pub message: String,
    /// Correlation id Microsoft support asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Successful answer of Entra's token endpoint (client credentials grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires (typically 3599).
    pub expires_in: i64,
    /// Seconds until the token expires when Entra is degraded.
    pub ext_expires_in: i64,
    /// The bearer token.
    pub access_token: String,
}

/// Entra's error shape for the token endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntraErrorBody {
    /// OAuth error such as `invalid_client`, `unauthorized_client`, `invalid_request`.
    pub error: String,
    /// Starts with the AADSTS code, e.g. `AADSTS7000215: Invalid client secret provided. ...`.
    pub error_description: String,
    /// Numeric AADSTS codes, e.g. `[7000215]`.
    #[serde(default)]
    pub error_codes: Vec<i64>,
    /// When the error happened.
    #[serde(default)]
    pub timestamp: String,
    /// Entra's trace id.
    #[serde(default)]
    pub trace_id: String,
    /// Entra's correlation id.
    #[serde(default)]
    pub correlation_id: String,
}
