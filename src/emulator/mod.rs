//! The emulator: a local, faithful stand-in for Entra ID's token endpoint, Defender for
//! Endpoint's `GET /api/configurationScore` and `GET /api/exposureScore`, and Microsoft Graph's
//! `GET /v1.0/security/secureScores` and `GET /v1.0/security/secureScoreControlProfiles`, over
//! HTTPS, with seeded tenants, fault profiles, each service's quotas and counters of everything
//! it received. It also plays the MSP's own tenant, whose caller apps get Entra ID tokens for
//! scoregate itself. `scoregate emulate` runs it; the
//! tests, `demo` and the benchmarks run it in-process through [`Emulator`].
//!
//! It shares nothing with the gateway except [`crate::wire`].
//!
//! # Layout
//!
//! - [`options`]: [`EmulatorOptions`] and its value types (selectors, latency ranges).
//! - `command`: `scoregate emulate` ([`EmulateArgs`], [`run_cli`]).
//! - `tenants`: seeded tenants, app registrations, credentials, lookups.
//! - `faults`: [`FaultProfile`] and the deterministic flaky outcome.
//! - `clock`: real time plus an offset tests move forward.
//! - `tls`: rcgen CA and server certificate; RSA app certificates.
//! - `token`, `assertion`: the token endpoint and certificate client assertions.
//! - `callers`, `signing`: the MSP's own tenant: caller apps and their RS256 tokens for
//!   scoregate, the OpenID configuration, the key set and its rotation.
//! - `service`: the closed sets of upstream services (token audiences) and score endpoints.
//! - `score`: Defender's score endpoints (device and exposure).
//! - `graph`: Graph's secure scores, its error body, its daily snapshots, the control catalogue
//!   (`catalogue.tsv`) and the control profiles.
//! - `quota`: sliding windows and concurrency caps per (application, tenant).
//! - `stats`: [`Counters`] and [`StatsSnapshot`].
//! - `responses`, `body`: upstream-shaped errors; size-limited bodies.
//! - `server`: routes, shared state and the `/_emulator/` operator endpoints.
//! - `config_writer`: the gateway configuration matching the emulator.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), scoregate::emulator::EmulatorError> {
//! use scoregate::emulator::{Emulator, EmulatorOptions};
//! let emu = Emulator::start(EmulatorOptions { tenants: 5, seed: 7, ..EmulatorOptions::default() }).await?;
//! println!("{} serves {} tenants", emu.base_url(), emu.tenants().len());
//! emu.stop().await;
//! # Ok(()) }
//! ```

mod assertion;
mod body;
mod callers;
mod clock;
mod command;
mod config_writer;
mod faults;
mod graph;
pub mod options;
mod quota;
mod responses;
mod score;
mod server;
mod service;
mod signing;
mod stats;
mod tenants;
mod tls;
mod token;

pub use callers::{CallerSpec, MSP_TENANT, SCOREGATE_AUDIENCE, SCOREGATE_SCOPE};
pub use command::{run_cli, EmulateArgs};
pub use config_writer::{CA_FILE_NAME, MSP_SECRET_FILE_NAME, SECRETS_DIR_NAME};
pub use faults::FaultProfile;
pub use options::{
    CredentialAssignment, CredentialKind, EmulatorOptions, FaultAssignment, LatencyRange, Selector,
};
pub use stats::{Counters, StatsSnapshot};
pub use tenants::{CertificateCredential, EmulatedTenant, TenantCredential};

use server::{Settings, Shared};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// File name `write_config` gives the configuration inside the directory it is given.
pub const CONFIG_FILE_NAME: &str = "scoregate.toml";

