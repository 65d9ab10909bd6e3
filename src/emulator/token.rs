//! Entra ID's token endpoint, `POST /{tenant}/oauth2/v2.0/token` (client credentials), and the
//! access tokens it issues.
//!
//! Owns the checks Entra makes, in Entra's order (tenant, form, grant type, client id, scope,
//! credential) and the AADSTS code of each refusal; the scope chooses the audience (Defender or
//! Graph) and with it the application role the token carries; the bytes of a refusal are
//! [`super::responses::entra_error`]'s. Access tokens are HS256 JWTs signed with a key made per
//! emulator, so tokens of one emulator are garbage to another.

use super::assertion::{self, AssertionError, Expected, Unusable};
use super::body::{read_limited, BodyError};
use super::faults::FaultProfile;
use super::options::CredentialKind;
use super::responses::{entra_error, EntraRefusal, JSON_UTF8};
use super::server::Shared;
use super::service::Service;
use super::tenants::TenantRecord;
use super::EmulatorError;
use crate::wire::{TokenResponse, JWT_BEARER_ASSERTION_TYPE};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a token request was refused. `Display` is the description after `AADSTSnnn: `.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The path's tenant is neither a GUID nor a domain name.
    #[error("Specified tenant identifier '{0}' is neither a valid DNS name, nor a valid external domain.")]
    InvalidTenantName(String),
    /// No such tenant.
    #[error("Tenant '{0}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.")]
    UnknownTenant(String),
    /// The body could not be read or was too large.
    #[error("Invalid request. Request is malformed or invalid. ({0})")]
    Body(#[from] BodyError),
    /// A required form parameter is missing or empty.
    #[error("The request body must contain the following parameter: '{0}'.")]
    MissingParameter(&'static str),
    /// A form parameter appears twice.
    #[error("The request is not properly formatted. The parameter '{0}' is duplicated.")]
    DuplicateParameter(String),
    /// `grant_type` is not `client_credentials`.
    #[error("The app requested an unsupported grant type '{0}'.")]
    UnsupportedGrantType(String),
    /// The client id is not registered (or consented) in the tenant.
    #[error("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")]
    UnknownApplication {
        /// The client id sent.
        client_id: String,
        /// The tenant's display name.
        tenant: String,
    },
    /// The scope is not a single `{resource}/.default`.
    #[error("The provided value for the input parameter 'scope' is not valid. The scope {0} is not valid.")]
    InvalidScope(String),
    /// The scope's resource is neither Defender's nor Graph's.
    #[error("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.")]
    UnknownResource {
        /// The resource asked for.
        resource: String,
        /// The tenant's display name.
        tenant: String,
    },
    /// Neither a client secret nor a client assertion.
    #[error("The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")]
    MissingCredential,
    /// Both a client secret and a client assertion.
    #[error("Invalid request. Request is malformed or invalid. Send either 'client_secret' or 'client_assertion', not both.")]
    BothCredentials,
    /// `client_assertion_type` is not JWT bearer.
    #[error("Invalid request. Request is malformed or invalid. The client_assertion_type '{0}' is not supported; use '{JWT_BEARER_ASSERTION_TYPE}'.")]
    UnsupportedAssertionType(String),
    /// Wrong (or revoked) client secret.
    #[error("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{0}'.")]
    InvalidSecret(String),
    /// Right secret, but expired.
    #[error("The provided client secret keys for app '{0}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.")]
    ExpiredSecret(String),
    /// The certificate client assertion was refused.
    #[error("{0}")]
    Assertion(#[from] AssertionError),
    /// The token could not be signed (a bug).
    #[error("An internal error occurred while issuing the token.")]
    Internal,
}

impl TokenError {
    /// Status, OAuth error and AADSTS code, as Entra answers.
    pub(crate) fn refusal(&self) -> EntraRefusal {
        use StatusCode as S;
        let (status, error, code) = match self {
            TokenError::InvalidTenantName(_) => (S::BAD_REQUEST, "invalid_request", 900023),
            TokenError::UnknownTenant(_) => (S::BAD_REQUEST, "invalid_request", 90002),
            TokenError::Body(BodyError::TooLarge) => {
                (S::PAYLOAD_TOO_LARGE, "invalid_request", 9002313)
            }
            TokenError::Body(BodyError::Unreadable) => (S::BAD_REQUEST, "invalid_request", 9002313),
            TokenError::MissingParameter(_) => (S::BAD_REQUEST, "invalid_request", 900144),
            TokenError::DuplicateParameter(_) => (S::BAD_REQUEST, "invalid_request", 9000411),
            TokenError::UnsupportedGrantType(_) => {
                (S::BAD_REQUEST, "unsupported_grant_type", 70003)
            }
            TokenError::UnknownApplication { .. } => {
                (S::BAD_REQUEST, "unauthorized_client", 700016)
            }
            TokenError::InvalidScope(_) => (S::BAD_REQUEST, "invalid_scope", 70011),
            TokenError::UnknownResource { .. } => (S::BAD_REQUEST, "invalid_resource", 500011),
            TokenError::MissingCredential => (S::UNAUTHORIZED, "invalid_client", 7000218),
            TokenError::BothCredentials | TokenError::UnsupportedAssertionType(_) => {
                (S::BAD_REQUEST, "invalid_request", 9002313)
            }
            TokenError::InvalidSecret(_) => (S::UNAUTHORIZED, "invalid_client", 7000215),
            TokenError::ExpiredSecret(_) => (S::UNAUTHORIZED, "invalid_client", 7000222),
            TokenError::Assertion(refused) if refused.is_malformed() => {
                (S::BAD_REQUEST, "invalid_request", refused.code())
            }
            TokenError::Assertion(refused) => (S::UNAUTHORIZED, "invalid_client", refused.code()),
            TokenError::Internal => (S::INTERNAL_SERVER_ERROR, "server_error", 90100),
        };
        EntraRefusal {
            status,
            error,
            code,
            text: self.to_string(),
        }
    }
}

/// Claims of an issued access token (a v1 app-only token, as Defender receives them).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    /// Audience: Defender's or Graph's resource, as the scope asked.
    pub aud: String,
    /// `https://sts.windows.net/{tid}/`.
    pub iss: String,
    /// Issued at (emulator clock, Unix seconds).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Client id.
    pub appid: String,
    /// `1` secret, `2` certificate.
    pub appidacr: String,
    /// Identity provider (the tenant's issuer).
    pub idp: String,
    /// Service principal object id.
    pub oid: String,
    /// Subject (the service principal).
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Application roles: the audience's score role (`Score.Read.All` or
    /// `SecurityEvents.Read.All`); absent without consent to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Token version.
    pub ver: String,
    /// Unique token id.
    pub uti: String,
}

/// Signs and reads this emulator's access tokens.
pub(crate) struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AccessTokens {
    /// A fresh random signing key.
    pub fn new() -> Result<Self, EmulatorError> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut validation = Validation::new(Algorithm::HS256);
        // Times and audience are checked by the score handler against the emulator clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let invalid = |error: jsonwebtoken::errors::Error| {
            EmulatorError::Internal(format!("access token key: {error}"))
        };
        Ok(Self {
            encoding: EncodingKey::from_secret(&key).map_err(invalid)?,
            decoding: DecodingKey::from_secret(&key).map_err(invalid)?,
            validation,
        })
    }

    /// Issues a token for `tenant`'s app and `audience`.
    pub fn mint(
        &self,
        tenant: &TenantRecord,
        audience: Service,
        now: OffsetDateTime,
        lifetime_seconds: u64,
        with_role: bool,
    ) -> Result<String, TokenError> {
        let iat = now.unix_timestamp();
        let issuer = format!("https://sts.windows.net/{}/", tenant.tenant_id);
        let claims = AccessClaims {
            aud: audience.resource().to_owned(),
            iss: issuer.clone(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(i64::try_from(lifetime_seconds).unwrap_or(i64::MAX)),
            appid: tenant.client_id.to_string(),
            appidacr: if tenant.kind == CredentialKind::Certificate {
                "2".into()
            } else {
                "1".into()
            },
            idp: issuer,
            oid: tenant.object_id.to_string(),
            sub: tenant.object_id.to_string(),
            tid: tenant.tenant_id.to_string(),
            roles: if with_role {
                vec![audience.role().to_owned()]
            } else {
                Vec::new()
            },
            ver: "1.0".into(),
            uti: Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("scoregate-emulator".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| TokenError::Internal)
    }

    /// The claims of a token this emulator signed, or `None` for anything else.
    pub fn read(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn issue_token(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Shared>,
) -> HttpResponse {
    let segment = request.match_info().get("tenant").unwrap_or_default();
    if state.msp.is_named(segment) {
        return issue_caller_token(&request, payload, &state).await;
    }
    let tenant = state.directory.find_authority_tenant(segment);
    let index = tenant.map(|tenant| tenant.index);
    state.stats.token_request(index);
    let outcome = match tenant {
        Some(tenant) => issue(&request, payload, &state, tenant, segment).await,
        None if Uuid::parse_str(segment).is_err() && !segment.contains('.') => {
            Err(TokenError::InvalidTenantName(segment.to_owned()))
        }
        None => Err(TokenError::UnknownTenant(segment.to_owned())),
    };
    state
        .stats
        .token_outcome(index, outcome.as_ref().ok().map(|(_, audience)| *audience));
    match outcome {
        Ok((answer, _)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, JSON_UTF8))
            .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(answer),
        Err(refused) => {
            tracing::debug!(tenant = segment, error = %refused, "token request refused");
            entra_error(&refused.refusal(), state.clock.now())
        }
    }
}

/// A caller app's token from the MSP tenant ([`super::callers`]).
async fn issue_caller_token(
    request: &HttpRequest,
    payload: web::Payload,
    state: &Shared,
) -> HttpResponse {
    let outcome = match read_limited(request, payload).await {
        Ok(body) => parse_form(request, &body)
            .and_then(|form| super::callers::issue_caller_token(&form, state)),
        Err(error) => Err(TokenError::Body(error)),
    };
    match outcome {
        Ok(answer) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, JSON_UTF8))
            .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(answer),
        Err(refused) => entra_error(&refused.refusal(), state.clock.now()),
    }
}

