//! Route handlers: extract, call the service, map to a view. No logic lives here.

use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::views::{
    score_json, HealthView, LastFetchView, ScoreQuery, ScoreView, TenantDetail, TenantList,
    TenantListQuery, TenantView,
};
use crate::history::FileState;
use crate::service::Services;
use crate::upstream::Metric;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Parses the query string; repeated keys (`?tag=a&tag=b`) fill lists, unknown keys are refused.
///
/// One rule for every parameter of every route: an empty value means absent (`?cursor=&sort=`
/// is `?`), as HTML forms and many clients send unset fields that way.
pub(super) fn query<T: DeserializeOwned>(request: &HttpRequest) -> Result<T, ApiError> {
    serde_html_form::from_str(&without_empty_values(request.query_string()))
        .map_err(|error| ApiError::InvalidRequest(format!("bad query: {error}")))
}

/// The query string without its empty pairs: `key=`, a bare `key` and the nothing between `&&`.
/// Works on the raw text, so a value that only decodes to something (`%20`) is kept.
fn without_empty_values(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(_, value)| !value.is_empty())
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The `metric` query parameter: `device` when absent; an unknown name is a 400 that names the
/// parameter and the accepted values (the closed set keeps it out of labels and logs).
pub(super) fn metric(value: Option<&str>) -> Result<Metric, ApiError> {
    let Some(value) = value else {
        return Ok(Metric::Device);
    };
    Metric::parse(value).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|metric| metric.as_str()).collect();
        ApiError::InvalidRequest(format!(
            "bad query: metric must be one of {}, not {:?}",
            known.join(", "),
            value.chars().take(64).collect::<String>()
        ))
    })
}

/// Runs a handler's work within the server's request timeout (504 `deadline_exceeded` after it).
pub(super) async fn within_request_timeout<T>(
    services: &Services,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(services.request_timeout(), work)
        .await
        .unwrap_or(Err(ApiError::RequestTimeout))
}

