//! The command line: one subcommand per job, each a thin call into the library.

use crate::app::Application;
use crate::config::Config;
use crate::model::Metric;
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// scoregate: Microsoft security scores of many tenants (Defender, Graph), behind one API.
#[derive(Debug, Parser)]
#[command(name = "scoregate", version, about, long_about = None)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the emulator and the gateway together, with mixed-health tenants (no tenant needed).
    #[cfg(feature = "emulator")]
    Demo(crate::demo::DemoArgs),
    /// Run the gateway with a configuration file.
    Serve(ServeArgs),
    /// Validate a configuration file and print a summary (never a secret).
    CheckConfig(CheckConfigArgs),
    /// Get a token and make one real score call per tenant and enabled metric; print what is
    /// wrong and what to do. Exit 0 when all are ok, 1 when any fails, 2 for a bad
    /// configuration or selection.
    CheckTenants(CheckTenantsArgs),
    /// Print the admin-consent URL of a tenant's app registration, in the tenant's cloud.
    ConsentUrl(ConsentUrlArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Print a new API key and the `[[api_keys]]` entry (its SHA-256 digest) for the configuration.
    Keygen(KeygenArgs),
    /// Probe a running gateway (exit 0 when it answers 200): the container's health check.
    Healthcheck(HealthcheckArgs),
    /// Run the local stand-in for Entra ID, Defender for Endpoint and Microsoft Graph (HTTPS).
    #[cfg(feature = "emulator")]
    Emulate(Box<crate::emulator::EmulateArgs>),
    /// Run a benchmark and print its figures.
    #[cfg(feature = "emulator")]
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Options of `scoregate serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML); `SCOREGATE__SECTION__KEY` variables override it.
    #[arg(
        long,
        env = "SCOREGATE_CONFIG",
        default_value = "/etc/scoregate/scoregate.toml"
    )]
    pub config: PathBuf,
}

/// Options of `scoregate check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check.
    pub config: PathBuf,
}

/// Options of `scoregate check-tenants`.
#[derive(Debug, clap::Args)]
pub struct CheckTenantsArgs {
    /// The configuration file (TOML); `SCOREGATE__SECTION__KEY` variables override it.
    #[arg(
        long,
        env = "SCOREGATE_CONFIG",
        default_value = "/etc/scoregate/scoregate.toml"
    )]
    pub config: PathBuf,
    /// Only this tenant (its `id` or its `tenant_id`); repeatable. Default: every tenant.
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
    /// Only this metric (device, exposure, secure); repeatable. Default: each tenant's
    /// enabled metrics.
    #[arg(long = "metric", value_name = "METRIC", value_parser = parse_metric)]
    pub metrics: Vec<Metric>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// How `check-tenants` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// For people: one line per tenant and metric, advice below each failure.
    Text,
    /// For scripts: `[{"tenant", "metric", "ok", "code", "detail", "advice", "consent_url"?}]`.
    Json,
}

fn parse_metric(name: &str) -> Result<Metric, String> {
    Metric::parse(name).ok_or_else(|| format!("expected one of {}", Metric::names()))
}

/// Options of `scoregate consent-url`.
#[derive(Debug, clap::Args)]
pub struct ConsentUrlArgs {
    /// The configuration file (TOML); `SCOREGATE__SECTION__KEY` variables override it.
    #[arg(
        long,
        env = "SCOREGATE_CONFIG",
        default_value = "/etc/scoregate/scoregate.toml"
    )]
    pub config: PathBuf,
    /// The tenant (its `id` or its `tenant_id`).
    #[arg(long, value_name = "ID")]
    pub tenant: String,
    /// Where Entra sends the administrator after consenting: one of the app's registered
    /// redirect URIs. Default: none (Entra uses the app's first).
    #[arg(long, value_name = "URL")]
    pub redirect_uri: Option<String>,
}

/// Options of `scoregate keygen`: what the key may see must be said (no default grants all).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).multiple(true).args(["tenants", "tags"])))]
pub struct KeygenArgs {
    /// Name of the key in the configuration (shown in logs, never the key).
    #[arg(long, default_value = "portal")]
    pub name: String,
    /// Tenant ids the key may see, comma separated; `*` for every tenant (say so on purpose).
    #[arg(long, value_delimiter = ',', value_name = "ID,…")]
    pub tenants: Vec<String>,
    /// Tags whose tenants the key may see, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "TAG,…")]
    pub tags: Vec<String>,
    /// The key may read operator data (`/metrics`); needs `--tenants '*'`.
    #[arg(long)]
    pub operator: bool,
}

/// Options of `scoregate healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// URL to probe.
    #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
    pub url: String,
}

/// The benchmarks.
#[cfg(feature = "emulator")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sustained score calls per second the emulator serves over TLS.
    Emulator(crate::bench::emulator::EmulatorBenchArgs),
    /// `/scores` cold and warm, single flight and memory of the gateway against the emulator.
    Gateway(crate::bench::gateway::GatewayBenchArgs),
    /// The controls routes: warm `/tenants/{id}/controls` and `/controls`, profile calls of a
    /// cold `/controls`, memory with 10,000 tenants' controls cached.
    Controls(crate::bench::controls::ControlsBenchArgs),
    /// History on SQLite: ingest rate, 90-day query, `change_7d` look-up, size projection.
    History(crate::bench::history::HistoryBenchArgs),
    /// Upstream calls and warm req/s of one gateway versus three replicas sharing Redis.
    Cluster(crate::bench::cluster::ClusterBenchArgs),
}

