//! The MSP's own tenant (`msp`) and its caller apps: the applications that call scoregate with
//! Entra ID access tokens (portals, functions, managed identities).
//!
//! Owns the caller apps (`portal`, `ops`, `norole`, `tagged`, and any `--caller NAME=ROLE+…`),
//! their tokens (client credentials on the usual token endpoint, v2 by default, v1 with
//! `token_version=1`), the OpenID configuration and key set of the emulated issuer, and the
//! operator routes tests use (`/_emulator/callers`, `/_emulator/keys…`). The signing keys are
//! [`super::signing`]'s.

use super::body::read_limited;
use super::responses::{entra_error, JSON_UTF8};
use super::server::Shared;
use super::signing::SigningKeys;
use super::token::TokenError;
use super::EmulatorError;
use crate::wire::TokenResponse;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The path segment naming the MSP's tenant (its GUID works too).
pub const MSP_TENANT: &str = "msp";
/// The App ID URI of the emulated scoregate registration: the audience of caller tokens.
pub const SCOREGATE_AUDIENCE: &str = "api://scoregate";
/// The one scope caller apps ask for.
pub const SCOREGATE_SCOPE: &str = "api://scoregate/.default";

/// `--caller NAME=ROLE[+ROLE…]`: a caller app (an empty role list: `NAME=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerSpec {
    /// The app's name.
    pub name: String,
    /// App roles assigned to it.
    pub roles: Vec<String>,
}

impl FromStr for CallerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, roles) = text
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=ROLE[+ROLE…], got {text:?}"))?;
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !valid(name) {
            return Err(format!(
                "{name:?} is not a caller name (letters, digits, - _ .)"
            ));
        }
        let roles: Vec<String> = roles
            .split('+')
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = roles.iter().find(|role| !valid(role)) {
            return Err(format!(
                "{bad:?} is not a role name (letters, digits, - _ .)"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            roles,
        })
    }
}

impl fmt::Display for CallerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.roles.join("+"))
    }
}

/// The callers every emulator has.
pub fn default_callers() -> Vec<CallerSpec> {
    let spec = |name: &str, roles: &[&str]| CallerSpec {
        name: name.to_owned(),
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
    };
    vec![
        spec("portal", &["Scores.Read.All"]),
        spec("ops", &["Scores.Read.All", "Operator"]),
        spec("norole", &[]),
        spec("tagged", &["Scores.Read.Gold"]),
    ]
}

/// One caller app registered in the MSP tenant.
pub(crate) struct CallerApp {
    /// Name (the `--caller` name).
    pub name: String,
    /// Application (client) id.
    pub client_id: Uuid,
    /// Its service principal's object id.
    pub object_id: Uuid,
    /// Client secret.
    pub secret: SecretString,
    /// App roles assigned to it on the scoregate registration.
    pub roles: Vec<String>,
}

/// The MSP tenant: its id, caller apps and signing keys.
pub(crate) struct MspTenant {
    /// The tenant GUID.
    pub tenant_id: Uuid,
    /// Caller apps, defaults first.
    pub callers: Vec<CallerApp>,
    /// Token signing keys.
    pub keys: SigningKeys,
}

impl MspTenant {
    /// The MSP tenant of `seed`, with the default callers and `extra` ones (a name given twice:
    /// the later roles win).
    pub fn generate(seed: u64, extra: &[CallerSpec]) -> Result<Self, EmulatorError> {
        let mut rng = super::tenants::seeded_rng(&[seed, 0x006d_7370]);
        let tenant_id = super::tenants::random_uuid(&mut rng);
        let mut specs = default_callers();
        for spec in extra {
            match specs.iter_mut().find(|known| known.name == spec.name) {
                Some(known) => known.roles = spec.roles.clone(),
                None => specs.push(spec.clone()),
            }
        }
        let callers = specs
            .into_iter()
            .map(|spec| CallerApp {
                client_id: super::tenants::random_uuid(&mut rng),
                object_id: super::tenants::random_uuid(&mut rng),
                secret: super::tenants::random_secret(&mut rng),
                name: spec.name,
                roles: spec.roles,
            })
            .collect();
        Ok(Self {
            tenant_id,
            callers,
            keys: SigningKeys::new()?,
        })
    }

    /// Whether a path segment names this tenant.
    pub fn is_named(&self, segment: &str) -> bool {
        segment.eq_ignore_ascii_case(MSP_TENANT)
            || Uuid::parse_str(segment).is_ok_and(|id| id == self.tenant_id)
    }

