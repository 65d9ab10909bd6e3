//! The guards in front of the routes: request size limits and no unexpected bodies ([`limits`],
//! on every request), and authentication by API key or Entra ID access token with per-caller rate
//! limits ([`authenticate`], on the protected routes only).
//!
//! Which routes are protected is decided by where they are registered (see
//! [`super::configure`]): the open ones (`/healthz`, `/readyz`, `/openapi.json`, `/docs/`) sit
//! outside the scope that [`authenticate`] wraps. Nothing here compares request paths: the router
//! matches the percent-decoded path, so a string comparison on the raw one can be walked around
//! (`/%6detrics`).
//!
//! The caller it admits is put in the request's extensions as a [`Caller`]; handlers take it as
//! an extractor and pass its scope to the service, which filters by it. `/metrics` names every
//! tenant, so its handler asks for [`Caller::operator`]; other keys get the 404 of a route that
//! does not exist.

use super::error::{ApiError, Credentials};
use crate::auth::entra::{looks_like_jwt, EntraError, TokenRejected};
use crate::auth::{RateState, Scope};
use crate::service::Services;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use std::future::{ready, Ready};
use std::sync::Arc;

/// Longest accepted path and query, in bytes (longer: 414).
pub const MAX_URI_BYTES: usize = 4096;
/// Most header bytes (names and values) accepted in one request (more: 431).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Who is asking, as far as the API is concerned.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's or the Entra caller mapping's name (`anonymous` when authentication is off).
    pub name: String,
    /// The calling application's client id, for an Entra ID caller (logged beside the name).
    pub app_id: Option<String>,
    /// The tenants the caller may see.
    pub scope: Arc<Scope>,
    /// May read `/metrics`.
    pub operator: bool,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The guard puts a caller on every request that reaches a protected handler.
        ready(
            request
                .extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::Internal("no caller on a protected route".to_owned())),
        )
    }
}

/// The route templates registered outside the authenticated scope, as the OpenAPI document
/// names them (the documentation UI under `/docs/` is open too but not part of the document).
pub const OPEN_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// Whether the OpenAPI path template `route` is an open route (no API key). Used for the
/// document only; requests are admitted by the scope their route is registered in.
pub fn is_open(route: &str) -> bool {
    OPEN_ROUTES.contains(&route)
}

/// Size limits and the no-body rule, on every request before routing.
pub async fn limits(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Err(error) = check_shape(&request) {
        return Ok(request.error_response(error).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// Authenticates the caller of a protected route (or of a path that matches no route, so that
/// an anonymous caller learns nothing about which routes exist) and charges its rate. Every
/// answer to an admitted caller carries its `RateLimit-*` headers: the middleware that renders
/// problems keeps them (see [`super::middleware`]).
pub async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(services) = request.app_data::<web::Data<Services>>().cloned() else {
        let error = ApiError::Internal("services missing".to_owned());
        return Ok(request.error_response(error).map_into_right_body());
    };
    let (caller, rate) = match admit(&request, &services).await {
        Ok(admitted) => admitted,
        Err(error) => return Ok(request.error_response(error).map_into_right_body()),
    };
    request.extensions_mut().insert(caller);
    let mut response = next.call(request).await?.map_into_left_body();
    if let Some(state) = rate {
        set_rate_headers(response.headers_mut(), state);
    }
    Ok(response)
}

/// Size limits and the no-body rule (every route is a GET).
fn check_shape(request: &ServiceRequest) -> Result<(), ApiError> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(ApiError::TooLarge {
            status: actix_web::http::StatusCode::URI_TOO_LONG,
            detail: format!("the URL is longer than {MAX_URI_BYTES} bytes"),
        });
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::TooLarge {
            status: actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            detail: format!("the headers are larger than {MAX_HEADER_BYTES} bytes"),
        });
    }
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|length| length.trim() != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body {
        return Err(ApiError::InvalidRequest(
            "this API takes no request bodies".to_owned(),
        ));
    }
    Ok(())
}

