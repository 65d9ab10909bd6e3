//! The sources, one file per metric, and the one HTTP call they all make.
//!
//! A metric's source is data ([`Source`]): the path (and query) of its value under its upstream
//! service's base URL, and how a successful answer's body becomes a [`Reading`]. Where the
//! service is, which token scope it takes and how fast it may be called are the tenant's
//! [`Endpoint`](crate::tenants::Endpoint) for the service, not the source's. What the answers of
//! one service share — its error body, whether 206 Partial Content is an answer — is that
//! service's [`Dialect`], in its own file (`defender.rs`, `graph.rs`).
//!
//! Adding a metric is a file here defining its `SOURCE` and one line in [`SOURCES`]
//! (`docs/contributing/adding-a-metric.md` lists the other steps).

use super::{
    CallFailure, ControlsSink, DailyPage, DailyReadings, Metric, Reading, ScoreSource, Transport,
    UpstreamService,
};
use crate::controls::graph::{ControlProfilesPage, SnapshotControls};
use crate::tenants::Tenant;
use crate::token::BearerToken;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use url::Url;

mod defender;
pub mod device;
pub mod exposure;
mod graph;
pub mod secure;

#[cfg(test)]
mod tests;

/// Every metric's source: the registry. A metric with no source here cannot be fetched (a unit
/// test checks that every [`Metric`] has exactly one).
pub const SOURCES: [&Source; 3] = [&device::SOURCE, &exposure::SOURCE, &secure::SOURCE];

/// Whether `metric`'s source keeps a daily history of its own (Graph's 90 days of `secure`):
/// the metrics the history back-fills.
pub fn keeps_daily_history(metric: Metric) -> bool {
    SOURCES
        .iter()
        .any(|source| source.metric == metric && source.daily.is_some())
}

/// Every source of [`SOURCES`] over the shared client, for the policy stack.
pub fn all(transport: &Transport) -> Vec<Arc<dyn ScoreSource>> {
    all_with_sink(transport, None)
}

/// Every source of [`SOURCES`] over the shared client, telling `sink` of the controls in the
/// answers of those whose answers carry them.
pub fn all_with_sink(
    transport: &Transport,
    sink: Option<Arc<dyn ControlsSink>>,
) -> Vec<Arc<dyn ScoreSource>> {
    SOURCES
        .into_iter()
        .map(|source| {
            Arc::new(HttpSource {
                source,
                transport: transport.clone(),
                sink: sink.clone(),
            }) as Arc<dyn ScoreSource>
        })
        .collect()
}

/// One metric's source, as data: where its value is asked for under its service's base URL and
/// how the answer is read. Its upstream service is the metric's ([`Metric::service`]).
pub struct Source {
    /// The metric it reads.
    pub metric: Metric,
    /// The path under the service's base URL (`/api/configurationScore`).
    pub path: &'static str,
    /// The query of a call for the current value (`$top=1`), in order; often empty.
    pub query: &'static [(&'static str, &'static str)],
    /// Reads the body of a successful answer (200, and Graph's 206).
    pub read: fn(&[u8]) -> Result<Reading, CallFailure>,
    /// The source's own daily history, when it keeps one (Graph keeps 90 days of `secure`;
    /// the history back-fills from it).
    pub daily: Option<Daily>,
    /// The Secure Score controls its answers carry, and where their profiles are.
    pub controls: Option<Controls>,
}

/// Where a source's answers carry controls: how they are read from the same bytes as the
/// score, and where the controls' profiles are asked for.
pub struct Controls {
    /// The path of the first page of profiles under the service's base URL.
    pub profiles_path: &'static str,
    /// Reads each snapshot's controls from an answer's body, newest first.
    pub snapshots: fn(&[u8]) -> Vec<SnapshotControls>,
    /// Reads one page of profiles.
    pub profiles: fn(&[u8]) -> Result<ControlProfilesPage, CallFailure>,
}

/// How a source's daily history is asked for and read.
pub struct Daily {
    /// The query parameter that asks for that many days, newest first (`$top`).
    pub days_parameter: &'static str,
    /// The query parameter that skips that many of the newest days (`$skip`).
    pub skip_parameter: &'static str,
    /// Reads the body of a successful answer: the readings, newest first.
    pub read: fn(&[u8]) -> Result<DailyReadings, CallFailure>,
}

/// How one upstream service words its answers: what its sources share beside the path.
struct Dialect {
    /// Whether 206 Partial Content is read like a 200 (Graph: a provider failed and the
    /// answer holds what the others gave; served, with the `Warning` logged).
    partial_content: bool,
    /// Reads the service's error body; `None` when the body is not one.
    error: fn(&[u8]) -> Option<ErrorFacts>,
}

