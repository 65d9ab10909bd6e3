//! Benchmark of the gateway in front of the in-process emulator, in phases (`--phases`, all
//! by default), each figure printed beside its target (issues 15 and 25):
//!
//! - `memory`: the resident memory of a gateway process with 10,000 warm tenants, history on,
//!   `device` only and then all three metrics (settled after the secure score back-fills);
//! - `scores`: cold and warm `/scores` over 1,000 tenants, warm single-tenant reads, a cold
//!   `/scores?metric=secure`, single flight under 1,000 concurrent cold requests;
//! - `nginx`: the warm single-tenant score with an API key against nginx's `proxy_cache` in two
//!   configurations, wrk rounds alternating;
//! - `mixed`: 200 concurrent clients over the read routes of a warm 1,000-tenant gateway;
//! - `big`: a 10,000-tenant gateway, all three metrics: start-up, a SIGHUP reload, a sorted
//!   `/scores`, and its memory under 200 concurrent clients.
//!
//! The gateways of `nginx`, `memory`, `mixed` and `big` run as processes of their own (this
//! binary's `serve`), as nginx does; `scores` runs in this process (emulator, gateway, client)
//! on the same cores, so its figures are conservative. The emulator's quotas are off: the bench
//! measures the gateway, not Defender's limits. Each phase is bounded in time; a phase that
//! fails prints "not measured" and the bench goes on.

mod big;
mod memory;
mod mixed;
mod process;
mod scores;
mod usage;
mod versus_nginx;

use process::{fetch_every_tenant, metric_sum, RssSampler};
pub(crate) use process::{resident_mib, GatewayProcess};

