//! Microsoft Graph's `GET /v1.0/security/secureScores`: Graph's token checks and error body,
//! `$top` / `$skip`, Graph's own throttling (requests per minute and per ten minutes, and
//! concurrent requests, per application and tenant), and 90 deterministic daily snapshots per
//! tenant with plausible controls and comparisons.
//!
//! Order of checks, written down once: token (401) → tenant → expiry (401) → audience (401) →
//! role (403) → query (400) → `throttled` (429) → concurrency cap (429, holds a slot until
//! answered) → rate windows (429, consume only when granted) → latency → `flaky` (5xx) / `hang`
//! / `malformed` → 200. `retired`, `forbidden` and `unlicensed` are Defender's and do not apply.
//!
//! Decisions: without `$top` every snapshot is returned (90, newest first); `$top` and `$skip`
//! take any non-negative integer (`$top=0` is an empty page, a `$skip` past the end too); other
//! `$` query options, repeated options and non-integers are 400 `BadRequest` with OData's
//! wording. No `@odata.nextLink` is sent: 90 snapshots fit one page.

use super::clock::defender_time;
use super::faults::FaultProfile;
use super::responses::{graph_error, GraphIds};
use super::score::{identify, misbehave};
use super::server::Shared;
use super::service::{Endpoint, Service};
use super::stats::InFlight;
use super::tenants::{mix, TenantRecord};
use crate::wire::{
    AverageComparativeScore, ControlScore, SecureScore, SecureScores, SecurityVendorInformation,
    GRAPH_RESOURCE, GRAPH_SECURE_SCORE_ROLE,
};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// How many daily snapshots Graph keeps.
pub(crate) const SNAPSHOT_DAYS: u32 = 90;

/// The `@odata.context` Graph answers with.
const ODATA_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#security/secureScores";

/// `Content-Type` of a successful Graph answer.
const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// Why a Graph call was not answered 200.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GraphCallError {
    /// No `Authorization: Bearer` header.
    #[error("Access token is empty.")]
    MissingToken,
    /// A token this emulator did not sign, or one naming no known tenant.
    #[error("Access token validation failure. Invalid signature.")]
    InvalidToken,
    /// The token has expired (or is not yet valid) on the emulator clock.
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
    /// The token is for another resource, such as Defender.
    #[error(
        "Access token validation failure. Invalid audience. Request a token for {GRAPH_RESOURCE}."
    )]
    WrongAudience,
    /// No `SecurityEvents.Read.All` role (the `graph-forbidden` profile).
    #[error("Insufficient privileges to complete the operation. Missing application roles. API required roles: {GRAPH_SECURE_SCORE_ROLE}.")]
    MissingRole,
    /// A query option is malformed, repeated or not supported.
    #[error("{0}")]
    InvalidQuery(String),
    /// The `throttled` profile, a rate window or the concurrency cap.
    #[error("Too many requests. Please retry after {} seconds.", .0.as_secs())]
    TooManyRequests(Duration),
    /// The `flaky` profile's 500.
    #[error("An unspecified error has occurred.")]
    Internal,
    /// The `flaky` profile's 503.
    #[error("The service is temporarily unavailable. Please retry later.")]
    Unavailable,
    /// A GET with a body over the limit.
    #[error("The request body is too large.")]
    TooLarge,
}

impl GraphCallError {
    fn answer(&self, ids: &GraphIds, now: OffsetDateTime) -> HttpResponse {
        use StatusCode as S;
        let (status, code, retry_after) = match self {
            GraphCallError::MissingToken
            | GraphCallError::InvalidToken
            | GraphCallError::Expired
            | GraphCallError::WrongAudience => {
                (S::UNAUTHORIZED, "InvalidAuthenticationToken", None)
            }
            GraphCallError::MissingRole => (S::FORBIDDEN, "Forbidden", None),
            GraphCallError::InvalidQuery(_) => (S::BAD_REQUEST, "BadRequest", None),
            GraphCallError::TooManyRequests(wait) => {
                (S::TOO_MANY_REQUESTS, "TooManyRequests", Some(*wait))
            }
            GraphCallError::Internal => (S::INTERNAL_SERVER_ERROR, "generalException", None),
            GraphCallError::Unavailable => (S::SERVICE_UNAVAILABLE, "serviceNotAvailable", None),
            GraphCallError::TooLarge => (S::PAYLOAD_TOO_LARGE, "BadRequest", None),
        };
        graph_error(status, code, &self.to_string(), retry_after, ids, now)
    }
}