/// What a service's error body says, for the log and the failure's detail.
struct ErrorFacts {
    /// The service's error code (`InvalidAuthenticationToken`).
    code: String,
    /// Its message, at most 200 characters.
    message: String,
    /// The id Microsoft support asks for (Defender's `target`, Graph's `request-id`).
    correlation_id: Option<String>,
    /// When the service says it answered (Graph's `innerError.date`).
    date: Option<String>,
}

/// The dialect of `service`.
fn dialect(service: UpstreamService) -> &'static Dialect {
    // The one `match` on the service left: `UpstreamService` is vocabulary (`model`), below this
    // module, so the mapping to what is written here lives here. A metric of an existing
    // service adds no arm; a new service adds one (and the compiler asks for it).
    match service {
        UpstreamService::Defender => &defender::DIALECT,
        UpstreamService::Graph => &graph::DIALECT,
    }
}

/// A [`Source`] called over the shared client: the [`ScoreSource`] the policy stack calls.
pub struct HttpSource {
    /// What to ask and how to read it.
    source: &'static Source,
    /// The shared HTTPS client and the answer size limit.
    transport: Transport,
    /// Told of the controls the answers carry, when the source's do.
    sink: Option<Arc<dyn ControlsSink>>,
}

#[async_trait::async_trait]
impl ScoreSource for HttpSource {
    fn metric(&self) -> Metric {
        self.source.metric
    }

    fn service(&self) -> UpstreamService {
        self.source.metric.service()
    }

    async fn call(&self, tenant: &Tenant, token: &BearerToken) -> Result<Reading, CallFailure> {
        let query = self.source.query.iter().map(|&(name, value)| (name, value));
        let url = self.url(tenant, self.source.path, query)?;
        let controls = self.source.controls.as_ref().zip(self.sink.as_ref());
        self.get(tenant, token, url, |body| {
            let reading = (self.source.read)(body)?;
            // The same bytes: the newest snapshot is the one the reading was read from.
            if let Some((controls, sink)) = controls {
                if let Some(newest) = (controls.snapshots)(body).into_iter().next() {
                    sink.on_snapshot(tenant, &reading, newest);
                }
            }
            Ok(reading)
        })
        .await
    }

    async fn daily(
        &self,
        tenant: &Tenant,
        token: &BearerToken,
        page: DailyPage,
    ) -> Result<DailyReadings, CallFailure> {
        let Some(daily) = &self.source.daily else {
            return Err(CallFailure::Unusable {
                detail: format!("the {} source keeps no daily history", self.metric()),
            });
        };
        let (days, skip) = (page.days.to_string(), page.skip.to_string());
        let mut query = vec![(daily.days_parameter, days.as_str())];
        if page.skip > 0 {
            query.push((daily.skip_parameter, skip.as_str()));
        }
        let url = self.url(tenant, self.source.path, query)?;
        let controls = self.source.controls.as_ref().zip(self.sink.as_ref());
        self.get(tenant, token, url, |body| {
            let readings = (daily.read)(body)?;
            if let Some((controls, sink)) = controls {
                sink.on_daily(tenant, (controls.snapshots)(body));
            }
            Ok(readings)
        })
        .await
    }

    async fn control_profiles(
        &self,
        tenant: &Tenant,
        token: &BearerToken,
        next: Option<&str>,
    ) -> Result<ControlProfilesPage, CallFailure> {
        let Some(controls) = &self.source.controls else {
            return Err(CallFailure::Unusable {
                detail: format!("the {} source has no control profiles", self.metric()),
            });
        };
        let url = match next {
            None => self.url(tenant, controls.profiles_path, [])?,
            Some(link) => self.next_link(tenant, link)?,
        };
        self.get(tenant, token, url, controls.profiles).await
    }
}

