//! `scoregate demo`: the emulator and the gateway in one process, with a few dozen tenants of
//! mixed health, so that a newcomer sees the whole product with one command and no tenant.
//!
//! It runs exactly what `serve` runs, on the configuration `emulate --write-config` writes, with
//! authentication off — which is why it only binds loopback addresses.
//!
//! It also shows alerts: one example rule ([`DEMO_RULE`]: the device score below 300, which a
//! few of the default tenants always are) and a local receiver ([`LoggingReceiver`]) that
//! verifies each webhook's signature and logs it, so that an event shows in the demo's output
//! within seconds of starting. The refresher's first round is spread over a few seconds (not
//! the refresh period) so that every tenant is fetched, and the rule evaluated, right away.

use crate::alerts::{LoggingReceiver, WebhookSecret};
use crate::app::Application;
use crate::config::Config;
use crate::emulator::{
    Emulator, EmulatorOptions, FaultAssignment, FaultProfile, LatencyRange, Selector,
};
use crate::model::Metric;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `scoregate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the gateway (loopback only: the demo runs without authentication).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Number of emulated tenants (at least 25).
    #[arg(long, default_value_t = 30)]
    pub tenants: usize,
    /// Seed of the emulated tenants' ids, secrets and scores.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the score history in this SQLite file (created if missing), so that it survives the
    /// demo. Default: a file in the demo's temporary directory, removed when the demo stops, so
    /// that the demo writes nothing into the working directory of a fresh clone.
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
}

/// The example rule's name.
pub const DEMO_RULE: &str = "device-below-300";

/// Over how many seconds the demo's first round of refreshes is spread (the refresh period
/// otherwise): the example rule needs readings to fire.
const STARTUP_SPREAD_SECONDS: u64 = 5;

/// The demo's example alert and its webhook to the local receiver at `url`, appended to the
/// written configuration. The secret is read from `secret_file` (beside the configuration), not
/// the environment, so that a reload (SIGHUP) finds it too.
fn demo_alerts_toml(url: &str, secret_file: &str) -> String {
    format!(
        "\n# The demo's example alert: signed webhooks to a local receiver that logs them.\n\
         [[alerts]]\nname = \"{DEMO_RULE}\"\nmetric = \"device\"\nbelow = 300\n\n\
         [[webhooks]]\nname = \"demo-receiver\"\nurl = \"{url}\"\n\
         secret = {{ file = \"{secret_file}\" }}\n"
    )
}

/// Writes `text` to `path`, readable by the owner only (it is a secret).
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

/// The demo's unhealthy tenants: most are healthy, these show what failures look like.
fn demo_faults() -> Vec<FaultAssignment> {
    let named = |profile, names: &[&str]| FaultAssignment {
        profile,
        selector: Selector::Tenants(names.iter().map(|name| name.to_string()).collect()),
    };
    vec![
        named(FaultProfile::Slow, &["tailspin", "wingtip"]),
        named(FaultProfile::Flaky, &["litware"]),
        named(FaultProfile::Revoked, &["fabrikam"]),
        named(FaultProfile::Unlicensed, &["northwind"]),
        named(FaultProfile::Throttled, &["adatum"]),
        // Defender's API after 2027-02-01: device and exposure are gone, secure works.
        named(FaultProfile::Retired, &["coho-winery"]),
    ]
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.bind.ip().is_loopback() {
        anyhow::bail!(
            "--bind {}: the demo runs without authentication, so it only listens on loopback addresses (127.0.0.1, ::1)",
            args.bind
        );
    }
    let emulator = Emulator::start(EmulatorOptions {
        tenants: args.tenants.max(25),
        seed: args.seed,
        faults: demo_faults(),
        latency: Some(LatencyRange {
            min_ms: 20,
            max_ms: 120,
        }),
        slow_latency: LatencyRange {
            min_ms: 1_500,
            max_ms: 3_000,
        },
        flaky_error_share: 0.3,
        ..EmulatorOptions::default()
    })
    .await?;
    let dir = DemoDir::create()?;
    // Every metric, so that the demo shows the scores that survive the Defender API.
    let metrics: Vec<String> = Metric::ALL
        .into_iter()
        .map(|metric| metric.as_str().to_owned())
        .collect();
    let config_path = emulator
        .write_config_with_metrics(&dir.0.join(crate::emulator::CONFIG_FILE_NAME), &metrics)?;
    // The example alert's receiver: on loopback, checking signatures with the secret the
    // gateway signs with, logging each event (the demo's output).
    let (secret_text, secret) = WebhookSecret::generate();
    let receiver = LoggingReceiver::start(secret)
        .map_err(|error| anyhow::anyhow!("cannot start the demo's webhook receiver: {error}"))?;
    let secret_file = "webhook-secret.txt";
    write_secret(
        &dir.0.join(secret_file),
        secrecy::ExposeSecret::expose_secret(&secret_text),
    )?;
    let mut text = std::fs::read_to_string(&config_path)?;
    text.push_str(&demo_alerts_toml(&receiver.url(), secret_file));
    std::fs::write(&config_path, text)?;
    let bind = ("SCOREGATE__SERVER__BIND".to_owned(), args.bind.to_string());
    // Without `--history`, the default `sqlite://scoregate.db` is resolved beside the written
    // configuration: inside the temporary directory.
    let history = match &args.history {
        Some(path) => {
            let path = std::path::absolute(path)
                .map_err(|error| anyhow::anyhow!("--history {}: {error}", path.display()))?;
            vec![(
                "SCOREGATE__HISTORY__URL".to_owned(),
                format!("sqlite://{}", path.display()),
            )]
        }
        None => Vec::new(),
    };
    // First, so that the environment may still override it.
    let spread = (
        "SCOREGATE__REFRESH__STARTUP_SPREAD_SECONDS".to_owned(),
        STARTUP_SPREAD_SECONDS.to_string(),
    );
    let env = std::iter::once(spread)
        .chain(std::env::vars())
        .chain([bind])
        .chain(history);
    let config = Config::load_with_env(&config_path, env)?;
    let application = Application::build(&config)?;
    application.listen_for_signals()?;
    print_banner(
        &application.addr(),
        &emulator,
        config.registry.len(),
        &receiver.url(),
    );
    application.run_until_stopped().await?;
    drop(receiver);
    emulator.stop().await;
    Ok(())
}

