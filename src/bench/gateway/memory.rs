//! The `memory` phase: the resident memory of a gateway process alone with 10,000 warm
//! tenants, history on, first with `device` only, then with all three metrics (every tenant's
//! three scores fetched once through `/scores` pages), printed on adjacent lines.
//!
//! With `secure` and the history on, each tenant's first secure reading starts a 90-day
//! back-fill from Graph in the background (a few at a time): the figure 3 s after the fetches
//! still holds them. So the phase then samples the memory every second until the back-fills
//! have drained — Graph's call counter on `/metrics` standing still and no history write
//! pending — (at most `--settle-seconds`) and compares that settled figure with the target.

use super::{
    fetch_every_tenant, metric_sum, three_metrics, GatewayBenchArgs, GatewayProcess, RssSampler,
    METRICS,
};
use crate::bench::gateway::{emulator, resident_mib};
use anyhow::Context;
use std::time::{Duration, Instant};

/// The `/metrics` lines of the gateway's Graph calls (every outcome).
const GRAPH_CALLS: &str = "scoregate_upstream_calls_total{service=\"graph\"";

/// The `/metrics` line of the history writes waiting to be written.
const HISTORY_PENDING: &str = "scoregate_history_pending";

/// How long Graph's call counter must stand still (with nothing pending) to call it settled.
const STILL: Duration = Duration::from_secs(10);

/// How long the fetches of one metric may take.
const FETCH_BOUND: Duration = Duration::from_secs(300);

/// Resident memory of one gateway process.
struct MemoryFigures {
    registered: f64,
    /// 3 s after the last fetch.
    warm: f64,
    /// Scores answered ok, per metric fetched.
    cached: Vec<u64>,
}

/// Starts a gateway process with `settings`, fetches every tenant's `metrics` once, and reads
/// its resident memory; returns the process too, for the settling.
async fn measure(
    args: &GatewayBenchArgs,
    client: &reqwest::Client,
    emu: &crate::emulator::Emulator,
    metrics: &[&str],
    settings: &[(String, String)],
) -> anyhow::Result<(MemoryFigures, GatewayProcess)> {
    let gateway =
        GatewayProcess::start_with(emu, client, args.max_in_flight, false, true, settings).await?;
    let registered = resident_mib(gateway.pid).context("no /proc status")?;
    let mut cached = Vec::new();
    for metric in metrics {
        cached.push(fetch_every_tenant(client, &gateway.address, metric, FETCH_BOUND).await?);
    }
    // The steady state, not the burst: the history writer drains its buffer, and jemalloc
    // hands the pages the fetches freed back to the system within a second (src/main.rs).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warm = resident_mib(gateway.pid).context("no /proc status")?;
    Ok((
        MemoryFigures {
            registered,
            warm,
            cached,
        },
        gateway,
    ))
}

/// What settling found: the resident memory once the back-fills drained (or when the bound
/// ran out), the highest sample on the way, how long it took and how many Graph calls it saw.
pub(super) struct Settled {
    pub(super) resident: f64,
    pub(super) peak: f64,
    pub(super) elapsed: Duration,
    pub(super) drained: bool,
    pub(super) graph_calls: f64,
}

impl Settled {
    /// How the settling ended, for the figures.
    pub(super) fn describe(&self) -> String {
        format!(
            "{} after {:.0} s, {:.0} Graph calls, peak {:.1} MiB while settling",
            if self.drained {
                "back-fills drained"
            } else {
                "back-fills NOT drained (--settle-seconds ran out)"
            },
            self.elapsed.as_secs_f64(),
            self.graph_calls,
            self.peak
        )
    }
}

/// Samples `gateway`'s memory every second until its Graph call counter has stood still for
/// [`STILL`] with no history write pending, or `bound` ran out.
pub(super) async fn settle(
    client: &reqwest::Client,
    gateway: &GatewayProcess,
    bound: Duration,
) -> anyhow::Result<Settled> {
    let sampler = RssSampler::start(gateway.pid, Duration::from_secs(1));
    let started = Instant::now();
    let mut last_calls = metric_sum(client, &gateway.address, GRAPH_CALLS).await?;
    let mut still_since = Instant::now();
    let drained = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls = metric_sum(client, &gateway.address, GRAPH_CALLS).await?;
        let pending = metric_sum(client, &gateway.address, HISTORY_PENDING).await?;
        if calls != last_calls || pending > 0.0 {
            last_calls = calls;
            still_since = Instant::now();
        } else if still_since.elapsed() >= STILL {
            break true;
        }
        if started.elapsed() >= bound {
            break false;
        }
    };
    Ok(Settled {
        resident: resident_mib(gateway.pid).context("no /proc status")?,
        peak: sampler.peak_mib(),
        elapsed: started.elapsed(),
        drained,
        graph_calls: last_calls,
    })
}

/// Runs the phase and prints its figures.
pub(super) async fn run(args: &GatewayBenchArgs, client: &reqwest::Client) -> anyhow::Result<()> {
    anyhow::ensure!(args.memory_tenants > 0, "--memory-tenants is 0");
    let tenants = args.memory_tenants;
    let emu = emulator(tenants, None).await?;
    let device_only = [(
        "SCOREGATE__UPSTREAM__METRICS".to_owned(),
        r#"["device"]"#.to_owned(),
    )];
    // The device-only process is gone (killed) before the three-metric one starts.
    let device = measure(args, client, &emu, &["device"], &device_only)
        .await
        .map(|(figures, _gateway)| figures);
    let three = async {
        let (figures, gateway) = measure(args, client, &emu, &METRICS, &three_metrics()).await?;
        let bound = Duration::from_secs(args.settle_seconds);
        let settled = settle(client, &gateway, bound).await?;
        anyhow::Ok((figures, settled))
    }
    .await;
    // Printed together, on adjacent lines.
    match device {
        Ok(figures) => println!(
            "memory            gateway process alone, {tenants} tenants, history on, device only: {:.1} MiB ({:.1} MiB registered, {} device scores cached)",
            figures.warm, figures.registered, figures.cached[0]
        ),
        Err(error) => println!("memory            device only: not measured: {error:#}"),
    }
    let (figures, settled) = match three {
        Ok(three) => three,
        Err(error) => {
            println!("memory            three metrics: not measured: {error:#}");
            return Ok(());
        }
    };
    println!(
        "memory            gateway process alone, {tenants} tenants, history on, three metrics: {:.1} MiB (target <= 96 MiB, stretch 80), settled: {}",
        settled.resident,
        settled.describe()
    );
    let cached: Vec<String> = figures.cached.iter().map(u64::to_string).collect();
    println!(
        "                  three metrics 3 s after warm (back-fills running, not the figure compared): {:.1} MiB ({:.1} MiB registered, {} device/exposure/secure scores cached)",
        figures.warm,
        figures.registered,
        cached.join("/")
    );
    emu.stop().await;
    Ok(())
}
