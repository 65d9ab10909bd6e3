//! Wire types of the Microsoft services scoregate talks to: Entra ID's token endpoint, Defender
//! for Endpoint's `GET /api/configurationScore` and `GET /api/exposureScore`, and Microsoft
//! Graph's `GET /v1.0/security/secureScores` (and the path of its control profiles, whose
//! shapes `controls::graph` reads), with the [`lenient`] readers for Graph's drifting types.
//!
//! They are the only types the gateway and the emulator share: both sides must agree on the
//! bytes on the wire, and nothing else. Shapes follow Microsoft's API references; unknown fields
//! are ignored when reading, as Microsoft may add fields at any time (Graph's secure scores carry
//! several undocumented ones), and fields Microsoft documents as nullable are optional.

use serde::{Deserialize, Serialize};

/// The resource (token audience) Defender for Endpoint expects, whatever host is called.
pub const DEFENDER_RESOURCE: &str = "https://api.securitycenter.microsoft.com";

/// The client-credentials scope for [`DEFENDER_RESOURCE`].
pub const DEFENDER_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// Path of the device secure score call, relative to an API base.
pub const CONFIGURATION_SCORE_PATH: &str = "/api/configurationScore";

/// Path of the exposure score call, relative to an API base (same token and quota as
/// [`CONFIGURATION_SCORE_PATH`]).
pub const EXPOSURE_SCORE_PATH: &str = "/api/exposureScore";

/// The resource (token audience) of Microsoft Graph in the commercial cloud (and GCC).
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// The client-credentials scope for [`GRAPH_RESOURCE`].
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Path of Microsoft Secure Score's daily snapshots, relative to a Graph base (newest first;
/// `?$top=1` for the current one).
pub const SECURE_SCORES_PATH: &str = "/v1.0/security/secureScores";

/// Path of Secure Score's control profiles (title, maximum, rank, remediation, per-tenant state),
/// relative to a Graph base; paged with `@odata.nextLink`.
pub const SECURE_SCORE_CONTROL_PROFILES_PATH: &str = "/v1.0/security/secureScoreControlProfiles";

/// The application role Defender requires for both score endpoints.
pub const DEFENDER_SCORE_ROLE: &str = "Score.Read.All";

/// The application role Graph requires for [`SECURE_SCORES_PATH`].
pub const GRAPH_SECURE_SCORE_ROLE: &str = "SecurityEvents.Read.All";

/// `client_assertion_type` of a certificate (JWT bearer) client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Body of a successful `GET /api/configurationScore` (and, as [`ExposureScore`], of
/// `GET /api/exposureScore`: the same shape).
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

/// Body of a successful `GET /api/exposureScore`: `score` is 0–100 and **lower is better**.
pub type ExposureScore = ConfigurationScore;

/// Body of a successful `GET /v1.0/security/secureScores`: one snapshot per day, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureScores {
    /// OData context; never validated.
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    /// The snapshots, newest first (empty when `$skip` goes past the last one).
    #[serde(default)]
    pub value: Vec<SecureScore>,
}

/// One daily Microsoft Secure Score snapshot of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureScore {
    /// `<tenantId>_<yyyy-mm-dd>`.
    #[serde(default)]
    pub id: String,
    /// The tenant the snapshot belongs to.
    #[serde(default)]
    pub azure_tenant_id: String,
    /// When the snapshot was taken (00:00Z of its day), as Graph wrote it.
    pub created_date_time: String,
    /// Points achieved: the sum of the control scores.
    pub current_score: f64,
    /// Points achievable with the tenant's licences.
    pub max_score: f64,
    /// Active users in the tenant.
    #[serde(default)]
    pub active_user_count: Option<i64>,
    /// Licensed users in the tenant.
    #[serde(default)]
    pub licensed_user_count: Option<i64>,
    /// Microsoft services enabled in the tenant (`HasMDEP2`, `HasExchange`, …).
    #[serde(default)]
    pub enabled_services: Vec<String>,
    /// Score of each control; their `score`s sum to `current_score`.
    #[serde(default)]
    pub control_scores: Vec<ControlScore>,
    /// Averages of comparable tenants (`AllTenants`, `TotalSeats`, `IndustryTypes`); empty when
    /// Graph sends `-1` or `[]` instead, as it does during Microsoft outages.
    #[serde(default, deserialize_with = "lenient::list")]
    pub average_comparative_scores: Vec<AverageComparativeScore>,
    /// Who produced the snapshot (`Microsoft` / `SecureScore`).
    #[serde(default)]
    pub vendor_information: Option<SecurityVendorInformation>,
}

