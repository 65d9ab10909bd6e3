//! Entra ID callers: an access token checked as Microsoft documents it, then mapped to a
//! configured caller (`[[auth.entra.callers]]`) that carries what an API key carries.
//!
//! The checks, in order: the token's form and `alg` (RS256 only, read from the raw header so
//! that `none` and HMAC are named), the signing key by `kid` ([`super::jwks`]), signature,
//! `exp`/`nbf` with the leeway and `aud` (jsonwebtoken), then `tid` (a GUID, allowed), `iss`
//! (exactly the v2 or v1 issuer of that `tid`, and the key's own issuer) and delegated tokens.
//! A rejection is one of a closed set of reasons ([`TokenRejected`]): nothing of the token is
//! kept, logged or counted. It knows nothing of HTTP.

use super::jwks::{KeyLookupError, SigningKeys};
use super::{RateLimited, RateState, RequestLimiter, Scope};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use url::Url;

/// Microsoft Graph's application id: its tokens are never accepted, whatever is configured.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Microsoft Graph's resource URI.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// `[auth.entra]`, resolved: who may issue tokens, for which audiences, and the callers.
#[derive(Debug)]
pub struct EntraConfig {
    /// Allowed `tid`s (lower-case GUIDs); the first one's OpenID configuration gives the keys.
    pub tenants: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The authority, `https://login.microsoftonline.com/` or the emulator's base URL.
    pub authority: Url,
    /// Where v1 issuers live: `https://sts.windows.net/` for Microsoft's clouds, the authority
    /// itself for a custom one.
    pub v1_issuer_base: Url,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// Whether delegated tokens (`scp`, a signed-in user) are accepted (still with a mapped role).
    pub accept_delegated: bool,
    /// The callers, in the configuration's order: the first that matches a token wins.
    pub callers: Vec<Arc<EntraCaller>>,
}

impl EntraConfig {
    /// `…/{first tenant}/v2.0/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> Option<Url> {
        let tenant = self.tenants.first()?;
        self.authority
            .join(&format!("{tenant}/v2.0/.well-known/openid-configuration"))
            .ok()
    }

    /// The v2 and v1 issuers of tenant `tid`.
    pub fn issuers(&self, tid: &str) -> [String; 2] {
        [
            format!("{}{tid}/v2.0", self.authority),
            format!("{}{tid}/", self.v1_issuer_base),
        ]
    }
}

/// What a mapping matches in a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerMatch {
    /// An app role in `roles`.
    Role(String),
    /// The calling application's client id (`azp` in v2, `appid` in v1).
    AppId(String),
    /// The caller's object id (`oid`: the service principal or managed identity).
    ObjectId(String),
}

impl fmt::Display for CallerMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerMatch::Role(role) => write!(f, "role {role}"),
            CallerMatch::AppId(id) => write!(f, "app_id {id}"),
            CallerMatch::ObjectId(id) => write!(f, "object_id {id}"),
        }
    }
}

/// One `[[auth.entra.callers]]` entry: a principal with an API key's scope, operator flag and
/// its own request budget.
pub struct EntraCaller {
    /// Name for logs and metrics.
    pub name: String,
    /// What a token must carry to be this caller.
    pub matcher: CallerMatch,
    /// Tenants the caller may see.
    pub scope: Scope,
    /// May read operator data.
    pub operator: bool,
    /// Requests per minute.
    pub requests_per_minute: u32,
    /// The caller's own budget (mapped callers only: a rejected token gets none).
    limiter: RequestLimiter,
}

impl fmt::Debug for EntraCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraCaller")
            .field("name", &self.name)
            .field("matcher", &self.matcher)
            .field("scope", &self.scope)
            .field("operator", &self.operator)
            .field("requests_per_minute", &self.requests_per_minute)
            .finish_non_exhaustive()
    }
}

impl EntraCaller {
    /// A caller; `None` when `requests_per_minute` is zero.
    pub fn new(
        name: String,
        matcher: CallerMatch,
        scope: Scope,
        operator: bool,
        requests_per_minute: u32,
    ) -> Option<Self> {
        Some(Self {
            name,
            matcher,
            scope,
            operator,
            requests_per_minute,
            limiter: RequestLimiter::new(requests_per_minute)?,
        })
    }

    /// Spends one request of the caller's budget.
    pub fn charge(&self) -> Result<RateState, RateLimited> {
        self.limiter.charge()
    }
}