fn print_banner(addr: &SocketAddr, emulator: &Emulator, tenants: usize, receiver: &str) {
    let base = format!("http://{addr}");
    println!(
        "\nscoregate demo: {tenants} emulated tenants behind the gateway at {base}\n\
         Authentication is OFF (demo on loopback only). Press Ctrl-C to stop.\n\n\
         Defender/Entra emulator: {}   (operator stats: {}/_emulator/stats)\n\
         API docs (Swagger UI):   {base}/docs/\n\
         OpenAPI document:        {base}/openapi.json\n\n\
         Healthy:     contoso, woodgrove, proseware, ... (most tenants)\n\
         Slow:        tailspin, wingtip      Flaky:      litware\n\
         Revoked:     fabrikam               Unlicensed: northwind\n\
         Throttled:   adatum                Retired:    coho-winery (Defender gone, Graph fine)\n\n\
         Alerts: the example rule \"{DEMO_RULE}\" (device score below 300) fires for a few tenants\n\
         within seconds; its signed webhooks go to a local receiver at {receiver}, which checks\n\
         each signature and logs it below (\"receiver: webhook received\"). List them:\n  \
         curl -s {base}/alerts\n  \
         curl -s {base}/alerts/events\n  \
         curl -s {base}/webhooks/deliveries\n\n\
         Try:\n  \
         curl -s {base}/tenants\n  \
         curl -s {base}/tenants/contoso/score\n  \
         curl -s {base}/tenants/contoso/score?max_age=0\n  \
         curl -s {base}/tenants/fabrikam/score      # 502 upstream_auth (revoked secret)\n  \
         curl -s {base}/tenants/adatum/score        # 503 upstream_throttled with Retry-After\n  \
         curl -s '{base}/tenants/contoso/score?metric=secure'   # Microsoft Secure Score (Graph)\n  \
         curl -s '{base}/scores?metric=exposure&sort=score'    # exposure: lower is better\n  \
         curl -s '{base}/scores?metric=device&tenant=coho-winery'  # 502 upstream_gone item\n  \
         curl -s '{base}/tenants/contoso/history?metric=secure'  # 90 days back-filled from Graph\n  \
         curl -s '{base}/scores?metric=secure&sort=change_7d'    # who dropped this week\n  \
         curl -s {base}/tenants/contoso\n",
        emulator.base_url(),
        emulator.base_url()
    );
}

/// The demo's configuration and secrets, removed when the demo ends.
struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("scoregate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
