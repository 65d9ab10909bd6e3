//! `scoregate emulate`: flags to [`EmulatorOptions`], start, print where it listens and what
//! it serves (never a secret), write the CA and the gateway configuration, run until Ctrl-C.

use super::options::{
    CredentialAssignment, EmulatorOptions, FaultAssignment, LatencyRange,
    DEFAULT_FLAKY_ERROR_SHARE, DEFAULT_GRAPH_MAX_CONCURRENT, DEFAULT_GRAPH_QUOTA_PER_MINUTE,
    DEFAULT_GRAPH_QUOTA_PER_TEN_MINUTES, DEFAULT_QUOTA_PER_HOUR, DEFAULT_QUOTA_PER_MINUTE,
    DEFAULT_SEED, DEFAULT_SLOW_LATENCY, DEFAULT_TENANTS, DEFAULT_THROTTLED_RETRY_AFTER_SECONDS,
    DEFAULT_TOKEN_LIFETIME_SECONDS,
};
use super::tenants::TenantRecord;
use super::Emulator;
use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `scoregate emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Address to listen on (HTTPS); port 0 picks a free port and prints it.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub bind: SocketAddr,
    /// Number of tenants (named after Microsoft's sample companies: contoso, fabrikam, …).
    #[arg(long, default_value_t = DEFAULT_TENANTS)]
    pub tenants: usize,
    /// Seed of tenant ids, client ids, secrets, scores and fault selection.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Fault profile for a share of tenants or named ones, repeatable: `slow=0.1`,
    /// `revoked=contoso,fabrikam`. Profiles: slow, flaky, throttled, revoked, expired-secret,
    /// forbidden, unlicensed, malformed, hang, retired (Defender answers 410), graph-forbidden,
    /// comparisons-outage (Graph's `averageComparativeScores` are `-1` or `[]`), not-consented
    /// (the token endpoint answers AADSTS700016: the app is not consented in the tenant).
    #[arg(long = "fault", value_name = "PROFILE=SELECTOR")]
    pub faults: Vec<FaultAssignment>,
    /// Credential kind for a share of tenants or named ones, repeatable: `certificate=0.2`,
    /// `shared=contoso`. Kinds: secret (default), certificate, shared (one multi-tenant MSP app).
    #[arg(long = "credential", value_name = "KIND=SELECTOR")]
    pub credentials: Vec<CredentialAssignment>,
    /// Latency added to every score call, milliseconds (`50..150` or `100`).
    #[arg(long, value_name = "MIN..MAX")]
    pub latency_ms: Option<LatencyRange>,
    /// Latency of the `slow` profile, milliseconds.
    #[arg(long, value_name = "MIN..MAX", default_value_t = DEFAULT_SLOW_LATENCY)]
    pub slow_latency_ms: LatencyRange,
    /// Share of a `flaky` tenant's calls that fail (500 or 503).
    #[arg(long, default_value_t = DEFAULT_FLAKY_ERROR_SHARE)]
    pub flaky_error_share: f64,
    /// `Retry-After` of the `throttled` profile, seconds.
    #[arg(long, default_value_t = DEFAULT_THROTTLED_RETRY_AFTER_SECONDS)]
    pub throttled_retry_after_seconds: u64,
    /// Score calls per application and tenant per sliding minute (0: unlimited).
    #[arg(long, default_value_t = DEFAULT_QUOTA_PER_MINUTE)]
    pub quota_per_minute: u32,
    /// Score calls per application and tenant per sliding hour (0: unlimited).
    #[arg(long, default_value_t = DEFAULT_QUOTA_PER_HOUR)]
    pub quota_per_hour: u32,
    /// Graph calls per application and tenant per sliding minute (0: unlimited).
    #[arg(long, default_value_t = DEFAULT_GRAPH_QUOTA_PER_MINUTE)]
    pub graph_quota_per_minute: u32,
    /// Graph calls per application and tenant per sliding ten minutes (0: unlimited).
    #[arg(long, default_value_t = DEFAULT_GRAPH_QUOTA_PER_TEN_MINUTES)]
    pub graph_quota_per_ten_minutes: u32,
    /// Graph calls in flight at once per application and tenant (0: unlimited).
    #[arg(long, default_value_t = DEFAULT_GRAPH_MAX_CONCURRENT)]
    pub graph_max_concurrent: u32,
    /// Lifetime of issued access tokens, seconds.
    #[arg(long, default_value_t = DEFAULT_TOKEN_LIFETIME_SECONDS)]
    pub token_lifetime_seconds: u64,
    /// Write the CA certificate (PEM) clients must trust to this file (default: a file in the
    /// system's temporary directory).
    #[arg(long, value_name = "PATH")]
    pub cert_out: Option<PathBuf>,
    /// Write a gateway configuration for these tenants to this file, with `emulator-ca.pem` and
    /// `secrets/` beside it.
    #[arg(long, value_name = "PATH")]
    pub write_config: Option<PathBuf>,
    /// Worker threads serving HTTPS.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Metrics the written configuration enables for every tenant (`[upstream] metrics`), comma
    /// separated: device, exposure, secure. Default: none written (the gateway's `device`).
    #[arg(long, value_delimiter = ',', value_parser = ["device", "exposure", "secure"])]
    pub metrics: Vec<String>,
    /// Generate the score values as from this day (`YYYY-MM-DD`) instead of today, so that
    /// the same seed gives the same scores on any day; timestamps stay real.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub score_date: Option<time::Date>,
    /// A caller app of the MSP tenant, repeatable: `NAME=ROLE[+ROLE…]` (`NAME=` for none).
    /// Besides the default ones: portal (Scores.Read.All), ops (Scores.Read.All+Operator),
    /// norole, tagged (Scores.Read.Gold). `GET /_emulator/callers` lists them with secrets.
    #[arg(long = "caller", value_name = "NAME=ROLE[+ROLE…]")]
    pub callers: Vec<super::CallerSpec>,
}

/// `YYYY-MM-DD` for `--score-date`.
fn parse_date(text: &str) -> Result<time::Date, String> {
    let format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
        .map_err(|error| error.to_string())?;
    time::Date::parse(text, &format).map_err(|error| format!("expected YYYY-MM-DD: {error}"))
}

impl EmulateArgs {
    /// The library options these flags describe.
    pub fn options(&self) -> EmulatorOptions {
        let limit = |value: u32| (value > 0).then_some(value);
        EmulatorOptions {
            bind: self.bind,
            tenants: self.tenants,
            seed: self.seed,
            faults: self.faults.clone(),
            credentials: self.credentials.clone(),
            latency: self.latency_ms,
            slow_latency: self.slow_latency_ms,
            flaky_error_share: self.flaky_error_share,
            throttled_retry_after_seconds: self.throttled_retry_after_seconds,
            quota_per_minute: limit(self.quota_per_minute),
            quota_per_hour: limit(self.quota_per_hour),
            graph_quota_per_minute: limit(self.graph_quota_per_minute),
            graph_quota_per_ten_minutes: limit(self.graph_quota_per_ten_minutes),
            graph_max_concurrent: limit(self.graph_max_concurrent),
            token_lifetime_seconds: self.token_lifetime_seconds,
            workers: self.workers,
            score_date: self.score_date,
            callers: self.callers.clone(),
        }
    }
}

/// Runs `scoregate emulate` until Ctrl-C.
pub async fn run_cli(args: EmulateArgs) -> anyhow::Result<()> {
    let options = args.options();
    let emulator = Emulator::start(options.clone())
        .await
        .context("cannot start the emulator")?;

    let ca_path = args.cert_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "scoregate-emulator-{}-ca.pem",
            emulator.addr().port()
        ))
    });
    std::fs::write(&ca_path, emulator.ca_cert_pem())
        .with_context(|| format!("cannot write {}", ca_path.display()))?;
    let config_path = match &args.write_config {
        Some(path) => Some(
            emulator
                .write_config_with_metrics(path, &args.metrics)
                .context("cannot write the gateway configuration")?,
        ),
        None => None,
    };

    println!("scoregate emulator listening on {}", emulator.base_url());
    println!(
        "  token endpoint  {}/{{tenant_id}}/oauth2/v2.0/token",
        emulator.base_url()
    );
    println!("  score endpoint  {}", emulator.score_url());
    println!("  exposure score  {}", emulator.exposure_url());
    println!("  secure scores   {}", emulator.secure_scores_url());
    println!("  counters        {}/_emulator/stats", emulator.base_url());
    println!(
        "  caller apps     {}/_emulator/callers (tokens from /{}/oauth2/v2.0/token, scope {})",
        emulator.base_url(),
        super::MSP_TENANT,
        super::SCOREGATE_SCOPE
    );
    println!("CA certificate    {}", ca_path.display());
    if let Some(path) = &config_path {
        println!(
            "gateway config    {} (secrets in its secrets/ directory)",
            path.display()
        );
    }
    print!("{}", summary(&emulator.shared.directory.tenants, &options));
    println!("Press Ctrl-C to stop.");

    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopping");
    emulator.stop().await;
    Ok(())
}

/// Counts by fault and credential kind, then one line per tenant (the first 50).
fn summary(tenants: &[TenantRecord], options: &EmulatorOptions) -> String {
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for tenant in tenants {
        *faults
            .entry(tenant.fault().map_or("healthy", |fault| fault.as_str()))
            .or_default() += 1;
        *kinds.entry(tenant.kind.as_str()).or_default() += 1;
    }
    let join = |counts: &BTreeMap<&str, usize>| {
        counts
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<String>>()
            .join(", ")
    };
    let quota =
        |limit: Option<u32>| limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    let mut text = format!(
        "tenants           {} (seed {}): {}\ncredentials       {}\nquota             Defender {}/minute, {}/hour per app and tenant; Graph {}/minute, {}/10 minutes, {} concurrent; tokens live {} s\n",
        tenants.len(),
        options.seed,
        join(&faults),
        join(&kinds),
        quota(options.quota_per_minute),
        quota(options.quota_per_hour),
        quota(options.graph_quota_per_minute),
        quota(options.graph_quota_per_ten_minutes),
        quota(options.graph_max_concurrent),
        options.token_lifetime_seconds,
    );
    const SHOWN: usize = 50;
    text.push_str(&format!(
        "  {:<24} {:<36} {:<36} {:<11} {}\n",
        "slug", "tenant id", "client id", "credential", "fault"
    ));
    for tenant in tenants.iter().take(SHOWN) {
        text.push_str(&format!(
            "  {:<24} {:<36} {:<36} {:<11} {}\n",
            tenant.slug,
            tenant.tenant_id,
            tenant.client_id,
            tenant.kind.as_str(),
            tenant.fault().map_or("-", |fault| fault.as_str()),
        ));
    }
    if tenants.len() > SHOWN {
        text.push_str(&format!(
            "  … and {} more (GET /_emulator/tenants lists them all)\n",
            tenants.len() - SHOWN
        ));
    }
    text
}
