//! What a failed token request or score call means for the operator, and what to do about it:
//! pure functions from the facts the token source and the policy stack report to a
//! [`Diagnosis`] (a stable code, the detail, one or two sentences of advice).
//!
//! It decides nothing about retries (the policy stack did) and makes no call.

use crate::code::Code;
use crate::credential::Credential;
use crate::model::{Metric, UpstreamService};
use crate::policy::FetchError;
use crate::tenants::Tenant;
use crate::token::TokenError;
use crate::upstream::UpstreamError;
use crate::wire::{DEFENDER_SCORE_ROLE, GRAPH_SECURE_SCORE_ROLE};

/// The outcome of one check, as a stable code: the gateway's own error codes (`upstream_auth`,
/// `upstream_gone`, …) or a finer one where the fix is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckCode {
    /// A token and a score: nothing to do.
    Ok,
    /// The client secret (or the certificate) registered on the app has expired.
    SecretExpired,
    /// Entra does not know the client secret sent (wrong value, or deleted).
    SecretInvalid,
    /// The app has no service principal in the tenant: nobody consented to it there.
    ConsentMissing,
    /// The token carries no application role for the metric's API.
    PermissionMissing,
    /// The tenant has no licence (or onboarding) for the API behind the metric.
    LicenceMissing,
    /// Entra knows no such tenant in this cloud.
    TenantNotFound,
    /// A failure with no finer code: the gateway's own code for it.
    Gateway(Code),
}

impl CheckCode {
    /// The code as `check-tenants` prints it (`secret_expired`, `upstream_auth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::SecretExpired => "secret_expired",
            Self::SecretInvalid => "secret_invalid",
            Self::ConsentMissing => "consent_missing",
            Self::PermissionMissing => "permission_missing",
            Self::LicenceMissing => "licence_missing",
            Self::TenantNotFound => "tenant_not_found",
            Self::Gateway(code) => code.as_str(),
        }
    }
}

/// What is wrong with one tenant's metric, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The stable code.
    pub code: CheckCode,
    /// What Entra or the API answered, secret-free (GUIDs removed by the token source).
    pub detail: String,
    /// What to do, in one or two sentences.
    pub advice: String,
    /// Whether an administrator of the tenant granting admin consent fixes it (the report then
    /// carries the consent URL).
    pub needs_consent: bool,
}

impl Diagnosis {
    fn new(code: CheckCode, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            advice: advice.into(),
            needs_consent: false,
        }
    }

    fn with_consent(mut self) -> Self {
        self.needs_consent = true;
        self
    }
}

/// The AADSTS numbers in `codes` (`AADSTS7000222,AADSTS…`) or, when it names none, at the start
/// of Entra's description in `detail` (`AADSTS7000222: The provided client secret…`).
fn aadsts_codes(codes: &str, detail: &str) -> Vec<u64> {
    let from = |text: &str| -> Vec<u64> {
        text.match_indices("AADSTS")
            .filter_map(|(start, marker)| {
                let digits: String = text[start + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .collect()
    };
    let found = from(codes);
    if found.is_empty() {
        from(detail)
    } else {
        found
    }
}

/// The Entra admin center page of the app's credentials, for advice.
const CREDENTIALS_PAGE: &str =
    "Entra admin center › App registrations › (the app) › Certificates & secrets";

/// Why Entra gave no token for the tenant's `metric`.
pub fn token_refused(tenant: &Tenant, metric: Metric, error: &TokenError) -> Diagnosis {
    match error {
        TokenError::Rejected { codes, detail, .. } => {
            entra_refusal(tenant, metric, &aadsts_codes(codes, detail), detail)
        }
        TokenError::Unavailable { detail } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamError),
            format!("Entra ID is unavailable: {detail}"),
            format!(
                "Let this host reach {} over HTTPS (port 443) and run the check again; a \
                 failure of Entra itself passes within minutes.",
                host_of(&tenant.authority_host)
            ),
        ),
        TokenError::Invalid { detail } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamAuth),
            format!("the credential cannot be used: {detail}"),
            "Check the tenant's `certificate` (a PEM certificate with its RSA key, or a \
             PKCS#12 file and its password) or `client_secret` in the configuration.",
        ),
    }
}