    /// The claims of a caller token: v2 by default, v1 with `version == 1`.
    pub fn claims(
        &self,
        app: &CallerApp,
        authority: &str,
        now: i64,
        lifetime: i64,
        version: u8,
    ) -> serde_json::Value {
        let tid = self.tenant_id.to_string();
        let mut claims = serde_json::json!({
            "aud": SCOREGATE_AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(lifetime),
            "oid": app.object_id.to_string(),
            "sub": app.object_id.to_string(),
            "tid": tid,
            "idtyp": "app",
            "uti": Uuid::new_v4().simple().to_string(),
        });
        if let Some(map) = claims.as_object_mut() {
            if version == 1 {
                map.insert("iss".into(), format!("{authority}/{tid}/").into());
                map.insert("appid".into(), app.client_id.to_string().into());
                map.insert("appidacr".into(), "1".into());
                map.insert("ver".into(), "1.0".into());
            } else {
                map.insert("iss".into(), format!("{authority}/{tid}/v2.0").into());
                map.insert("azp".into(), app.client_id.to_string().into());
                map.insert("azpacr".into(), "1".into());
                map.insert("ver".into(), "2.0".into());
            }
            if !app.roles.is_empty() {
                map.insert("roles".into(), app.roles.clone().into());
            }
        }
        claims
    }
}

/// The emulated issuer's authority: the emulator's first base URL.
fn authority(state: &Shared) -> &str {
    state.hosts.first().map_or("", String::as_str)
}