/// Why a token is refused. The text is the `error_description` (RFC 6750): fixed words,
/// never anything taken from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    /// Not a JWT, or its header or claims do not parse.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `alg` is not RS256 (`none`, HMAC, anything else).
    #[error("the token's algorithm is not accepted; only RS256 is")]
    Algorithm,
    /// No `kid` in the header.
    #[error("the token names no signing key (kid)")]
    NoKeyId,
    /// The key lookup failed.
    #[error("{0}")]
    Key(KeyLookupError),
    /// The signature does not verify.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A Microsoft Graph token.
    #[error("the token is for Microsoft Graph, not for this API")]
    GraphAudience,
    /// `aud` is none of the configured audiences.
    #[error("the token is for another audience")]
    Audience,
    /// `tid` is missing, not a GUID, or not an allowed tenant.
    #[error("the token's tenant is not allowed")]
    Tenant,
    /// `iss` is not the issuer of the token's tenant.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// A delegated (user) token while only app-only tokens are accepted.
    #[error("delegated (user) tokens are not accepted")]
    Delegated,
    /// A claim the checks need is missing or of the wrong type.
    #[error("the token lacks a required claim")]
    Claims,
    /// A token where only API keys are configured.
    #[error("this gateway accepts API keys only, not access tokens")]
    NotAccepted,
}

/// Why an Entra caller is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    /// The token is not valid (401).
    #[error("{0}")]
    Rejected(TokenRejected),
    /// The token is valid but maps to no configured caller (403).
    #[error("the token of app {app_id} maps to no configured caller")]
    Unmapped {
        /// The calling app's client id (for the log).
        app_id: String,
    },
}

impl From<TokenRejected> for EntraError {
    fn from(rejected: TokenRejected) -> Self {
        EntraError::Rejected(rejected)
    }
}

/// A token that verified and mapped.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The mapped caller.
    pub caller: Arc<EntraCaller>,
    /// The calling application's client id (`azp` or `appid`).
    pub app_id: String,
}

/// The Entra side of authentication: the configuration in force and the issuer's keys.
pub struct EntraVerifier {
    /// `[auth.entra]`, swapped on reload.
    pub config: Arc<EntraConfig>,
    /// The signing keys of the configuration's issuer.
    keys: Arc<SigningKeys>,
    /// Where the keys come from: a reload that keeps it keeps the cached keys.
    discovery: Option<Url>,
}

impl EntraVerifier {
    /// A verifier for `config`, fetching keys with `http`; the keys cached by `previous` are
    /// kept when it reads the same OpenID configuration.
    pub fn new(
        config: Arc<EntraConfig>,
        http: reqwest::Client,
        previous: Option<&EntraVerifier>,
    ) -> Self {
        let discovery = config.discovery_url();
        let keys = match previous {
            Some(previous) if previous.discovery == discovery => previous.keys.clone(),
            _ => {
                let source: Box<dyn super::jwks::KeySource> = match &discovery {
                    Some(url) => Box::new(super::jwks::HttpKeySource::new(http, url.clone())),
                    None => Box::new(super::jwks::NoKeys),
                };
                Arc::new(SigningKeys::new(source))
            }
        };
        Self {
            config,
            keys,
            discovery,
        }
    }

    /// Number of signing keys cached (nothing else grows with the tokens presented).
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Checks `token` and maps it to a caller.
    pub async fn verify(&self, token: &str) -> Result<Verified, EntraError> {
        verify(&self.config, &self.keys, token).await
    }
}