/// `$top` and `$skip` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// At most this many snapshots (`None`: all).
    pub top: Option<u64>,
    /// Skip this many of the newest first.
    pub skip: u64,
}

/// Reads `$top` and `$skip` from a query string (percent-decoded, so `%24top` is `$top`).
pub(crate) fn parse_page(query: &str) -> Result<Page, GraphCallError> {
    let mut top = None;
    let mut skip = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "$top" => &mut top,
            "$skip" => &mut skip,
            other if other.starts_with('$') => {
                let name: String = other.chars().take(40).collect();
                return Err(GraphCallError::InvalidQuery(format!(
                    "Query option '{name}' is not supported on this resource."
                )));
            }
            // OData ignores custom (non-`$`) query options.
            _ => continue,
        };
        if slot.is_some() {
            return Err(GraphCallError::InvalidQuery(format!(
                "Query option '{key}' was specified more than once, but it must be specified at most once."
            )));
        }
        let number = value.trim().parse::<u64>().map_err(|_| {
            let shown: String = value.chars().take(40).collect();
            GraphCallError::InvalidQuery(format!(
                "Invalid value '{shown}' for {key} query option found. The {key} query option requires a non-negative integer value."
            ))
        })?;
        *slot = Some(number);
    }
    Ok(Page {
        top,
        skip: skip.unwrap_or(0),
    })
}

/// `GET /v1.0/security/secureScores`.
pub(crate) async fn get_secure_scores(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    let ids = GraphIds::of(&request);
    let mut call = state.stats.call(Endpoint::SecureScores);
    let response = match serve(&request, &state, &mut call, &ids).await {
        Ok(response) => response,
        Err(refused) => refused.answer(&ids, state.clock.now()),
    };
    call.respond(response.status().as_u16());
    response
}

/// Anything but GET on the secure scores path.
pub(crate) async fn secure_scores_wrong_method(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
        None,
        &GraphIds::of(&request),
        state.clock.now(),
    )
}

/// Anything else under `/v1.0/` or `/beta/`: Graph's 404.
pub(crate) async fn graph_not_found(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    graph_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "Resource not found for the segment.",
        None,
        &GraphIds::of(&request),
        state.clock.now(),
    )
}

async fn serve(
    request: &HttpRequest,
    state: &Shared,
    call: &mut InFlight<'_>,
    ids: &GraphIds,
) -> Result<HttpResponse, GraphCallError> {
    if super::body::declared_too_large(request) {
        return Err(GraphCallError::TooLarge);
    }
    if super::score::bearer_token(request).is_none() {
        return Err(GraphCallError::MissingToken);
    }
    let (tenant, claims) = identify(request, state).ok_or(GraphCallError::InvalidToken)?;
    call.attach(tenant.index);

    let now = state.clock.now().unix_timestamp();
    if claims.exp <= now || claims.nbf > now {
        return Err(GraphCallError::Expired);
    }
    if claims.aud != Service::Graph.resource() {
        return Err(GraphCallError::WrongAudience);
    }
    let fault = tenant.fault();
    // Checked on the token and the current profile, like Defender's role.
    if fault == Some(FaultProfile::GraphForbidden)
        || !claims.roles.iter().any(|r| r == GRAPH_SECURE_SCORE_ROLE)
    {
        return Err(GraphCallError::MissingRole);
    }
    let page = parse_page(request.query_string())?;
    if fault == Some(FaultProfile::Throttled) {
        let wait = Duration::from_secs(state.settings.throttled_retry_after_seconds.max(1));
        return Err(GraphCallError::TooManyRequests(wait));
    }
    let app = Uuid::parse_str(&claims.appid).unwrap_or(tenant.client_id);
    // Held until the answer is built (or the call is dropped): what "concurrent" means.
    let _slot = state
        .graph_concurrency
        .try_enter(tenant.index, app)
        .ok_or_else(|| {
            state.stats.quota_refusal(tenant.index, Service::Graph);
            GraphCallError::TooManyRequests(Duration::from_secs(1))
        })?;
    state
        .graph_quota
        .try_acquire(tenant.index, app, state.clock.now_millis())
        .map_err(|wait| {
            state.stats.quota_refusal(tenant.index, Service::Graph);
            GraphCallError::TooManyRequests(wait)
        })?;

    match misbehave(state, tenant, fault).await {
        Some(500) => return Err(GraphCallError::Internal),
        Some(_) => return Err(GraphCallError::Unavailable),
        None => {}
    }

    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_TYPE, GRAPH_JSON));
    ids.stamp(&mut response);
    if fault == Some(FaultProfile::Malformed) {
        return Ok(response.body(format!(
            "{{\"@odata.context\":\"{ODATA_CONTEXT}\",\"value\":[{{\"currentScore\":"
        )));
    }
    let now = state.clock.now();
    let score_day = state.settings.score_day(now);
    let body = secure_scores_body(state.settings.seed, tenant, now, score_day, page);
    let bytes = serde_json::to_vec(&body).map_err(|_| GraphCallError::Internal)?;
    Ok(response.body(bytes))
}