impl HttpSource {
    /// The tenant's base URL for the source's service.
    fn base<'t>(&self, tenant: &'t Tenant) -> Result<&'t Url, CallFailure> {
        let service = self.service();
        // Configuration gives every metric of a tenant its service's endpoint; this only
        // guards the type.
        tenant
            .endpoint(service)
            .map(|endpoint| endpoint.base.as_ref())
            .ok_or_else(|| CallFailure::Unusable {
                detail: format!(
                    "no {} base URL is configured for this tenant",
                    service.display_name()
                ),
            })
    }

    /// A page's `@odata.nextLink`, followed as it is when it names the scheme, host and port
    /// of the tenant's base URL: a link elsewhere would carry the tenant's bearer token there.
    fn next_link(&self, tenant: &Tenant, link: &str) -> Result<Url, CallFailure> {
        let base = self.base(tenant)?;
        let name = self.service().display_name();
        let url = Url::parse(link.trim()).map_err(|_| CallFailure::Unusable {
            detail: format!("{name} answered an @odata.nextLink that is not a URL"),
        })?;
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        if !same_origin {
            return Err(CallFailure::Unusable {
                detail: format!("{name} answered an @odata.nextLink to another host: not followed"),
            });
        }
        Ok(url)
    }

    /// `path` under the tenant's base URL for the source's service, with `query`.
    fn url<'a>(
        &self,
        tenant: &Tenant,
        path: &str,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Url, CallFailure> {
        let service = self.service();
        let mut url = self
            .base(tenant)?
            .join(path)
            .map_err(|error| CallFailure::Unusable {
                detail: format!("bad {} base URL: {error}", service.display_name()),
            })?;
        let mut query = query.into_iter().peekable();
        if query.peek().is_some() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// GETs `url` and reads the answer: a successful one with `read`, a refusal in the
    /// service's dialect (logged with its correlation facts, for a support case).
    async fn get<T>(
        &self,
        tenant: &Tenant,
        token: &BearerToken,
        url: Url,
        read: impl FnOnce(&[u8]) -> Result<T, CallFailure>,
    ) -> Result<T, CallFailure> {
        let service = self.service();
        let metric = self.metric().as_str();
        let name = service.display_name();
        let dialect = dialect(service);
        let (status, retry_after, warning, body) =
            exchange(&self.transport, url, token, service).await?;
        let partial = status == StatusCode::PARTIAL_CONTENT && dialect.partial_content;
        if status == StatusCode::OK || partial {
            let answer = read(&body);
            match &answer {
                Ok(_) if partial => tracing::warn!(
                    tenant = %tenant.id,
                    metric,
                    warning = warning.as_deref().unwrap_or("-"),
                    "{name} answered 206 Partial Content: serving what it holds"
                ),
                Err(CallFailure::Unusable { detail }) => {
                    tracing::warn!(tenant = %tenant.id, metric, status = status.as_u16(), "{detail}");
                }
                _ => {}
            }
            return answer;
        }
        let error = (dialect.error)(&body);
        let code = error.as_ref().map_or("", |e| e.code.as_str());
        let message = error.as_ref().map_or("", |e| e.message.as_str());
        tracing::warn!(
            tenant = %tenant.id,
            metric,
            status = status.as_u16(),
            code,
            correlation_id = error.as_ref().and_then(|e| e.correlation_id.as_deref()).unwrap_or("-"),
            date = error.as_ref().and_then(|e| e.date.as_deref()).unwrap_or("-"),
            "{name} refused the call: {message}"
        );
        if status == StatusCode::BAD_REQUEST {
            tracing::error!(tenant = %tenant.id, metric, "{name} rejected our request as malformed: this is a scoregate bug");
        }
        let detail = if code.is_empty() {
            format!("{name} answered {status}")
        } else {
            format!("{name} answered {} {code}: {message}", status.as_u16())
        };
        Err(CallFailure::Status {
            status: status.as_u16(),
            retry_after,
            detail,
        })
    }
}

/// Sends one GET with the token and returns status, bounded `Retry-After`, `Warning` and body
/// (at most `transport.max_body_bytes`: a larger answer is an `Unusable` failure).
async fn exchange(
    transport: &Transport,
    url: Url,
    token: &BearerToken,
    service: UpstreamService,
) -> Result<(StatusCode, Option<Duration>, Option<String>, Vec<u8>), CallFailure> {
    let http = &transport.http;
    let limit = transport.max_body_bytes;
    let exchange = async {
        let response = http
            .get(url)
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value: &reqwest::header::HeaderValue| value.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|value| super::parse_retry_after(&value, SystemTime::now()));
        let warning = header(reqwest::header::WARNING).map(|value| clipped(&value));
        let body = read_at_most(response, limit).await?;
        Ok::<_, reqwest::Error>((status, retry_after, warning, body))
    };
    let (status, retry_after, warning, body) =
        exchange.await.map_err(|error| CallFailure::Transport {
            detail: format!(
                "cannot reach {}: {}",
                service.display_name(),
                crate::telemetry::error_chain(&error.without_url())
            ),
        })?;
    let body = body.ok_or_else(|| CallFailure::Unusable {
        detail: format!(
            "{} answered more than {limit} bytes ([upstream] max_body_bytes): the answer was dropped",
            service.display_name()
        ),
    })?;
    Ok((status, retry_after, warning, body))
}

/// The body of `response`, or `None` as soon as it is longer than `limit` bytes (announced by
/// `Content-Length` or counted as it arrives).
async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |announced| announced > limit) {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response.chunk().await? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// At most the first 200 characters of an upstream's free text, so a verbose (or hostile)
/// answer cannot flood logs and problem details.
fn clipped(text: &str) -> String {
    text.chars().take(200).collect()
}