/// Entra did not answer the token request within `[upstream] timeout_ms`.
pub fn token_timed_out(tenant: &Tenant) -> Diagnosis {
    let host = host_of(&tenant.authority_host);
    Diagnosis::new(
        CheckCode::Gateway(Code::UpstreamTimeout),
        format!("no answer from Entra ID ({host}) within the deadline"),
        format!(
            "Check that a firewall lets this host reach {host} over HTTPS (port 443), or raise \
             `[upstream] timeout_ms`."
        ),
    )
}

/// An Entra refusal with its AADSTS codes, whether it came from the token request itself or
/// from the policy stack's renewal.
fn entra_refusal(tenant: &Tenant, metric: Metric, codes: &[u64], detail: &str) -> Diagnosis {
    let detail = format!("Entra ID refused the token: {detail}");
    let is_certificate = matches!(tenant.credential, Credential::Certificate(_));
    let has = |code: u64| codes.contains(&code);
    if has(7000222) || (has(700027) && is_certificate && detail.contains("expired")) {
        let advice = if is_certificate {
            format!(
                "The certificate registered on the app has expired: upload a new one in \
                 {CREDENTIALS_PAGE} › Certificates, point the tenant's `certificate` at it and \
                 reload the gateway (SIGHUP)."
            )
        } else {
            format!(
                "The client secret has expired: add a new one in {CREDENTIALS_PAGE} › Client \
                 secrets, put its Value where the tenant's `client_secret` points and reload \
                 the gateway (SIGHUP); then delete the old secret."
            )
        };
        return Diagnosis::new(CheckCode::SecretExpired, detail, advice);
    }
    if has(7000215) {
        return Diagnosis::new(
            CheckCode::SecretInvalid,
            detail,
            format!(
                "Entra does not know this client secret: use the secret's Value (shown once, \
                 when it is created), not its Secret ID; if it was deleted, add a new one in \
                 {CREDENTIALS_PAGE}."
            ),
        );
    }
    if has(700016) || has(65001) {
        return Diagnosis::new(
            CheckCode::ConsentMissing,
            detail,
            format!(
                "The app is not consented in tenant {}: an administrator of that tenant opens \
                 the consent URL and accepts (for a single-tenant app: API permissions › Grant \
                 admin consent). If it is, check `tenant_id` and `client_id`.",
                tenant.tenant_id
            ),
        )
        .with_consent();
    }
    if has(90002) || has(900023) {
        return Diagnosis::new(
            CheckCode::TenantNotFound,
            detail,
            format!(
                "{} knows no tenant {}: check `tenant_id` (Entra admin center › Overview › \
                 Tenant ID) and the tenant's `cloud`.",
                host_of(&tenant.authority_host),
                tenant.tenant_id
            ),
        );
    }
    if has(500011) && metric.service() == UpstreamService::Defender {
        return Diagnosis::new(
            CheckCode::LicenceMissing,
            detail,
            "The tenant has no WindowsDefenderATP service: Defender for Endpoint was never \
             provisioned there (no licence, or the Defender portal never opened). License and \
             onboard it, or use `secure` only; in GCC High and DoD, also try \
             `scope = \"https://api-gov.securitycenter.microsoft.us/.default\"`.",
        );
    }
    if has(500011) {
        return Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamAuth),
            detail,
            "Entra has no Microsoft Graph under this scope in the tenant: check the tenant's \
             `graph_scope` and `cloud`.",
        );
    }
    if is_certificate && has(700027) {
        return Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamAuth),
            detail,
            format!(
                "The certificate is not the one registered on the app: upload its public part \
                 in {CREDENTIALS_PAGE} › Certificates, or point `certificate` at the registered \
                 one."
            ),
        );
    }
    let lookup = codes
        .first()
        .map(|code| format!(" (https://login.microsoftonline.com/error?code={code})"))
        .unwrap_or_default();
    Diagnosis::new(
        CheckCode::Gateway(Code::UpstreamAuth),
        detail,
        format!(
            "Look the AADSTS code up{lookup} and fix the app registration or the tenant's \
             credential in the configuration."
        ),
    )
}