/// One control's contribution to a secure score snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlScore {
    /// `Identity`, `Data`, `Device`, `Apps` or `Infrastructure` (compare case-insensitively).
    pub control_category: String,
    /// The control's stable name (`MFARegistrationV2`, …).
    #[serde(default)]
    pub control_name: String,
    /// Human description of the control.
    #[serde(default)]
    pub description: Option<String>,
    /// Points achieved on this control (null is read as none; a number in a string, such as
    /// `"0.0"`, as the number).
    #[serde(default, deserialize_with = "lenient::number")]
    pub score: Option<f64>,
}

/// The average score of a group of comparable tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AverageComparativeScore {
    /// `AllTenants`, `TotalSeats` (tenants of a similar size) or `IndustryTypes`.
    pub basis: String,
    /// The group's average score, in points.
    #[serde(default, deserialize_with = "lenient::number")]
    pub average_score: Option<f64>,
}

/// Graph's `securityVendorInformation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityVendorInformation {
    /// `SecureScore`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Version of the provider, often null.
    #[serde(default)]
    pub provider_version: Option<String>,
    /// Sub-provider, often null.
    #[serde(default)]
    pub sub_provider: Option<String>,
    /// `Microsoft`.
    #[serde(default)]
    pub vendor: Option<String>,
}

/// Graph's error envelope: `{"error": {"code", "message", "innerError": {"date", "request-id",
/// "client-request-id"}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    /// The error itself.
    pub error: GraphError,
}

/// One Graph error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    /// Code such as `TooManyRequests`, `InvalidAuthenticationToken`, `Forbidden`.
    pub code: String,
    /// Free text; never parsed for meaning.
    #[serde(default)]
    pub message: String,
    /// Correlation ids; `request-id` is what Microsoft support asks for.
    #[serde(
        rename = "innerError",
        alias = "innererror",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<GraphInnerError>,
}

/// The correlation part of a Graph error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphInnerError {
    /// When the error happened (`2024-05-01T10:00:00`, UTC without a zone, as Graph writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Graph's id of the request: log it as the correlation id.
    #[serde(
        rename = "request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    /// The client's `client-request-id` (or one Graph made up).
    #[serde(
        rename = "client-request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_request_id: Option<String>,
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