/// Anything but POST on the token path.
pub(crate) async fn token_wrong_method(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    let refusal = EntraRefusal {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        code: 900561,
        text: format!(
            "The endpoint only accepts POST requests. Received a {} request.",
            request.method()
        ),
    };
    entra_error(&refusal, state.clock.now())
}

/// The form, with duplicates refused and empty values treated as absent (as Entra does).
fn parse_form(request: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, TokenError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let mut form = HashMap::new();
    if !is_form {
        // Entra ignores a body it cannot read as a form: every parameter is then missing.
        return Ok(form);
    }
    for (key, value) in url::form_urlencoded::parse(body) {
        if value.is_empty() {
            continue;
        }
        if form.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(TokenError::DuplicateParameter(key.into_owned()));
        }
    }
    Ok(form)
}

/// The audience a client-credentials scope asks for: exactly one `{resource}/.default` naming
/// a resource the tenant has (Defender's or Graph's).
fn check_scope(scope: &str, tenant: &TenantRecord) -> Result<Service, TokenError> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let [only] = scopes.as_slice() else {
        return Err(TokenError::InvalidScope(scope.to_owned()));
    };
    let Some(resource) = only.strip_suffix("/.default") else {
        return Err(TokenError::InvalidScope(scope.to_owned()));
    };
    if resource.is_empty() {
        return Err(TokenError::InvalidScope(scope.to_owned()));
    }
    Service::from_resource(resource).ok_or_else(|| TokenError::UnknownResource {
        resource: resource.to_owned(),
        tenant: tenant.name.clone(),
    })
}