/// Why the score call of the tenant's `metric` failed, after the token was had.
pub fn fetch_failed(tenant: &Tenant, metric: Metric, error: &FetchError) -> Diagnosis {
    let service = metric.service();
    // A fresh stack gates nothing; were it to, the gate's refusal reads as the failure.
    let error = match error {
        FetchError::Gated(gated) => gated.into_error(service),
        FetchError::Upstream(error) => error.clone(),
    };
    let host = tenant
        .endpoint(service)
        .map_or_else(|| service.display_name().to_owned(), |e| host_of(&e.base));
    match &error {
        UpstreamError::Credentials { detail } => {
            let codes = aadsts_codes("", detail);
            entra_refusal(tenant, metric, &codes, detail)
        }
        UpstreamError::Denied { status, detail } => denied(service, *status, detail),
        UpstreamError::Throttled { retry_after, .. } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamThrottled),
            error.to_string(),
            format!(
                "Wait {} s before calling again. {}'s limits count per app and tenant: another \
                 tool or gateway using the same app registration spends them too.",
                retry_after.as_secs(),
                service.display_name()
            ),
        ),
        UpstreamError::Failed { detail, .. } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamError),
            detail.clone(),
            format!(
                "If {host} cannot be reached, let this host reach it over HTTPS (port 443); \
                 a failure of the service itself usually passes: run the check again later."
            ),
        ),
        UpstreamError::Timeout { .. } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamTimeout),
            error.to_string(),
            format!(
                "Check that a firewall lets this host reach {host} over HTTPS (port 443), or \
                 raise `[upstream] timeout_ms`."
            ),
        ),
        UpstreamError::Gone { detail } => Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamGone),
            detail.clone(),
            match service {
                UpstreamService::Defender => {
                    "The Defender for Endpoint API is retired (it stops on 2027-02-01) or not \
                     offered in this cloud: enable `secure` (Microsoft Graph, \
                     SecurityEvents.Read.All) and remove `device` and `exposure` from this \
                     tenant's `metrics`."
                }
                UpstreamService::Graph => {
                    "Microsoft Graph has no secure score here: check the tenant's `graph_base` \
                     and `cloud` (Secure Score is not offered in every cloud)."
                }
            },
        ),
    }
}

/// A 401 (after one renewal) or 403 from the score endpoint: licence, role or token.
fn denied(service: UpstreamService, status: u16, detail: &str) -> Diagnosis {
    let lower = detail.to_ascii_lowercase();
    let licence = lower.contains("license")
        || lower.contains("licence")
        || lower.contains("account mode is inactive");
    if licence {
        return Diagnosis::new(
            CheckCode::LicenceMissing,
            detail,
            "The tenant is not licensed or onboarded for Defender for Endpoint's scores \
             (Defender for Endpoint P2, Defender for Business or Microsoft 365 E5, with \
             Defender Vulnerability Management): license and onboard it, or use `secure` only.",
        );
    }
    // A token for another API (a `scope` or `graph_scope` that does not fit the service) is
    // refused as forbidden too, but no permission fixes it.
    if lower.contains("audience") {
        return Diagnosis::new(
            CheckCode::Gateway(Code::UpstreamAuth),
            detail,
            format!(
                "{} refused the token's audience: check the tenant's token scope (`scope` for \
                 Defender, `graph_scope` for Microsoft Graph) and its `cloud`.",
                service.display_name()
            ),
        );
    }
    if status == 403 {
        let (role, api, path) = match service {
            UpstreamService::Defender => (
                DEFENDER_SCORE_ROLE,
                "WindowsDefenderATP",
                "APIs my organization uses › WindowsDefenderATP",
            ),
            UpstreamService::Graph => (
                GRAPH_SECURE_SCORE_ROLE,
                "Microsoft Graph",
                "Microsoft Graph",
            ),
        };
        return Diagnosis::new(
            CheckCode::PermissionMissing,
            detail,
            format!(
                "The app lacks the application permission {role} on {api}: App registrations › \
                 (the app) › API permissions › Add a permission › {path} › Application \
                 permissions › {role}, then Grant admin consent (each customer tenant of a \
                 multi-tenant app: the consent URL)."
            ),
        )
        .with_consent();
    }
    Diagnosis::new(
        CheckCode::Gateway(Code::UpstreamAuth),
        detail,
        format!(
            "{} refused a fresh token: check the tenant's token scope for its cloud (`scope` for \
             Defender, `graph_scope` for Microsoft Graph).",
            service.display_name()
        ),
    )
}

/// The host of a URL, for advice (`login.microsoftonline.com`).
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => url.as_str().to_owned(),
    }
}