/// Readers for values Graph sends in more than one type (its secure score types are OData open
/// types, and real answers carry numbers and booleans as strings): never an error, a value of
/// another shape reads as none.
pub mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A finite number from a JSON number or a string holding one (`"0.0"`, `" 12 "`); null,
    /// other strings and other types are none.
    pub fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
        Ok(number_of(&Value::deserialize(deserializer)?))
    }

    /// [`number`] of a value already read.
    pub fn number_of(value: &Value) -> Option<f64> {
        let number = match value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse::<f64>().ok(),
            _ => None,
        };
        number.filter(|number| number.is_finite())
    }

    /// A boolean from JSON `true`/`false` or the strings `"true"`/`"false"` (any case); anything
    /// else is none.
    pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Bool(flag) => Some(flag),
            Value::String(text) if text.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(text) if text.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        })
    }

    /// A string, or none for null and any other type.
    pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::String(text) => Some(text),
            _ => None,
        })
    }

    /// The items of a JSON array that read as `T` (the others are skipped); anything but an
    /// array (`-1`, null, an object) is an empty list.
    pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        Ok(match Value::deserialize(deserializer)? {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|item| serde_json::from_value(item).ok())
                .collect(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_typed_numbers_and_missing_comparisons_are_read() {
        let body = r#"{"value": [
            {"createdDateTime": "2024-05-01T00:00:00Z", "currentScore": 3.5, "maxScore": 10,
             "controlScores": [{"controlCategory": "Apps", "controlName": "a", "score": "0.0"},
                               {"controlCategory": "Apps", "controlName": "b", "score": " 3.5 "},
                               {"controlCategory": "Apps", "controlName": "c", "score": "n/a"},
                               {"controlCategory": "Apps", "controlName": "d", "score": true}],
             "averageComparativeScores": -1},
            {"createdDateTime": "2024-04-30T00:00:00Z", "currentScore": 3, "maxScore": 10,
             "averageComparativeScores": [{"basis": "AllTenants", "averageScore": "41.5"},
                                          {"averageScore": 1}]},
            {"createdDateTime": "2024-04-29T00:00:00Z", "currentScore": 3, "maxScore": 10,
             "averageComparativeScores": []}
        ]}"#;
        let scores: SecureScores = serde_json::from_str(body).unwrap();
        let scores_of = |snapshot: &SecureScore| -> Vec<Option<f64>> {
            snapshot.control_scores.iter().map(|c| c.score).collect()
        };
        assert_eq!(
            scores_of(&scores.value[0]),
            [Some(0.0), Some(3.5), None, None]
        );
        assert!(scores.value[0].average_comparative_scores.is_empty());
        // An item without its basis is skipped, not the whole answer.
        assert_eq!(scores.value[1].average_comparative_scores.len(), 1);
        assert_eq!(
            scores.value[1].average_comparative_scores[0].average_score,
            Some(41.5)
        );
        assert!(scores.value[2].average_comparative_scores.is_empty());
    }

    #[test]
    fn secure_scores_are_read_despite_unknown_and_null_fields() {
        let body = r#"{
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/secureScores",
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/security/secureScores?$skip=1",
            "value": [{
                "id": "t_2024-05-01", "azureTenantId": "t", "createdDateTime": "2024-05-01T00:00:00Z",
                "currentScore": 342.94, "maxScore": 863.0, "activeUserCount": null,
                "licensedUserCount": 40, "enabledServices": ["HasMDEP2"], "scoreInPercentage": 39.7,
                "controlScores": [{"controlCategory": "Identity", "controlName": "MFA",
                    "description": null, "score": null, "implementationStatus": "x"}],
                "averageComparativeScores": [{"basis": "AllTenants", "averageScore": 40.1,
                    "seatSizeRangeLowerValue": "1"}],
                "vendorInformation": {"provider": "SecureScore", "vendor": "Microsoft", "extra": 1}
            }]
        }"#;
        let scores: SecureScores = serde_json::from_str(body).unwrap();
        let snapshot = &scores.value[0];
        assert_eq!(snapshot.current_score, 342.94);
        assert_eq!(snapshot.active_user_count, None);
        assert_eq!(snapshot.control_scores[0].score, None);
        assert_eq!(
            snapshot.average_comparative_scores[0].average_score,
            Some(40.1)
        );
    }

    #[test]
    fn graph_errors_read_inner_error_in_either_spelling() {
        let body = r#"{"error": {"code": "TooManyRequests", "message": "m",
            "innererror": {"date": "2024-05-01T10:00:00", "request-id": "r", "client-request-id": "c"}}}"#;
        let error: GraphErrorBody = serde_json::from_str(body).unwrap();
        let inner = error.error.inner_error.unwrap();
        assert_eq!(inner.request_id.as_deref(), Some("r"));
        let bare: GraphErrorBody = serde_json::from_str(r#"{"error": {"code": "x"}}"#).unwrap();
        assert_eq!(bare.error.inner_error, None);
    }
}