/// Authenticates the caller and charges its rate; without authentication everyone sees all.
async fn admit(
    request: &ServiceRequest,
    services: &Services,
) -> Result<(Caller, Option<RateState>), ApiError> {
    let Some(keys) = services.keys() else {
        let caller = Caller {
            name: "anonymous".to_owned(),
            app_id: None,
            scope: Arc::new(Scope::All),
            operator: true,
        };
        return Ok((caller, None));
    };
    let presented = presented(request)
        .map_err(|why| ApiError::Unauthenticated(Credentials::Conflicting(why)))?
        .ok_or(ApiError::Unauthenticated(Credentials::Missing))?;
    let (caller, per_minute, local) = match presented {
        Presented::Key(presented) => {
            let key = keys
                .authenticate(presented)
                .ok_or(ApiError::Unauthenticated(Credentials::Invalid))?;
            let caller = Caller {
                name: key.name.clone(),
                app_id: None,
                scope: Arc::new(key.scope.clone()),
                operator: key.operator,
            };
            (caller, key.requests_per_minute, Limiter::Key(key))
        }
        Presented::Token(token) => {
            let entra = services
                .entra()
                .ok_or(ApiError::Unauthenticated(Credentials::Token(
                    TokenRejected::NotAccepted,
                )))?;
            let verified = entra.verify(token).await.map_err(|error| match error {
                EntraError::Rejected(why) => ApiError::Unauthenticated(Credentials::Token(why)),
                EntraError::Unmapped { app_id } => {
                    // The app id is the caller's public identifier, never a secret.
                    tracing::warn!(app_id = %app_id, "an Entra ID token maps to no configured caller");
                    ApiError::Forbidden
                }
            })?;
            let mapped = &verified.caller;
            let caller = Caller {
                name: mapped.name.clone(),
                app_id: Some(verified.app_id.clone()),
                scope: Arc::new(mapped.scope.clone()),
                operator: mapped.operator,
            };
            (caller, mapped.requests_per_minute, Limiter::Entra(verified))
        }
    };
    // Several replicas share each caller's minute through Redis; alone (or while Redis is
    // unavailable) the caller's own limiter decides. Entra callers' names are prefixed so that
    // a key and a mapping of one name keep separate budgets.
    let shared = match services.cluster() {
        Some(cluster) => {
            let name = match &local {
                Limiter::Key(_) => caller.name.clone(),
                Limiter::Entra(_) => format!("entra:{}", caller.name),
            };
            cluster.charge_key(&name, per_minute).await
        }
        None => None,
    };
    let state = shared.unwrap_or_else(|| match &local {
        Limiter::Key(key) => key.charge(),
        Limiter::Entra(verified) => verified.caller.charge(),
    });
    let state = state.map_err(|limited| ApiError::RateLimited {
        retry_after: limited.retry_after,
        limit: limited.limit,
    })?;
    Ok((caller, Some(state)))
}

/// Whose budget a request is charged to.
enum Limiter {
    Key(Arc<crate::auth::ApiKey>),
    Entra(crate::auth::entra::Verified),
}

/// A credential as presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented<'a> {
    /// An API key (`X-API-Key`, or `Authorization: Bearer` with a value that is not a JWT).
    Key(&'a str),
    /// An Entra ID access token (`Authorization: Bearer` with a JWT's form).
    Token(&'a str),
}

/// The credential of `Authorization: Bearer <key or token>` or `X-API-Key: <key>` (`None`:
/// neither header). A bearer value is a token when it has a JWT's form (keys never contain a
/// dot), a key otherwise.
///
/// Credentials that disagree are refused with why, never resolved by picking one: a header
/// given twice, an `Authorization` header that is not `Bearer <credential>` or an empty
/// `X-API-Key` (a client that meant to send something else), two different keys in the two
/// headers, or a token beside a key. The same key in both is accepted.
fn presented(request: &ServiceRequest) -> Result<Option<Presented<'_>>, &'static str> {
    let headers = request.headers();
    let authorization = single(
        headers,
        &header::AUTHORIZATION,
        "`Authorization` is given twice",
    )?
    .map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty())
            .ok_or("the `Authorization` header is not `Bearer <key>`")
    })
    .transpose()?;
    let api_key = single(headers, &X_API_KEY, "`X-API-Key` is given twice")?
        .map(|value| {
            value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .ok_or("the `X-API-Key` header is empty")
        })
        .transpose()?;
    let bearer = authorization.map(|value| {
        if looks_like_jwt(value) {
            Presented::Token(value)
        } else {
            Presented::Key(value)
        }
    });
    match (bearer, api_key) {
        (Some(Presented::Token(_)), Some(_)) => {
            Err("`Authorization` carries an access token and `X-API-Key` a key; send one")
        }
        (Some(Presented::Key(bearer)), Some(key)) if bearer != key => {
            Err("`Authorization` and `X-API-Key` carry different keys")
        }
        (Some(bearer), _) => Ok(Some(bearer)),
        (None, key) => Ok(key.map(Presented::Key)),
    }
}

/// The one value of header `name`, if any; `twice` when it is given more than once.
fn single<'a>(
    headers: &'a header::HeaderMap,
    name: &HeaderName,
    twice: &'static str,
) -> Result<Option<&'a HeaderValue>, &'static str> {
    let mut values = headers.get_all(name);
    let first = values.next();
    match values.next() {
        Some(_) => Err(twice),
        None => Ok(first),
    }
}

/// The `RateLimit-*` headers of a key's remaining allowance.
pub fn set_rate_headers(headers: &mut actix_web::http::header::HeaderMap, state: RateState) {
    for (name, value) in [
        (RATELIMIT_LIMIT, state.limit.to_string()),
        (RATELIMIT_REMAINING, state.remaining.to_string()),
        (RATELIMIT_RESET, state.reset_seconds.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
