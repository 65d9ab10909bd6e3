//! `spawn_app()`: the real gateway on port 0 in front of the real emulator on port 0, over HTTPS,
//! configured exactly as an operator would (the emulator's `--write-config` plus environment
//! overrides), and a capture of every log line the test binary writes.

use scoregate::app::Application;
use scoregate::config::Config;
use scoregate::emulator::{
    CredentialAssignment, CredentialKind, Emulator, EmulatorOptions, FaultAssignment, FaultProfile,
    Selector,
};
use scoregate::service::Services;
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// A running gateway and its emulator.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub address: String,
    /// A plain client for the gateway.
    pub client: reqwest::Client,
    /// The emulator behind it.
    pub emulator: Emulator,
    /// The configuration file the gateway was started from.
    pub config_path: PathBuf,
    /// The directory of `config_path` and the emulator's secret files: held only so that it
    /// is removed when the app is dropped.
    _dir: tempfile::TempDir,
    /// The gateway's shared services.
    pub services: Arc<Services>,
    /// Stops the gateway's HTTP server.
    pub server: actix_web::dev::ServerHandle,
    /// The `SCOREGATE__…` overrides the configuration was loaded with (reloads reuse them).
    pub overrides: Vec<(String, String)>,
    /// Reloads `config_path` with `overrides`, as SIGHUP does.
    pub reloader: scoregate::lifecycle::Reloader,
}

impl TestApp {
    /// GET `path` on the gateway.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the gateway answers")
    }

    /// GET `path` and parse the JSON body, returning status, headers and body.
    pub async fn get_json(
        &self,
        path: &str,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.expect("a JSON body");
        (status, headers, body)
    }

    /// Every secret of the emulator's tenants (client secrets and private keys).
    pub fn secrets(&self) -> Vec<String> {
        self.emulator
            .tenants()
            .iter()
            .flat_map(|tenant| {
                let mut secrets = Vec::new();
                if let Some(secret) = tenant.credential.secret() {
                    secrets.push(secret.expose_secret().to_owned());
                }
                if let Some(certificate) = tenant.credential.certificate() {
                    secrets.push(certificate.private_key_pem.expose_secret().to_owned());
                }
                secrets
            })
            .collect()
    }
}