/// List the tenants the caller may see.
#[utoipa::path(
    get, path = "/tenants", tag = "tenants", params(TenantListQuery),
    responses(
        (status = 200, description = "The tenants, sorted by id", body = TenantList),
        (status = 400, description = "Bad query (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_tenants(
    request: HttpRequest,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let filter: TenantListQuery = query(&request)?;
    let tenants = services
        .tenants(&caller.scope)
        .iter()
        .filter(|tenant| {
            filter.tag.is_empty() || tenant.tags.iter().any(|t| filter.tag.contains(t))
        })
        .map(|tenant| TenantView::from(tenant.as_ref()))
        .collect();
    Ok(HttpResponse::Ok().json(TenantList { tenants }))
}

/// One tenant's registration and the outcome of its last fetch.
#[utoipa::path(
    get, path = "/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "The gateway's tenant id", example = "contoso")),
    responses(
        (status = 200, description = "The tenant", body = TenantDetail),
        (status = 400, description = "Any query parameter: this route takes none (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_tenant(
    request: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let _: TenantListQueryNone = query(&request)?;
    let tenant = services
        .tenant(&path, &caller.scope)
        .map_err(ApiError::from_service)?;
    let last_fetches: std::collections::BTreeMap<Metric, LastFetchView> = tenant
        .metrics()
        .iter()
        .filter_map(|&metric| {
            let last = services.last_fetch(&tenant.id, metric)?;
            Some((metric, LastFetchView::from(last)))
        })
        .collect();
    Ok(HttpResponse::Ok().json(TenantDetail {
        tenant: TenantView::from(tenant.as_ref()),
        last_fetch: last_fetches.get(&Metric::Device).cloned(),
        last_fetches,
    }))
}

/// A route without query parameters: any given is refused, so typos do not pass unnoticed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantListQueryNone {}

/// One metric of one tenant (`metric`, default `device`).
///
/// `device` is Microsoft Secure Score for Devices (Defender, raw points), `exposure` Defender's
/// exposure score (0–100, lower is better), `secure` Microsoft Secure Score (Microsoft Graph,
/// with `max_score`, `percentage`, `categories` and `comparisons`). Defender's API retires on
/// 2027-02-01: its metrics then answer 502 `upstream_gone`.
///
/// Served from the cache while fresh (`source: cache`); fetched from its source when missing or
/// when `max_age` demands it (`source: upstream`); past the fresh window served at once as
/// `source: stale` while a refresh runs, or with a `warning` when the refresh failed.
#[utoipa::path(
    get, path = "/tenants/{id}/score", tag = "tenants",
    params(("id" = String, Path, description = "The gateway's tenant id", example = "contoso"), ScoreQuery),
    responses(
        (status = 200, description = "The score", body = ScoreView,
         headers(("Age" = u64, description = "Seconds since the score was fetched"),
                 ("Cache-Control" = String, description = "`private, max-age=<seconds left fresh>`"))),
        (status = 400, description = "Bad query (`invalid_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (`unknown_tenant`), or the tenant does not have this metric (`metric_not_enabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Microsoft refused the credentials (`upstream_auth`), the source failed (`upstream_error`), or the score endpoint is retired or not offered in the tenant's cloud (`upstream_gone`: 404 or 410 upstream; the detail names the tenant's other metrics)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The source (Defender or Microsoft Graph, named in `title`) throttles this tenant or its quota is spent (`upstream_throttled`); see `Retry-After`", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "No answer in time (`upstream_timeout`, `deadline_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_score(
    request: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    services: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    let params: ScoreQuery = query(&request)?;
    let metric = metric(params.metric.as_deref())?;
    // Signed like `/scores`' (int64 in the document), so that both refuse the same values.
    let max_age = match params.max_age {
        Some(seconds) => Some(Duration::from_secs(u64::try_from(seconds).map_err(
            |_| {
                ApiError::InvalidRequest(format!(
                    "bad query: max_age must be 0 or more seconds, not {seconds}"
                ))
            },
        )?)),
        None => None,
    };
    let fresh = services
        .score_now(&path, metric, &caller.scope, max_age)
        .map_err(|error| ApiError::from_service(error).for_tenant(&path))?;
    let (tenant, served) = match fresh {
        Some(fresh) => fresh,
        None => {
            let work = async {
                services
                    .score(&path, metric, &caller.scope, max_age)
                    .await
                    .map_err(|error| ApiError::from_service(error).for_tenant(&path))
            };
            within_request_timeout(&services, work).await?
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::AGE, served.age.as_secs().to_string()))
        .insert_header((
            header::CACHE_CONTROL,
            format!("private, max-age={}", served.fresh_for.as_secs()),
        ))
        .content_type(header::ContentType::json())
        .body(score_json(&tenant, metric, &served)))
}

/// `/docs` without its trailing slash: a permanent redirect to `/docs/`, the documentation UI
/// (not part of the OpenAPI document, like the UI itself).
pub async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthView)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthView {
        status: "ok".to_owned(),
        reason: None,
    })
}

/// Readiness: 200 once the configuration is loaded and the listener is up, while the SQLite
/// history file is still the one opened (deleted or replaced, what is written is lost).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = HealthView),
              (status = 503, description = "Starting, or the history database file was deleted or replaced", body = HealthView)))]
pub async fn readyz(services: web::Data<Services>) -> HttpResponse {
    if !services.is_ready() {
        return HttpResponse::ServiceUnavailable().json(HealthView {
            status: "starting".to_owned(),
            reason: None,
        });
    }
    let file = services
        .history()
        .map_or(FileState::Same, |history| history.check_file());
    if file != FileState::Same {
        return HttpResponse::ServiceUnavailable().json(HealthView {
            status: "unavailable".to_owned(),
            reason: Some(file.describe().to_owned()),
        });
    }
    HttpResponse::Ok().json(HealthView {
        status: "ready".to_owned(),
        reason: None,
    })
}

/// This OpenAPI document (without security requirements when authentication is off).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        body = Object, content_type = "application/json")))]
pub async fn get_openapi(services: web::Data<Services>) -> HttpResponse {
    static WITH_AUTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static WITHOUT_AUTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    // Authentication can be turned on or off by a reload: decided per request.
    let document = if services.keys().is_some() {
        WITH_AUTH.get_or_init(super::openapi_json)
    } else {
        WITHOUT_AUTH.get_or_init(super::openapi_json_without_auth)
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_query_values_are_dropped_and_others_kept_as_written() {
        assert_eq!(
            without_empty_values("cursor=&tenant=&tag=gold&&sort&limit=5&x=%20"),
            "tag=gold&limit=5&x=%20"
        );
        assert_eq!(without_empty_values(""), "");
        assert_eq!(without_empty_values("=&=1"), "=1");
    }
}