use crate::app::Application;
use crate::config::Config;
use crate::emulator::{Emulator, EmulatorOptions, LatencyRange};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `scoregate bench gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayBenchArgs {
    /// Tenants of the `/scores` phases.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Tenants registered for the memory figures (0 skips them).
    #[arg(long, default_value_t = 10_000)]
    pub memory_tenants: usize,
    /// Tenants of the `big` phase (start-up, reload, sorted `/scores`, memory under load).
    #[arg(long, default_value_t = 10_000)]
    pub big_tenants: usize,
    /// Latency the emulator adds to every Defender call, milliseconds.
    #[arg(long, value_name = "MIN..MAX", default_value = "50..150")]
    pub latency_ms: LatencyRange,
    /// `[upstream] max_in_flight` of the gateway.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// How long each warm phase drives requests, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent client tasks of the warm phases.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Concurrent clients of the `mixed` and `big` loads.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// How long the `mixed` load drives requests, seconds.
    #[arg(long, default_value_t = 30)]
    pub mixed_seconds: u64,
    /// How long the `big` phase's load drives requests, seconds.
    #[arg(long, default_value_t = 30)]
    pub load_seconds: u64,
    /// At most how long the `memory` and `big` phases wait for the secure score back-fills to
    /// drain (the settled figure, the figures at rest), seconds.
    #[arg(long, default_value_t = 900)]
    pub settle_seconds: u64,
    /// The phases to run, comma separated: memory, nginx, mixed, big, scores (default: all;
    /// they run in that order whatever the order given).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Phase::ALL)]
    pub phases: Vec<Phase>,
}

/// A phase of `bench gateway`, runnable alone (`--phases`) so that a figure can be measured
/// again by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Memory of a 10,000-tenant gateway process, `device` only and all three metrics.
    Memory,
    /// Cold and warm `/scores`, warm single-tenant reads, cold secure scores, single flight.
    Scores,
    /// The warm single-tenant score against nginx's `proxy_cache`, two configurations.
    Nginx,
    /// 200 concurrent clients over the read routes of a warm 1,000-tenant gateway.
    Mixed,
    /// A 10,000-tenant gateway: start-up, SIGHUP reload, sorted `/scores`, memory under load.
    Big,
}

impl Phase {
    /// Every phase, in the order the bench runs them.
    ///
    /// `scores` last: its gateway runs in this process, and what it leaves running (the
    /// secure score back-fills it waits for, bounded) must not share the cores with the
    /// figures of the gateway processes.
    const ALL: [Phase; 5] = [
        Phase::Memory,
        Phase::Nginx,
        Phase::Mixed,
        Phase::Big,
        Phase::Scores,
    ];

    /// The phase's name, as `--phases` spells it and the figures start.
    fn name(self) -> &'static str {
        match self {
            Phase::Memory => "memory",
            Phase::Scores => "scores",
            Phase::Nginx => "nginx",
            Phase::Mixed => "mixed",
            Phase::Big => "big",
        }
    }
}

/// A gateway on port 0 in front of `emulator`, configured by the emulator's written file, in
/// this process; its server stopped on drop (the `scores` phase waits for the history
/// back-fills it started itself: they do not end with the server).
struct Gateway {
    address: String,
    shutdown: tokio_util::sync::CancellationToken,
    _dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A scratch directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The API key of the authenticated phases (a bench-only value, not a secret).
const BENCH_KEY: &str = "sg_bench-key-of-scoregate-bench-gateway-not-a-secret";

/// Writes the emulator's configuration into `dir`, with one `[[api_keys]]` entry (all tenants,
/// the highest rate allowed) for [`BENCH_KEY`] appended.
fn write_config(emulator: &Emulator, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = emulator
        .write_config(dir)
        .context("the emulator writes a configuration")?;
    let digest = crate::auth::digest_hex(BENCH_KEY);
    let mut text = std::fs::read_to_string(&path).context("the written configuration")?;
    text.push_str(&format!(
        "\n[[api_keys]]\nname = \"bench\"\nsha256 = \"{digest}\"\ntenants = [\"*\"]\nrequests_per_minute = 1000000\n"
    ));
    std::fs::write(&path, text).context("the bench configuration")?;
    Ok(path)
}

/// The environment overrides of every bench gateway: quotas out of the way, the refresher off,
/// authentication as `auth`.
fn overrides(bind: &str, max_in_flight: usize, auth: bool) -> Vec<(String, String)> {
    [
        ("SCOREGATE__SERVER__BIND", bind.to_owned()),
        ("SCOREGATE__SERVER__WORKERS", "2".to_owned()),
        ("SCOREGATE__AUTH__ENABLED", auth.to_string()),
        ("SCOREGATE__REFRESH__ENABLED", "false".to_owned()),
        // The cold phase with tokens cached forces every tenant with `max_age=0` seconds after
        // the first: the floor between forced fetches must not turn it into cache hits.
        ("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0".to_owned()),
        (
            "SCOREGATE__UPSTREAM__MAX_IN_FLIGHT",
            max_in_flight.to_string(),
        ),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_MINUTE",
            "100000".to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__REQUESTS_PER_HOUR",
            "1000000".to_owned(),
        ),
        // Graph beside Defender, for the `secure` figure; its limits off like Defender's.
        (
            "SCOREGATE__UPSTREAM__METRICS",
            r#"["device","secure"]"#.to_owned(),
        ),
        (
            "SCOREGATE__UPSTREAM__GRAPH_REQUESTS_PER_MINUTE",
            "100000".to_owned(),
        ),
    ]
    .map(|(key, value)| (key.to_owned(), value))
    .into()
}

async fn gateway(emulator: &Emulator, max_in_flight: usize, auth: bool) -> anyhow::Result<Gateway> {
    let dir = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).context("a scratch directory")?;
    let dir = TempDir(dir);
    let path = write_config(emulator, &dir.0)?;
    let overrides = overrides("127.0.0.1:0", max_in_flight, auth);
    let config = Config::load_with_env(&path, overrides).context("the bench configuration")?;
    let application = Application::build(&config)?;
    let address = format!("http://{}", application.addr());
    let shutdown = application.shutdown_token();
    tokio::spawn(application.run_until_stopped());
    Ok(Gateway {
        address,
        shutdown,
        _dir: dir,
    })
}

pub(crate) async fn emulator(
    tenants: usize,
    latency: Option<LatencyRange>,
) -> anyhow::Result<Emulator> {
    Emulator::start(EmulatorOptions {
        tenants,
        quota_per_minute: None,
        quota_per_hour: None,
        graph_quota_per_minute: None,
        graph_quota_per_ten_minutes: None,
        graph_max_concurrent: None,
        latency,
        workers: 2,
        ..EmulatorOptions::default()
    })
    .await
    .context("cannot start the emulator")
}

pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Drives GET `paths` (round robin) from `concurrency` tasks for `seconds`; returns the sorted
/// latencies of 200 answers, the failures and the elapsed time.
pub(crate) async fn drive(
    client: &reqwest::Client,
    paths: Arc<Vec<String>>,
    concurrency: usize,
    seconds: u64,
) -> (Vec<Duration>, u64, Duration) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let client = client.clone();
            let paths = paths.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut next = task;
                while Instant::now() < until {
                    let path = &paths[next % paths.len()];
                    next += concurrency;
                    let sent = Instant::now();
                    match client.get(path).send().await {
                        Ok(response) if response.status().is_success() => {
                            if response.bytes().await.is_ok() {
                                latencies.push(sent.elapsed());
                            } else {
                                failures += 1;
                            }
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        if let Ok((mut l, f)) = task.await {
            latencies.append(&mut l);
            failures += f;
        }
    }
    latencies.sort();
    (latencies, failures, started.elapsed())
}

/// What one route of a load got: the sorted latencies of its 2xx answers, and its errors (any
/// other status, or a transport error) counted by kind.
#[derive(Default)]
pub(crate) struct RouteFigures {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: u64,
    /// Errors by kind: the status (`503`), or `transport`.
    pub(crate) error_kinds: std::collections::BTreeMap<String, u64>,
}

impl RouteFigures {
    /// The line of a route's figures over `elapsed`.
    pub(crate) fn line(&self, route: &str, elapsed: Duration) -> String {
        let mut line = format!(
            "{route:<24} p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s ({} ok, {} errors",
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.latencies.len() as f64 / elapsed.as_secs_f64(),
            self.latencies.len(),
            self.errors
        );
        let kinds: Vec<String> = self
            .error_kinds
            .iter()
            .map(|(kind, count)| format!("{kind} x{count}"))
            .collect();
        if !kinds.is_empty() {
            line.push_str(&format!(": {}", kinds.join(", ")));
        }
        line.push(')');
        line
    }
}

/// A load on a gateway process, with its resident memory: before, at its peak (sampled every
/// 100 ms), right after and three seconds later.
pub(super) struct LoadFigures {
    pub(super) routes: Vec<RouteFigures>,
    pub(super) elapsed: Duration,
    pub(super) before: f64,
    pub(super) peak: f64,
    pub(super) after: f64,
    pub(super) settled: f64,
}

/// [`drive_routes`] against the gateway process `pid`, its resident memory sampled around it.
pub(super) async fn load_with_memory(
    client: &reqwest::Client,
    pid: u32,
    paths: Vec<(usize, String)>,
    routes: usize,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LoadFigures> {
    let before = resident_mib(pid).context("no /proc status")?;
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let (figures, elapsed) =
        drive_routes(client, Arc::new(paths), routes, concurrency, seconds).await;
    let peak = sampler.peak_mib();
    drop(sampler);
    let after = resident_mib(pid).context("no /proc status")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = resident_mib(pid).context("no /proc status")?;
    Ok(LoadFigures {
        routes: figures,
        elapsed,
        before,
        peak,
        after,
        settled,
    })
}

/// Drives GET `paths` (each with the index of its route, round robin) from `concurrency`
/// tasks for `seconds`; returns the figures of each of `routes` routes and the elapsed time.
pub(crate) async fn drive_routes(
    client: &reqwest::Client,
    paths: Arc<Vec<(usize, String)>>,
    routes: usize,
    concurrency: usize,
    seconds: u64,
) -> (Vec<RouteFigures>, Duration) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let new_figures = || {
        (0..routes)
            .map(|_| RouteFigures::default())
            .collect::<Vec<_>>()
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let client = client.clone();
            let paths = paths.clone();
            let mut figures = new_figures();
            tokio::spawn(async move {
                let mut next = task;
                while Instant::now() < until && !paths.is_empty() {
                    let (route, path) = &paths[next % paths.len()];
                    next += concurrency;
                    let sent = Instant::now();
                    let error = match client.get(path).send().await {
                        Ok(response) if response.status().is_success() => {
                            response.bytes().await.err().map(|_| "transport".to_owned())
                        }
                        Ok(response) => Some(response.status().as_u16().to_string()),
                        Err(_) => Some("transport".to_owned()),
                    };
                    if let Some(route) = figures.get_mut(*route) {
                        match error {
                            None => route.latencies.push(sent.elapsed()),
                            Some(kind) => {
                                route.errors += 1;
                                *route.error_kinds.entry(kind).or_default() += 1;
                            }
                        }
                    }
                }
                figures
            })
        })
        .collect();
    let mut figures = new_figures();
    for task in tasks {
        if let Ok(task_figures) = task.await {
            for (total, mut part) in figures.iter_mut().zip(task_figures) {
                total.latencies.append(&mut part.latencies);
                total.errors += part.errors;
                for (kind, count) in part.error_kinds {
                    *total.error_kinds.entry(kind).or_default() += count;
                }
            }
        }
    }
    for route in &mut figures {
        route.latencies.sort();
    }
    (figures, started.elapsed())
}

/// The environment overrides that turn all three metrics on (Graph's limits are already off).
fn three_metrics() -> Vec<(String, String)> {
    vec![(
        "SCOREGATE__UPSTREAM__METRICS".to_owned(),
        r#"["device","exposure","secure"]"#.to_owned(),
    )]
}

/// The metrics of [`three_metrics`], as `/scores?metric=` spells them.
const METRICS: [&str; 3] = ["device", "exposure", "secure"];

/// How long `phase` may run at most with `args`: its own durations plus a margin for the
/// fetches, start-ups and settling around them.
fn phase_bound(phase: Phase, args: &GatewayBenchArgs) -> Duration {
    let margin = 600;
    let seconds = match phase {
        Phase::Memory => args.settle_seconds + margin,
        Phase::Scores => 5 * args.seconds + margin,
        // Three drivers, three rounds each, four servers per round.
        Phase::Nginx => 3 * 3 * 4 * args.seconds + margin,
        Phase::Mixed => args.mixed_seconds + margin,
        Phase::Big => args.settle_seconds + args.load_seconds + args.seconds + 2 * margin,
    };
    Duration::from_secs(seconds)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants > 0 && args.concurrency > 0 && args.max_in_flight > 0 && args.clients > 0,
        "--tenants, --concurrency, --clients and --max-in-flight must be at least 1"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.clients).max(64))
        .timeout(Duration::from_secs(120))
        .build()?;
    println!("scoregate bench gateway");
    println!(
        "  {} tenants, Defender latency {}..{} ms, max_in_flight {}",
        args.tenants, args.latency_ms.min_ms, args.latency_ms.max_ms, args.max_in_flight
    );
    for phase in Phase::ALL {
        if !args.phases.contains(&phase) {
            continue;
        }
        let bound = phase_bound(phase, &args);
        let outcome = tokio::time::timeout(bound, async {
            match phase {
                Phase::Memory => memory::run(&args, &client).await,
                Phase::Scores => scores::run(&args, &client).await,
                Phase::Nginx => versus_nginx::run(&args).await,
                Phase::Mixed => mixed::run(&args, &client).await,
                Phase::Big => big::run(&args, &client).await,
            }
        })
        .await;
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("the phase took more than {} s", bound.as_secs()),
        };
        println!("{:<18}not measured: {error}", phase.name());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_line_gives_its_percentiles_and_its_errors_by_kind() {
        let mut figures = RouteFigures {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            errors: 3,
            ..RouteFigures::default()
        };
        figures.error_kinds.insert("503".to_owned(), 2);
        figures.error_kinds.insert("transport".to_owned(), 1);
        let line = figures.line("/scores", Duration::from_secs(10));
        assert_eq!(
            line,
            "/scores                  p50 51.00 ms, p99 99.00 ms, 10 req/s (100 ok, 3 errors: 503 x2, transport x1)"
        );
        let clean = RouteFigures::default().line("/controls", Duration::from_secs(1));
        assert!(clean.ends_with("(0 ok, 0 errors)"), "{clean}");
    }
}