/// The score the emulator serves `slug`, asked directly with the tenant's own secret.
pub async fn direct_score(app: &TestApp, slug: &str) -> f64 {
    use scoregate::wire::{ConfigurationScore, TokenResponse, DEFENDER_SCOPE};
    let tenant = app
        .emulator
        .tenants()
        .into_iter()
        .find(|tenant| tenant.slug == slug)
        .expect("the tenant exists");
    let secret = tenant
        .credential
        .secret()
        .expect("a secret tenant")
        .expose_secret()
        .to_owned();
    let ca = reqwest::Certificate::from_pem(app.emulator.ca_cert_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let base = app.emulator.base_url();
    let token: TokenResponse = client
        .post(format!("{base}/{}/oauth2/v2.0/token", tenant.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", tenant.client_id.to_string().as_str()),
            ("client_secret", secret.as_str()),
            ("scope", DEFENDER_SCOPE),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let score: ConfigurationScore = client
        .get(format!("{base}/api/configurationScore"))
        .bearer_auth(token.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    score.score
}

/// A fault profile for the named tenants.
pub fn fault(profile: FaultProfile, tenants: &[&str]) -> FaultAssignment {
    FaultAssignment {
        profile,
        selector: Selector::Tenants(tenants.iter().map(|t| t.to_string()).collect()),
    }
}

/// A credential kind for the named tenants.
pub fn credential(kind: CredentialKind, tenants: &[&str]) -> CredentialAssignment {
    CredentialAssignment {
        kind,
        selector: Selector::Tenants(tenants.iter().map(|t| t.to_string()).collect()),
    }
}

/// The day the emulator's score values are pinned to in every test, so that each expected value
/// is the same on any day the suite runs. `SCOREGATE_TEST_SCORE_DATE=YYYY-MM-DD` picks another
/// day, to run the suite as on that day. (2026-12-04 is a day on which an unrounded mean once
/// failed to match the gateway's rounded one.)
pub fn test_score_date() -> time::Date {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match std::env::var("SCOREGATE_TEST_SCORE_DATE") {
        Ok(text) => {
            time::Date::parse(&text, format).expect("SCOREGATE_TEST_SCORE_DATE is YYYY-MM-DD")
        }
        Err(_) => time::macros::date!(2026 - 12 - 04),
    }
}

/// Starts the emulator with its score values pinned to [`test_score_date`] (unless the options
/// pin a day of their own): every test starts its emulator through this.
pub async fn start_emulator(options: EmulatorOptions) -> Emulator {
    let options = EmulatorOptions {
        score_date: options.score_date.or(Some(test_score_date())),
        ..options
    };
    Emulator::start(options).await.expect("the emulator starts")
}

/// A small emulator: `tenants` healthy tenants plus the given faults.
pub fn emulator_options(tenants: usize, faults: Vec<FaultAssignment>) -> EmulatorOptions {
    EmulatorOptions {
        tenants,
        faults,
        ..EmulatorOptions::default()
    }
}

/// Starts the emulator and the gateway with test-friendly settings.
pub async fn spawn_app(options: EmulatorOptions) -> TestApp {
    spawn_app_with(options, &[]).await
}

/// Starts the emulator and the gateway; `env` adds `SCOREGATE__…` overrides.
pub async fn spawn_app_with(options: EmulatorOptions, env: &[(&str, &str)]) -> TestApp {
    spawn_app_with_config(options, env, "").await
}

/// Starts the emulator and the gateway; `extra_toml` is appended to the written configuration
/// (for `[[api_keys]]`, which the environment cannot express).
pub async fn spawn_app_with_config(
    options: EmulatorOptions,
    env: &[(&str, &str)],
    extra_toml: &str,
) -> TestApp {
    capture_logs();
    let emulator = start_emulator(options).await;
    let dir = tempfile::Builder::new()
        .prefix("scoregate-test-")
        .tempdir()
        .expect("a temporary directory");
    let config_path = emulator
        .write_config(dir.path())
        .expect("the emulator writes a configuration");
    if !extra_toml.is_empty() {
        let mut text = std::fs::read_to_string(&config_path).expect("the configuration");
        text.push('\n');
        text.push_str(extra_toml);
        std::fs::write(&config_path, text).expect("the configuration is writable");
    }
    let mut overrides: Vec<(String, String)> = [
        ("SCOREGATE__SERVER__BIND", "127.0.0.1:0"),
        ("SCOREGATE__SERVER__WORKERS", "2"),
        ("SCOREGATE__REFRESH__ENABLED", "false"),
        ("SCOREGATE__UPSTREAM__RETRY_BASE_MS", "10"),
        ("SCOREGATE__UPSTREAM__RETRY_MAX_MS", "40"),
        // Tests force fetches with `max_age=0` back to back; hardening_fetch tests the floor.
        ("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0"),
    ]
    .iter()
    .chain(env.iter())
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let config = Config::load_with_env(&config_path, overrides.clone())
        .expect("the written configuration loads");
    let application = Application::build(&config).expect("the gateway starts");
    let address = format!("http://{}", application.addr());
    let services = application.services().clone();
    let server = application.handle();
    let reloader = application.reloader().with_env(overrides.clone());
    tokio::spawn(application.run_until_stopped());
    // The history database is connected in the background (a gateway serves scores without it);
    // tests start once it is, so that the history routes do not answer 503 by timing luck.
    if let Some(history) = services.history() {
        let connected = async {
            while history.store().is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), connected)
            .await
            .expect("the history database connects");
        // And once today's past scores are loaded (unless the test holds the load): the load's
        // reads would count among the test's own.
        if !scoregate::history::past_load_held(config.history.url.expose_secret()) {
            let metrics = scoregate::model::Metric::ALL.len() as u64;
            let loaded = async {
                while history.past_loads() < metrics {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), loaded)
                .await
                .expect("the past scores are loaded");
        }
    }
    TestApp {
        address,
        client: reqwest::Client::new(),
        emulator,
        config_path,
        _dir: dir,
        services,
        server,
        overrides,
        reloader,
    }
}

/// Everything logged by this test binary so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(Arc::default)
}

/// Installs (once) a subscriber that writes every event into the buffer (`spawn_app` does;
/// harnesses that start gateways themselves call it too).
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let buffer = log_buffer().clone();
        // As an operator debugging scoregate would run it: our code at trace, Azure's at debug.
        let filter = scoregate::telemetry::filter(
            "scoregate=trace,azure_core=debug,azure_identity=debug,info",
        );
        // The production text format, so that what tests read is what operators read.
        let subscriber = scoregate::telemetry::text_subscriber(
            filter,
            move || CaptureWriter(buffer.clone()),
            false,
        );
        let _ = tracing_subscriber::util::SubscriberInitExt::try_init(subscriber);
    });
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves `route` for every path on a loopback port the system picks (one worker, no signal
/// handling) on the test's runtime: the webhook receivers' server. Returns its base URL
/// (`http://127.0.0.1:PORT`) and the handle that stops it.
pub fn serve_loopback<F>(route: F) -> (String, actix_web::dev::ServerHandle)
where
    F: Fn() -> actix_web::Route + Send + Clone + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(move || actix_web::App::new().default_service(route()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    tokio::spawn(server);
    (base, handle)
}

/// A `scoregate serve` process (killed on drop) and the address it listens on.
pub struct ServedProcess {
    pub child: tokio::process::Child,
    pub address: String,
}

/// Starts `scoregate serve --config config` with `database` as its history (JSON logs, refresher
/// off, no floor between forced fetches, any free port) and `env` on top; returns once it logs
/// that it listens (within 20 s). Its stderr keeps being drained, so it never blocks on a pipe.
pub async fn serve_process(
    config: &std::path::Path,
    database: &str,
    env: &[(&str, &str)],
) -> ServedProcess {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env("SCOREGATE__SERVER__BIND", "127.0.0.1:0")
        .env("SCOREGATE__SERVER__WORKERS", "2")
        .env("SCOREGATE__REFRESH__ENABLED", "false")
        .env("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0")
        .env("SCOREGATE__HISTORY__URL", database)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("scoregate starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = async {
        loop {
            let line = lines.next_line().await.unwrap().expect("scoregate runs");
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"] == "scoregate is listening" {
                    return format!("http://{}", event["address"].as_str().unwrap());
                }
            }
        }
    };
    let address = tokio::time::timeout(std::time::Duration::from_secs(20), listening)
        .await
        .expect("scoregate listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ServedProcess { child, address }
}