/// A control of the emulated catalogue: name, category, maximum points, description.
struct Control {
    name: &'static str,
    category: &'static str,
    max_points: f64,
    description: &'static str,
}

/// The controls an emulated tenant may have, five categories. The first of each category is
/// always present, so every tenant has all five categories.
const CONTROLS: &[Control] = &[
    Control {
        name: "AdminMFAV2",
        category: "Identity",
        max_points: 10.0,
        description:
            "Ensure multifactor authentication is enabled for all users in administrative roles",
    },
    Control {
        name: "MFARegistrationV2",
        category: "Identity",
        max_points: 9.0,
        description: "Ensure all users can complete multifactor authentication",
    },
    Control {
        name: "BlockLegacyAuthentication",
        category: "Identity",
        max_points: 8.0,
        description: "Enable Conditional Access policies to block legacy authentication",
    },
    Control {
        name: "SigninRiskPolicy",
        category: "Identity",
        max_points: 7.0,
        description: "Turn on sign-in risk policy",
    },
    Control {
        name: "UserRiskPolicy",
        category: "Identity",
        max_points: 7.0,
        description: "Turn on user risk policy",
    },
    Control {
        name: "SelfServicePasswordReset",
        category: "Identity",
        max_points: 1.0,
        description: "Enable self-service password reset",
    },
    Control {
        name: "OneAdmin",
        category: "Identity",
        max_points: 1.0,
        description: "Designate more than one global admin",
    },
    Control {
        name: "DLPEnabled",
        category: "Data",
        max_points: 10.0,
        description: "Create Data Loss Prevention (DLP) policies",
    },
    Control {
        name: "InformationProtectionLabels",
        category: "Data",
        max_points: 5.0,
        description: "Ensure sensitivity labels are published",
    },
    Control {
        name: "mip_autosensitivitylabelspolicies",
        category: "Data",
        max_points: 3.0,
        description: "Extend sensitivity labels to content in Microsoft 365 data connectors",
    },
    Control {
        name: "scid_2010",
        category: "Device",
        max_points: 10.0,
        description: "Turn on Microsoft Defender Antivirus real-time protection",
    },
    Control {
        name: "scid_91",
        category: "Device",
        max_points: 9.0,
        description: "Block execution of potentially obfuscated scripts",
    },
    Control {
        name: "scid_2080",
        category: "Device",
        max_points: 8.0,
        description: "Turn on tamper protection",
    },
    Control {
        name: "scid_2095",
        category: "Device",
        max_points: 8.0,
        description: "Encrypt all supported drives with BitLocker",
    },
    Control {
        name: "scid_6000",
        category: "Device",
        max_points: 10.0,
        description: "Update Windows operating systems",
    },
    Control {
        name: "mdo_safeattachments",
        category: "Apps",
        max_points: 8.0,
        description: "Turn on Safe Attachments in block mode",
    },
    Control {
        name: "mdo_safelinksforOfficeApps",
        category: "Apps",
        max_points: 8.0,
        description: "Turn on Safe Links for Office applications",
    },
    Control {
        name: "exo_mailboxaudit",
        category: "Apps",
        max_points: 5.0,
        description: "Ensure mailbox auditing is turned on for all users",
    },
    Control {
        name: "mdo_zapspam",
        category: "Apps",
        max_points: 2.0,
        description: "Turn on zero-hour auto purge for spam",
    },
    Control {
        name: "CustomerLockBoxEnabled",
        category: "Apps",
        max_points: 1.0,
        description: "Turn on customer lockbox",
    },
    Control {
        name: "mdc_serversprotection",
        category: "Infrastructure",
        max_points: 10.0,
        description: "Turn on Microsoft Defender for Servers",
    },
    Control {
        name: "mdc_nsgrestricted",
        category: "Infrastructure",
        max_points: 6.0,
        description: "Restrict network security groups to the ports needed",
    },
    Control {
        name: "mdc_storagesecuretransfer",
        category: "Infrastructure",
        max_points: 3.0,
        description: "Require secure transfer to storage accounts",
    },
];