/// Whether `value` has a JWT's form (three base64url segments, a JSON header): how a token is
/// told from an API key on `Authorization: Bearer` (keys never contain a dot).
pub fn looks_like_jwt(value: &str) -> bool {
    let mut segments = value.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    let base64url = |segment: &str| {
        segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // `eyJ` is `{"` in base64: every JWT header starts so.
    header.starts_with("eyJ")
        && !claims.is_empty()
        && base64url(header)
        && base64url(claims)
        && base64url(signature)
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims the checks read (others are ignored).
#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    idtyp: Option<String>,
    /// v2: the calling app.
    #[serde(default)]
    azp: Option<String>,
    /// v1: the calling app.
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    oid: Option<String>,
}

#[derive(Deserialize)]
struct AudienceOnly {
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

/// Checks `token` and maps it to a caller of `config`.
pub async fn verify(
    config: &EntraConfig,
    keys: &SigningKeys,
    token: &str,
) -> Result<Verified, EntraError> {
    let header = read_header(token)?;
    if header.alg != "RS256" {
        return Err(TokenRejected::Algorithm.into());
    }
    let kid = header.kid.ok_or(TokenRejected::NoKeyId)?;
    let key = keys.find(&kid).await.map_err(TokenRejected::Key)?;

    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = config.leeway_seconds;
    validation.validate_nbf = true;
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
        .map_err(|error| classify(error.kind(), token))?
        .claims;
    // An audience list naming Graph beside an accepted audience is still a Graph token.
    if is_graph_token(token) {
        return Err(TokenRejected::GraphAudience.into());
    }

    let tid = claims
        .tid
        .as_deref()
        .filter(|tid| uuid::Uuid::parse_str(tid).is_ok())
        .map(str::to_ascii_lowercase)
        .ok_or(TokenRejected::Tenant)?;
    if !config.tenants.contains(&tid) {
        return Err(TokenRejected::Tenant.into());
    }
    if !config.issuers(&tid).contains(&claims.iss) {
        return Err(TokenRejected::Issuer.into());
    }
    // Entra writes the key's issuer as a template (`…/{tenantid}/v2.0`).
    if let Some(issuer) = &key.issuer {
        let expected = issuer.replace("{tenantid}", &tid);
        if !config.issuers(&tid).contains(&expected) {
            return Err(TokenRejected::Issuer.into());
        }
    }
    let delegated = claims.scp.is_some() || claims.idtyp.as_deref() == Some("user");
    if delegated && !config.accept_delegated {
        return Err(TokenRejected::Delegated.into());
    }
    let app_id = claims.azp.or(claims.appid).ok_or(TokenRejected::Claims)?;
    let caller = config.callers.iter().find(|caller| match &caller.matcher {
        CallerMatch::Role(role) => claims.roles.contains(role),
        // A delegated token maps only by role: the app and object ids are the user's app's.
        CallerMatch::AppId(id) => !delegated && id.eq_ignore_ascii_case(&app_id),
        CallerMatch::ObjectId(id) => {
            !delegated
                && claims
                    .oid
                    .as_deref()
                    .is_some_and(|oid| id.eq_ignore_ascii_case(oid))
        }
    });
    match caller {
        Some(caller) => Ok(Verified {
            caller: caller.clone(),
            app_id,
        }),
        None => Err(EntraError::Unmapped { app_id }),
    }
}

/// The raw header: `alg` read as text, so that `none` and unknown algorithms are named.
fn read_header(token: &str) -> Result<RawHeader, TokenRejected> {
    if !looks_like_jwt(token) {
        return Err(TokenRejected::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenRejected::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejected::Malformed)
}

/// The reason of a jsonwebtoken refusal.
fn classify(kind: &ErrorKind, token: &str) -> TokenRejected {
    match kind {
        ErrorKind::InvalidSignature => TokenRejected::Signature,
        ErrorKind::ExpiredSignature => TokenRejected::Expired,
        ErrorKind::ImmatureSignature => TokenRejected::NotYetValid,
        ErrorKind::InvalidAudience if is_graph_token(token) => TokenRejected::GraphAudience,
        ErrorKind::InvalidAudience => TokenRejected::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenRejected::Algorithm,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            TokenRejected::Claims
        }
        _ => TokenRejected::Malformed,
    }
}

/// Whether the (signature-checked) token's audience is Microsoft Graph's.
fn is_graph_token(token: &str) -> bool {
    let Ok(claims) = jsonwebtoken::dangerous::insecure_decode::<AudienceOnly>(token) else {
        return false;
    };
    let is_graph = |aud: &str| {
        aud.eq_ignore_ascii_case(GRAPH_APP_ID)
            || aud
                .trim_end_matches('/')
                .eq_ignore_ascii_case(GRAPH_RESOURCE)
    };
    match claims.claims.aud {
        Some(serde_json::Value::String(aud)) => is_graph(&aud),
        Some(serde_json::Value::Array(values)) => values
            .iter()
            .any(|value| value.as_str().is_some_and(is_graph)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_told_from_an_api_key_by_its_form() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"));
        assert!(
            looks_like_jwt("eyJhbGciOiJub25lIn0.eyJ4IjoxfQ."),
            "alg none"
        );
        assert!(!looks_like_jwt("sg_abcDEF123-_"));
        assert!(!looks_like_jwt("eyJa.b"));
        assert!(!looks_like_jwt("eyJa.b.c.d"));
        assert!(!looks_like_jwt("abc.def.ghi"));
        assert!(!looks_like_jwt("eyJa.b c.d"));
    }

    #[test]
    fn the_header_is_read_as_text_so_none_and_hmac_are_named() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token = format!("{}.{}.", encode(r#"{"alg":"none"}"#), encode("{}"));
        assert_eq!(read_header(&token).unwrap().alg, "none");
        let token = format!(
            "{}.{}.x",
            encode(r#"{"alg":"HS256","kid":"k"}"#),
            encode("{}")
        );
        let header = read_header(&token).unwrap();
        assert_eq!(
            (header.alg.as_str(), header.kid.as_deref()),
            ("HS256", Some("k"))
        );
        assert_eq!(read_header("sg_key").err(), Some(TokenRejected::Malformed));
    }
}