/// Runs the parsed command to completion; the exit code of a command that completed.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Serve(args) => done(serve(args).await),
        #[cfg(feature = "emulator")]
        Command::Demo(args) => done(crate::demo::run(args).await),
        Command::CheckConfig(args) => {
            let config = Config::load(&args.config)?;
            print!("{}", config.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckTenants(args) => check_tenants(args).await,
        Command::ConsentUrl(args) => consent_url(args),
        Command::Healthcheck(args) => done(healthcheck(args).await),
        Command::Keygen(args) => {
            print!("{}", keygen(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", crate::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "emulator")]
        Command::Emulate(args) => done(crate::emulator::run_cli(*args).await),
        #[cfg(feature = "emulator")]
        Command::Bench(BenchCommand::Emulator(args)) => {
            done(crate::bench::emulator::run(args).await)
        }
        #[cfg(feature = "emulator")]
        Command::Bench(BenchCommand::Gateway(args)) => done(crate::bench::gateway::run(args).await),
        #[cfg(feature = "emulator")]
        Command::Bench(BenchCommand::Controls(args)) => {
            done(crate::bench::controls::run(args).await)
        }
        #[cfg(feature = "emulator")]
        Command::Bench(BenchCommand::History(args)) => done(crate::bench::history::run(args).await),
        #[cfg(feature = "emulator")]
        Command::Bench(BenchCommand::Cluster(args)) => done(crate::bench::cluster::run(args).await),
    }
}

/// Exit code of a bad configuration or selection (as clap's for bad usage).
const USAGE_ERROR: u8 = 2;

/// Prints `error` as `main` prints errors, for the commands that exit 2 on bad input.
fn usage_error(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(USAGE_ERROR)
}

/// `check-tenants`: 0 when every check is ok, 1 when any fails, 2 for a configuration that does
/// not load or a selection that names nothing to check.
async fn check_tenants(args: CheckTenantsArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(error) => return Ok(usage_error(error)),
    };
    let selection = crate::check::Selection {
        tenants: args.tenants,
        metrics: args.metrics,
    };
    let plan = match crate::check::plan(&config.registry, &selection) {
        Ok(plan) => plan,
        Err(error) => return Ok(usage_error(error)),
    };
    let findings = crate::check::check(&config, plan).await?;
    print!(
        "{}",
        match args.format {
            ReportFormat::Text => crate::check::render_text(&findings),
            ReportFormat::Json => crate::check::render_json(&findings),
        }
    );
    Ok(if findings.iter().all(|finding| finding.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `consent-url`: the URL on standard output, 2 for a bad configuration or an unknown tenant.
fn consent_url(args: ConsentUrlArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(error) => return Ok(usage_error(error)),
    };
    let Some(tenant) = crate::check::find_tenant(&config.registry, &args.tenant) else {
        return Ok(usage_error(crate::check::SelectionError::UnknownTenant(
            args.tenant,
        )));
    };
    println!(
        "{}",
        crate::check::admin_consent_url(tenant, args.redirect_uri.as_deref())
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if !config.auth.enabled {
        tracing::warn!(
            bind = %config.server.bind,
            "authentication is OFF ([auth] enabled = false): every caller sees every tenant; use this only on loopback"
        );
    }
    let application = Application::build(&config)?;
    application.listen_for_signals()?;
    tracing::info!(
        address = %application.addr(),
        tenants = config.registry.len(),
        "scoregate is listening"
    );
    application.run_until_stopped().await?;
    tracing::info!("scoregate stopped");
    Ok(())
}

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?;
    let status = client.get(&args.url).send().await?.status();
    anyhow::ensure!(status.is_success(), "{} answered {status}", args.url);
    Ok(())
}

/// The text `keygen` prints: the key (to give to the caller, once) and the entry to configure,
/// with the scope the flags gave.
fn keygen(args: &KeygenArgs) -> anyhow::Result<String> {
    let listed = |values: &[String]| {
        values
            .iter()
            .map(|value| format!("{value:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    anyhow::ensure!(
        !args.operator || args.tenants.iter().any(|id| id == "*"),
        "--operator keys read /metrics, which names every tenant: add --tenants '*'"
    );
    let (key, digest) = crate::auth::generate_key()
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let mut entry = format!(
        "[[api_keys]]\nname = {:?}\nsha256 = \"{digest}\"\n",
        args.name
    );
    if !args.tenants.is_empty() {
        entry.push_str(&format!("tenants = [{}]\n", listed(&args.tenants)));
    }
    if !args.tags.is_empty() {
        entry.push_str(&format!("tags = [{}]\n", listed(&args.tags)));
    }
    if args.operator {
        entry.push_str("operator = true\n");
    }
    entry.push_str("requests_per_minute = 600\n");
    Ok(format!(
        "# Give this key to the caller; it is not stored anywhere and cannot be shown again:\n\
         {key}\n\n\
         # Add this entry to the configuration (only the digest is stored):\n\
         {entry}"
    ))
}