/// Whether tenant `index` has control number `control` (licence-dependent, stable over time).
fn has_control(seed: u64, index: u64, control: usize) -> bool {
    let first_of_category = control == 0
        || CONTROLS
            .get(control.wrapping_sub(1))
            .zip(CONTROLS.get(control))
            .is_some_and(|(previous, this)| previous.category != this.category);
    first_of_category || mix(&[seed, 0x5EC0, index, control as u64]) % 100 < 85
}

/// A value in [0, 1) from the hash of `parts`.
fn unit(parts: &[u64]) -> f64 {
    (mix(parts) >> 11) as f64 / (1u64 << 53) as f64
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `yyyy-mm-dd` of a day number (days since the Unix epoch).
fn date_of(day: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    ))
}

/// The snapshot of `tenant` dated day number `date_day`, its values those of day number `day`
/// (the same unless the score date is pinned): deterministic in (seed, tenant, day). The
/// control scores sum to `currentScore`; `maxScore` is the sum of the tenant's controls' maxima.
pub(crate) fn snapshot(seed: u64, tenant: &TenantRecord, date_day: i64, day: i64) -> Value {
    let index = tenant.index as u64;
    let day_word = day as u64;
    // How well the tenant is run overall, and a slow improvement/regression wave over months.
    let posture = 0.30 + 0.55 * unit(&[seed, 0x5EC1, index]);
    let phase = unit(&[seed, 0x5EC2, index]) * std::f64::consts::TAU;
    let trend = 0.08 * ((day as f64) * std::f64::consts::TAU / 120.0 + phase).sin();

    let mut control_scores = Vec::new();
    let mut extras = Vec::new();
    let mut max_score = 0.0;
    for (number, control) in CONTROLS.iter().enumerate() {
        if !has_control(seed, index, number) {
            continue;
        }
        let bias = 0.6 * (unit(&[seed, 0x5EC3, index, number as u64]) - 0.5);
        let jitter = 0.04 * (unit(&[seed, 0x5EC4, index, number as u64, day_word]) - 0.5);
        let share = (posture + bias + trend + jitter).clamp(0.0, 1.0);
        let score = round2(control.max_points * share);
        max_score += control.max_points;
        control_scores.push(ControlScore {
            control_category: control.category.to_owned(),
            control_name: control.name.to_owned(),
            description: Some(control.description.to_owned()),
            score: Some(score),
        });
        extras.push((score, control.max_points));
    }
    let current_score = round2(
        control_scores
            .iter()
            .filter_map(|control| control.score)
            .sum::<f64>(),
    );

    let active_users = 20 + (mix(&[seed, 0x5EC5, index]) % 4_980) as i64;
    let licensed_users = active_users + (mix(&[seed, 0x5EC6, index]) % 200) as i64;
    let average = |salt: u64, share: f64| {
        let wobble = 0.02 * (unit(&[seed, salt, index, day_word]) - 0.5);
        round2(max_score * (share + wobble))
    };
    let industry_share = 0.38 + 0.12 * unit(&[seed, 0x5EC7, index]);
    let seats_share = 0.36 + 0.14 * unit(&[seed, 0x5EC8, index]);
    let date = date_of(date_day).unwrap_or_default();
    let snapshot = SecureScore {
        id: format!("{}_{date}", tenant.tenant_id),
        azure_tenant_id: tenant.tenant_id.to_string(),
        created_date_time: format!("{date}T00:00:00Z"),
        current_score,
        max_score,
        active_user_count: Some(active_users),
        licensed_user_count: Some(licensed_users),
        enabled_services: [
            "HasAzureADPremium",
            "HasExchange",
            "HasSharePoint",
            "HasOD4B",
            "HasMDEP2",
            "HasMDO",
        ]
        .map(str::to_owned)
        .to_vec(),
        control_scores,
        average_comparative_scores: vec![
            AverageComparativeScore {
                basis: "AllTenants".into(),
                average_score: Some(average(0x5EC9, 0.41)),
            },
            AverageComparativeScore {
                basis: "TotalSeats".into(),
                average_score: Some(average(0x5ECA, seats_share)),
            },
            AverageComparativeScore {
                basis: "IndustryTypes".into(),
                average_score: Some(average(0x5ECB, industry_share)),
            },
        ],
        vendor_information: Some(SecurityVendorInformation {
            provider: Some("SecureScore".into()),
            provider_version: None,
            sub_provider: None,
            vendor: Some("Microsoft".into()),
        }),
    };
    let mut value = serde_json::to_value(snapshot).unwrap_or(Value::Null);
    add_undocumented_fields(&mut value, &extras, day, seats_share);
    value
}