async fn issue(
    request: &HttpRequest,
    payload: web::Payload,
    state: &Shared,
    tenant: &TenantRecord,
    segment: &str,
) -> Result<(TokenResponse, Service), TokenError> {
    let body = read_limited(request, payload).await?;
    let form = parse_form(request, &body)?;
    let param = |name: &'static str| {
        form.get(name)
            .map(String::as_str)
            .ok_or(TokenError::MissingParameter(name))
    };

    let grant_type = param("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(TokenError::UnsupportedGrantType(grant_type.to_owned()));
    }
    let client_id = param("client_id")?;
    let registered = Uuid::parse_str(client_id).is_ok_and(|id| id == tenant.client_id);
    // An app never consented to in the tenant has no service principal there: Entra cannot
    // tell it from an unknown one (client credentials never answer AADSTS65001).
    if !registered || tenant.fault() == Some(FaultProfile::NotConsented) {
        return Err(TokenError::UnknownApplication {
            client_id: client_id.to_owned(),
            tenant: tenant.name.clone(),
        });
    }
    let audience = check_scope(param("scope")?, tenant)?;
    state.stats.token_audience(Some(tenant.index), audience);

    let fault = tenant.fault();
    match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(_), Some(_)) => return Err(TokenError::BothCredentials),
        (None, None) => return Err(TokenError::MissingCredential),
        (Some(secret), None) => {
            let matches = tenant.secret.as_ref().is_some_and(|expected| {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    expected.expose_secret().as_bytes(),
                    secret.as_bytes(),
                )
                .is_ok()
            });
            if !matches || fault == Some(FaultProfile::Revoked) {
                return Err(TokenError::InvalidSecret(client_id.to_owned()));
            }
            if fault == Some(FaultProfile::ExpiredSecret) {
                return Err(TokenError::ExpiredSecret(client_id.to_owned()));
            }
        }
        (None, Some(client_assertion)) => {
            let assertion_type = param("client_assertion_type")?;
            if assertion_type != JWT_BEARER_ASSERTION_TYPE {
                return Err(TokenError::UnsupportedAssertionType(
                    assertion_type.to_owned(),
                ));
            }
            let tenant_names = [
                tenant.tenant_id.to_string(),
                tenant.domain.clone(),
                segment.to_owned(),
            ];
            let audiences = assertion::audiences(&state.hosts, &tenant_names);
            // Never generated here: a certificate nobody has asked for cannot have signed.
            let certificate = tenant.certificate.get();
            let expected = Expected {
                client_id,
                audiences: &audiences,
                now: OffsetDateTime::now_utc().unix_timestamp(),
                certificate: certificate.map(|c| c.as_ref()),
                certificate_unusable: match fault {
                    Some(FaultProfile::Revoked) => Some(Unusable::Revoked),
                    Some(FaultProfile::ExpiredSecret) => Some(Unusable::Expired),
                    _ => None,
                },
            };
            assertion::verify(client_assertion, &expected)?;
        }
    }

    let lifetime = state.settings.token_lifetime_seconds;
    // Consent is per API: a tenant missing one service's role still gets the other's.
    let missing_role = match audience {
        Service::Defender => FaultProfile::Forbidden,
        Service::Graph => FaultProfile::GraphForbidden,
    };
    let with_role = fault != Some(missing_role);
    let access_token =
        state
            .tokens
            .mint(tenant, audience, state.clock.now(), lifetime, with_role)?;
    let expires_in = i64::try_from(lifetime).unwrap_or(i64::MAX);
    Ok((
        TokenResponse {
            token_type: "Bearer".into(),
            expires_in,
            ext_expires_in: expires_in,
            access_token,
        },
        audience,
    ))
}