/// Why the emulator could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// An option is out of range.
    #[error("invalid --{option}: {reason}")]
    InvalidOption {
        /// The option (flag name).
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An option or call names a tenant that does not exist.
    #[error(
        "--{option} names an unknown tenant '{name}' (use a slug such as contoso, or a tenant id)"
    )]
    UnknownTenant {
        /// The option (flag name) or call.
        option: &'static str,
        /// The name given.
        name: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// actix refused the listener.
    #[error("cannot serve on {}", addr.map_or_else(|| "the listener".to_owned(), |addr| addr.to_string()))]
    Serve {
        /// The address, if known.
        addr: Option<SocketAddr>,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate {what}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The TLS configuration was refused.
    #[error("cannot configure TLS")]
    Tls(#[source] rustls::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An invariant broke (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A running emulator. Dropping it stops the server too; [`Emulator::stop`] also waits for it.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url)
            .field("tenants", &self.shared.directory.tenants.len())
            .finish_non_exhaustive()
    }
}

/// Selects aws-lc-rs as the process-wide provider for rustls and jsonwebtoken, when nobody has
/// chosen yet (several providers may be compiled in; an earlier choice is kept).
fn install_crypto_providers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl Emulator {
    /// Generates the tenants and TLS material, binds, and starts serving (on actix workers of
    /// their own; this returns once the socket is listening). Must be called inside a tokio
    /// runtime.
    pub async fn start(options: EmulatorOptions) -> Result<Self, EmulatorError> {
        options.validate()?;
        install_crypto_providers();
        let directory = tenants::Directory::generate(&options)?;

        let listener = TcpListener::bind(options.bind).map_err(|source| EmulatorError::Bind {
            addr: options.bind,
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: options.bind,
                source,
            })?;
        let host_ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let public_addr = SocketAddr::new(host_ip, addr.port());
        let base_url = format!("https://{public_addr}");
        let extra_names = if host_ip.is_loopback() {
            Vec::new()
        } else {
            vec![host_ip.to_string()]
        };
        let tls = tls::server_tls(&extra_names)?;

        let mut hosts = vec![
            base_url.clone(),
            format!("https://localhost:{}", addr.port()),
        ];
        if host_ip != IpAddr::V4(Ipv4Addr::LOCALHOST) {
            hosts.push(format!("https://127.0.0.1:{}", addr.port()));
        }
        let tenant_count = directory.tenants.len();
        let shared = Arc::new(Shared {
            stats: stats::Stats::new(tenant_count),
            quota: quota::Quota::new(
                tenant_count,
                options.quota_per_minute,
                options.quota_per_hour,
            ),
            graph_quota: quota::Quota::with_windows(
                tenant_count,
                &[
                    (options.graph_quota_per_minute, quota::MINUTE_MS),
                    (options.graph_quota_per_ten_minutes, quota::TEN_MINUTES_MS),
                ],
            ),
            graph_concurrency: quota::Concurrency::new(tenant_count, options.graph_max_concurrent),
            clock: clock::Clock::default(),
            tokens: token::AccessTokens::new()?,
            settings: Settings {
                seed: options.seed,
                latency: options.latency,
                slow_latency: options.slow_latency,
                flaky_error_share: options.flaky_error_share,
                throttled_retry_after_seconds: options.throttled_retry_after_seconds,
                token_lifetime_seconds: options.token_lifetime_seconds,
                score_day_shift: options.score_date.map_or(0, |pinned| {
                    let today = time::OffsetDateTime::now_utc().date();
                    (pinned - today).whole_days()
                }),
            },
            hosts,
            ca_pem: tls.ca_pem,
            msp: callers::MspTenant::generate(options.seed, &options.callers)?,
            directory,
        });

        let server = server::build(listener, tls.config, shared.clone(), options.workers)?;
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%base_url, tenants = tenant_count, seed = options.seed, "emulator started");
        Ok(Self {
            shared,
            addr: public_addr,
            base_url,
            handle,
            task: Some(task),
        })
    }

    /// The address it listens on (the real port when started with port 0; loopback when bound
    /// to an unspecified address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: the authority host and the API base.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The token endpoint of a tenant (`{base}/{tenant_id}/oauth2/v2.0/token`).
    pub fn token_url(&self, tenant_id: Uuid) -> String {
        format!("{}/{tenant_id}/oauth2/v2.0/token", self.base_url)
    }

    /// The score endpoint (`{base}/api/configurationScore`).
    pub fn score_url(&self) -> String {
        format!("{}{}", self.base_url, crate::wire::CONFIGURATION_SCORE_PATH)
    }

    /// The exposure score endpoint (`{base}/api/exposureScore`).
    pub fn exposure_url(&self) -> String {
        format!("{}{}", self.base_url, crate::wire::EXPOSURE_SCORE_PATH)
    }

    /// The Graph base (what the gateway's `graph_base` should be): the same HTTPS origin as
    /// the Defender base, since Graph's paths (`/v1.0/…`) never collide with Defender's
    /// (`/api/…`). Tokens for it are asked with the commercial Graph scope
    /// ([`crate::wire::GRAPH_SCOPE`]), as the emulated Entra knows no other Graph resource.
    pub fn graph_base(&self) -> String {
        self.base_url.clone()
    }

    /// Graph's secure scores endpoint (`{graph_base}/v1.0/security/secureScores`).
    pub fn secure_scores_url(&self) -> String {
        format!("{}{}", self.graph_base(), crate::wire::SECURE_SCORES_PATH)
    }

    /// Graph's control profiles endpoint
    /// (`{graph_base}/v1.0/security/secureScoreControlProfiles`).
    pub fn control_profiles_url(&self) -> String {
        format!(
            "{}{}",
            self.graph_base(),
            crate::wire::SECURE_SCORE_CONTROL_PROFILES_PATH
        )
    }

    /// The CA certificate (PEM) clients must trust; new at every start.
    pub fn ca_cert_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// Every tenant with its credential (certificates are generated on first call).
    ///
    /// # Panics
    ///
    /// If an RSA key cannot be generated (the system's random source failed); use
    /// [`Emulator::try_tenants`] to get that as an error.
    pub fn tenants(&self) -> Vec<EmulatedTenant> {
        match self.try_tenants() {
            Ok(tenants) => tenants,
            Err(error) => panic!("emulator tenants unavailable: {error}"),
        }
    }

    /// Every tenant with its credential, or why a certificate could not be generated.
    pub fn try_tenants(&self) -> Result<Vec<EmulatedTenant>, EmulatorError> {
        self.shared
            .directory
            .tenants
            .iter()
            .map(|tenant| tenant.to_public())
            .collect()
    }

    /// One tenant by slug or tenant id (its certificate generated if needed).
    pub fn tenant(&self, slug_or_tenant_id: &str) -> Option<EmulatedTenant> {
        self.shared
            .directory
            .find(slug_or_tenant_id)
            .and_then(|tenant| tenant.to_public().ok())
    }

    /// The MSP's multi-tenant app client id (used by `shared` tenants).
    pub fn msp_client_id(&self) -> Uuid {
        self.shared.directory.msp_app.client_id
    }

    /// Counters in total and per tenant.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot(&self.shared.directory)
    }

    /// Zeroes the counters (the in-flight gauge stays; quotas are not reset).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// The tenant an operator change names, or the error naming the `option` that named it.
    fn find(
        &self,
        slug_or_tenant_id: &str,
        option: &'static str,
    ) -> Result<&tenants::TenantRecord, EmulatorError> {
        self.shared
            .directory
            .find(slug_or_tenant_id)
            .ok_or_else(|| EmulatorError::UnknownTenant {
                option,
                name: slug_or_tenant_id.to_owned(),
            })
    }

    /// Changes a tenant's fault profile (`None`: healthy) while serving.
    pub fn set_fault(
        &self,
        slug_or_tenant_id: &str,
        fault: Option<FaultProfile>,
    ) -> Result<(), EmulatorError> {
        let tenant = self.find(slug_or_tenant_id, "fault")?;
        tenant.set_fault(fault);
        Ok(())
    }

    /// Serves `score` as a tenant's device score (`/api/configurationScore`) from now on, in
    /// place of the drifting one; `None` goes back to the drifting score. A score must be
    /// finite and between 0 and 10,000.
    pub fn set_score(
        &self,
        slug_or_tenant_id: &str,
        score: Option<f64>,
    ) -> Result<(), EmulatorError> {
        let tenant = self.find(slug_or_tenant_id, "score")?;
        if let Some(score) = score {
            if !server::valid_score(score) {
                return Err(EmulatorError::InvalidOption {
                    option: "score",
                    reason: format!("{score} is not a score between 0 and 10000"),
                });
            }
        }
        tenant.set_score_override(score);
        Ok(())
    }

    /// Moves the emulator clock forward: token expiry, quota windows, score drift, `time` and
    /// the days of Graph's snapshots follow it. Real latency and hangs do not.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// The emulator clock's "now".
    pub fn now(&self) -> OffsetDateTime {
        self.shared.clock.now()
    }

    /// Writes the gateway configuration as `dir/scoregate.toml`, with `dir/emulator-ca.pem` and
    /// `dir/secrets/`; returns the configuration's path.
    pub fn write_config(&self, dir: &Path) -> Result<PathBuf, EmulatorError> {
        self.write_config_file(&dir.join(CONFIG_FILE_NAME))
    }

    /// Writes the gateway configuration to `path`, the CA and secrets beside it.
    pub fn write_config_file(&self, path: &Path) -> Result<PathBuf, EmulatorError> {
        self.write_config_with_metrics(path, &[])
    }

    /// Writes the gateway configuration to `path` with `[upstream] metrics = metrics` (none
    /// written when empty: the gateway's default, `device`, applies).
    pub fn write_config_with_metrics(
        &self,
        path: &Path,
        metrics: &[String],
    ) -> Result<PathBuf, EmulatorError> {
        let tenants = self.try_tenants()?;
        config_writer::write(
            path,
            &config_writer::ConfigContents {
                base_url: &self.base_url,
                ca_pem: &self.shared.ca_pem,
                tenants: &tenants,
                seed: self.shared.settings.seed,
                metrics,
                msp_tenant_id: self.shared.msp.tenant_id,
            },
        )
    }

    /// Stops serving now: in-flight (and hanging) calls are dropped, not awaited.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // The stop command is sent eagerly; aborting drops the server, which stops its
            // workers even if the runtime is going away.
            drop(self.handle.stop(false));
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_library_types_can_be_shared_across_tasks() {
        assert_send_sync::<Emulator>();
        assert_send_sync::<EmulatedTenant>();
        assert_send_sync::<StatsSnapshot>();
        assert_send_sync::<EmulatorError>();
    }
}