/// `POST /{msp}/oauth2/v2.0/token` for a caller app: client credentials with a secret, scope
/// `api://scoregate/.default`; `token_version=1` asks for the v1 form.
pub(crate) fn issue_caller_token(
    form: &HashMap<String, String>,
    state: &Shared,
) -> Result<TokenResponse, TokenError> {
    let msp = &state.msp;
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
    let app = msp
        .callers
        .iter()
        .find(|app| Uuid::parse_str(client_id).is_ok_and(|id| id == app.client_id))
        .ok_or_else(|| TokenError::UnknownApplication {
            client_id: client_id.to_owned(),
            tenant: MSP_TENANT.to_owned(),
        })?;
    let scope = param("scope")?;
    if scope != SCOREGATE_SCOPE {
        return Err(TokenError::InvalidScope(scope.to_owned()));
    }
    let secret = form
        .get("client_secret")
        .ok_or(TokenError::MissingCredential)?;
    let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
        app.secret.expose_secret().as_bytes(),
        secret.as_bytes(),
    )
    .is_ok();
    if !matches {
        return Err(TokenError::InvalidSecret(client_id.to_owned()));
    }
    let version = match form.get("token_version").map(String::as_str) {
        Some("1") => 1,
        _ => 2,
    };
    let lifetime = i64::try_from(state.settings.token_lifetime_seconds).unwrap_or(i64::MAX);
    let claims = msp.claims(
        app,
        authority(state),
        state.clock.now().unix_timestamp(),
        lifetime,
        version,
    );
    let access_token = msp.keys.sign(&claims).map_err(|_| TokenError::Internal)?;
    Ok(TokenResponse {
        token_type: "Bearer".into(),
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token,
    })
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration` (the MSP tenant or any emulated one).
pub(crate) async fn openid_configuration(
    request: HttpRequest,
    state: web::Data<Shared>,
) -> HttpResponse {
    let segment = request.match_info().get("tenant").unwrap_or_default();
    let tid = if state.msp.is_named(segment) {
        Some(state.msp.tenant_id)
    } else {
        state
            .directory
            .find_authority_tenant(segment)
            .map(|tenant| tenant.tenant_id)
    };
    let Some(tid) = tid else {
        let refusal = TokenError::UnknownTenant(segment.to_owned());
        return entra_error(&refusal.refusal(), state.clock.now());
    };
    if !state.msp.keys.configuration_served() {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let authority = authority(&state);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, JSON_UTF8))
        .json(serde_json::json!({
            "issuer": format!("{authority}/{tid}/v2.0"),
            "token_endpoint": format!("{authority}/{tid}/oauth2/v2.0/token"),
            "jwks_uri": format!("{authority}/{tid}/discovery/v2.0/keys"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
        }))
}

/// `GET /{tenant}/discovery/v2.0/keys`: the key set (503 while taken down).
pub(crate) async fn key_set(state: web::Data<Shared>) -> HttpResponse {
    match state.msp.keys.published(authority(&state)) {
        Some(keys) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, JSON_UTF8))
            .json(serde_json::json!({ "keys": keys })),
        None => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// One caller app in `GET /_emulator/callers` (test data: the secret is listed).
#[derive(Serialize)]
struct CallerView<'a> {
    name: &'a str,
    tenant_id: Uuid,
    client_id: Uuid,
    object_id: Uuid,
    client_secret: &'a str,
    roles: &'a [String],
}

/// `GET /_emulator/callers`.
pub(crate) async fn list_callers(state: web::Data<Shared>) -> HttpResponse {
    let msp = &state.msp;
    let callers: Vec<CallerView<'_>> = msp
        .callers
        .iter()
        .map(|app| CallerView {
            name: &app.name,
            tenant_id: msp.tenant_id,
            client_id: app.client_id,
            object_id: app.object_id,
            client_secret: app.secret.expose_secret(),
            roles: &app.roles,
        })
        .collect();
    HttpResponse::Ok().json(callers)
}

/// `POST /_emulator/keys/rotate`: sign with a new key from now on.
pub(crate) async fn rotate_keys(state: web::Data<Shared>) -> HttpResponse {
    match state.msp.keys.rotate() {
        Ok(kid) => HttpResponse::Ok().json(serde_json::json!({ "kid": kid })),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

/// `GET /_emulator/keys`: the key ids and the key endpoints' counters.
pub(crate) async fn get_keys(state: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(state.msp.keys.view())
}

/// Body of `POST /_emulator/keys/outage`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outage {
    down: bool,
}

/// `POST /_emulator/keys/outage` `{"down": true|false}`: the key endpoints answer 503 or not.
pub(crate) async fn set_key_outage(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Shared>,
) -> HttpResponse {
    let Ok(body) = read_limited(&request, payload).await else {
        return HttpResponse::BadRequest().finish();
    };
    match serde_json::from_slice::<Outage>(&body) {
        Ok(outage) => {
            state.msp.keys.set_down(outage.down);
            HttpResponse::Ok().json(state.msp.keys.view())
        }
        Err(_) => HttpResponse::BadRequest().body("expected {\"down\": true | false}"),
    }
}

/// Body of `POST /_emulator/callers/{name}/token`: a token with claims changed, for tests of
/// what a gateway refuses.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CraftedToken {
    /// 1 or 2 (default).
    #[serde(default)]
    version: Option<u8>,
    /// Claims set over the usual ones; `null` removes one.
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
}

/// `POST /_emulator/callers/{name}/token`: a caller token signed with the current key, with
/// claims overridden (expired, another audience, another issuer…). Test data only.
pub(crate) async fn craft_token(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<Shared>,
) -> HttpResponse {
    let name = request.match_info().get("name").unwrap_or_default();
    let Some(app) = state.msp.callers.iter().find(|app| app.name == name) else {
        return HttpResponse::NotFound().body("no such caller");
    };
    let Ok(body) = read_limited(&request, payload).await else {
        return HttpResponse::BadRequest().finish();
    };
    let crafted: CraftedToken = if body.is_empty() {
        CraftedToken::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(crafted) => crafted,
            Err(error) => return HttpResponse::BadRequest().body(error.to_string()),
        }
    };
    let lifetime = i64::try_from(state.settings.token_lifetime_seconds).unwrap_or(i64::MAX);
    let mut claims = state.msp.claims(
        app,
        authority(&state),
        state.clock.now().unix_timestamp(),
        lifetime,
        crafted.version.unwrap_or(2),
    );
    if let Some(map) = claims.as_object_mut() {
        for (key, value) in crafted.claims {
            if value.is_null() {
                map.remove(&key);
            } else {
                map.insert(key, value);
            }
        }
    }
    match state.msp.keys.sign(&claims) {
        Ok(token) => {
            HttpResponse::build(StatusCode::OK).json(serde_json::json!({ "access_token": token }))
        }
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_specs_parse_names_and_roles() {
        let spec: CallerSpec = "fn=Scores.Read.All+Operator".parse().unwrap();
        assert_eq!(spec.name, "fn");
        assert_eq!(spec.roles, vec!["Scores.Read.All", "Operator"]);
        assert_eq!(spec.to_string(), "fn=Scores.Read.All+Operator");
        let none: CallerSpec = "bare=".parse().unwrap();
        assert!(none.roles.is_empty());
        assert!("noequals".parse::<CallerSpec>().is_err());
        assert!("=Role".parse::<CallerSpec>().is_err());
        assert!("a=Bad Role".parse::<CallerSpec>().is_err());
    }

    #[test]
    fn the_msp_tenant_is_seeded_and_extra_callers_replace_default_roles() {
        let extra = vec!["portal=Other".parse().unwrap(), "new=R".parse().unwrap()];
        let one = MspTenant::generate(7, &extra).unwrap();
        let two = MspTenant::generate(7, &[]).unwrap();
        assert_eq!(one.tenant_id, two.tenant_id, "same seed, same tenant");
        assert!(one.is_named("msp") && one.is_named(&one.tenant_id.to_string()));
        let names: Vec<&str> = one.callers.iter().map(|app| app.name.as_str()).collect();
        assert_eq!(names, ["portal", "ops", "norole", "tagged", "new"]);
        assert_eq!(one.callers[0].roles, vec!["Other"]);
        let v1 = one.claims(&one.callers[1], "https://e", 100, 60, 1);
        assert_eq!(v1["iss"], format!("https://e/{}/", one.tenant_id));
        assert_eq!(v1["appid"], one.callers[1].client_id.to_string());
        let v2 = one.claims(&one.callers[1], "https://e", 100, 60, 2);
        assert_eq!(v2["iss"], format!("https://e/{}/v2.0", one.tenant_id));
        assert_eq!(v2["roles"], json_roles(&["Scores.Read.All", "Operator"]));
        assert_eq!(v2["exp"], 160);
    }

    fn json_roles(roles: &[&str]) -> serde_json::Value {
        serde_json::json!(roles)
    }
}