/// What real answers carry beyond the documented schema, so that clients prove they ignore it:
/// `scoreInPercentage`, `implementationStatus`, `lastSynced` and `controlState` on controls;
/// seat ranges on `TotalSeats`; `industryName` on `IndustryTypes`.
fn add_undocumented_fields(value: &mut Value, controls: &[(f64, f64)], day: i64, seats: f64) {
    let synced = OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400))
        .map(defender_time)
        .unwrap_or_default();
    if let Some(list) = value.get_mut("controlScores").and_then(Value::as_array_mut) {
        for (control, (score, max_points)) in list.iter_mut().zip(controls) {
            let percentage = if *max_points > 0.0 {
                round2(score / max_points * 100.0)
            } else {
                0.0
            };
            if let Some(fields) = control.as_object_mut() {
                fields.insert("scoreInPercentage".into(), percentage.into());
                fields.insert(
                    "implementationStatus".into(),
                    format!("{percentage}% of the recommended configuration is in place").into(),
                );
                fields.insert("lastSynced".into(), synced.clone().into());
                fields.insert(
                    "controlState".into(),
                    if percentage >= 100.0 {
                        "Completed"
                    } else {
                        "Default"
                    }
                    .into(),
                );
            }
        }
    }
    if let Some(list) = value
        .get_mut("averageComparativeScores")
        .and_then(Value::as_array_mut)
    {
        for comparison in list {
            let Some(fields) = comparison.as_object_mut() else {
                continue;
            };
            match fields.get("basis").and_then(Value::as_str) {
                Some("TotalSeats") => {
                    let lower = if seats < 0.43 { "1" } else { "101" };
                    let upper = if seats < 0.43 { "100" } else { "1000" };
                    fields.insert("seatSizeRangeLowerValue".into(), lower.into());
                    fields.insert("seatSizeRangeUpperValue".into(), upper.into());
                }
                Some("IndustryTypes") => {
                    fields.insert("industryName".into(), "Professional services".into());
                }
                _ => {}
            }
        }
    }
}

/// The answer of `GET /v1.0/security/secureScores` for `tenant` at emulated time `now`: the
/// snapshots of the last [`SNAPSHOT_DAYS`] days (today's at 00:00Z first), paged; their values
/// are those of `score_day` and the days before it.
pub(crate) fn secure_scores_body(
    seed: u64,
    tenant: &TenantRecord,
    now: OffsetDateTime,
    score_day: i64,
    page: Page,
) -> Value {
    let today = now.unix_timestamp().div_euclid(86_400);
    let available = u64::from(SNAPSHOT_DAYS);
    let first = page.skip.min(available);
    let last = page
        .top
        .map_or(available, |top| first.saturating_add(top).min(available));
    let value: Vec<Value> = (first..last)
        .map(|back| snapshot(seed, tenant, today - back as i64, score_day - back as i64))
        .collect();
    let envelope = SecureScores {
        odata_context: Some(ODATA_CONTEXT.to_owned()),
        value: Vec::new(),
    };
    let mut body = serde_json::to_value(envelope).unwrap_or(Value::Null);
    if let Some(fields) = body.as_object_mut() {
        fields.insert("value".into(), Value::Array(value));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_accept_non_negative_integers_and_refuse_the_rest() {
        assert_eq!(parse_page("").unwrap(), Page { top: None, skip: 0 });
        assert_eq!(
            parse_page("%24top=1&$skip=3&api-version=x").unwrap(),
            Page {
                top: Some(1),
                skip: 3
            }
        );
        for bad in [
            "$top=-1",
            "$top=abc",
            "$top=1&$top=2",
            "$filter=x",
            "$skip=1.5",
        ] {
            assert!(parse_page(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_catalogue_covers_the_five_categories() {
        let mut categories: Vec<&str> = CONTROLS.iter().map(|c| c.category).collect();
        categories.dedup();
        assert_eq!(
            categories,
            ["Identity", "Data", "Device", "Apps", "Infrastructure"]
        );
    }
}
