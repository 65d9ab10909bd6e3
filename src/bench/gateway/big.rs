//! The `big` phase: one gateway process with `--big-tenants` tenants (10,000), all three
//! metrics, history on. Its start-up (spawn to `/readyz` 200) with the resident memory's peak
//! (sampled every 100 ms); every tenant's three scores fetched, then the secure score
//! back-fills left to drain (as the `memory` phase does); a SIGHUP reload of the same file,
//! timed until `scoregate_config_reloads_total{outcome="ok"}` counts it, with its peak;
//! `/scores` sorted by `change_7d` over every tenant from one client; then the memory under
//! `--clients` concurrent clients (`/scores`, `/scores.csv`, single scores): idle, peak
//! (sampled every 100 ms) and after.

use super::memory::settle;
use super::mixed::fetch_ok;
use super::{
    drive, fetch_every_tenant, load_with_memory, metric_sum, percentile, three_metrics,
    GatewayBenchArgs, GatewayProcess, LoadFigures, RssSampler, METRICS,
};
use crate::bench::gateway::emulator;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The routes of the load, in the order the figures are printed.
const ROUTES: [&str; 3] = ["/scores", "/scores.csv", "/tenants/{id}/score"];

/// The `/metrics` line of the configuration reloads applied.
const RELOADS_OK: &str = "scoregate_config_reloads_total{outcome=\"ok\"}";

/// How long start-up, a reload, or the fetches of one metric may take.
const BOUND: Duration = Duration::from_secs(300);

/// The resident memory sampling period of the peaks.
const PERIOD: Duration = Duration::from_millis(100);

/// Runs the phase and prints its figures.
pub(super) async fn run(args: &GatewayBenchArgs, client: &reqwest::Client) -> anyhow::Result<()> {
    anyhow::ensure!(args.big_tenants > 0, "--big-tenants is 0");
    let tenants = args.big_tenants;
    let emu = emulator(tenants, None).await?;
    let label = format!("big               {tenants} tenants, three metrics, history on:");

    // Start-up: spawn to ready.
    let gw = GatewayProcess::spawn(&emu, args.max_in_flight, false, true, &three_metrics())?;
    let sampler = RssSampler::start(gw.pid, PERIOD);
    let ready = gw.wait_for(client, "/readyz", BOUND).await?;
    println!(
        "{label} start-up to /readyz 200 in {:.0} ms, peak {:.1} MiB",
        ready.as_secs_f64() * 1000.0,
        sampler.peak_mib()
    );
    drop(sampler);
    let address = &gw.address;
    for metric in METRICS {
        fetch_every_tenant(client, address, metric, BOUND).await?;
    }
    // The figures below are of a warm gateway at rest, not one still back-filling.
    let settled = settle(client, &gw, Duration::from_secs(args.settle_seconds)).await?;
    println!(
        "                  warm: every tenant's three scores fetched once, {:.1} MiB; {}",
        settled.resident,
        settled.describe()
    );

    // A reload of the same file, once warm.
    let reloads = metric_sum(client, address, RELOADS_OK).await?;
    let sampler = RssSampler::start(gw.pid, PERIOD);
    let started = Instant::now();
    gw.hang_up()?;
    while metric_sum(client, address, RELOADS_OK).await? <= reloads {
        anyhow::ensure!(
            started.elapsed() < BOUND,
            "a SIGHUP reload was not applied within {} s",
            BOUND.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reload = started.elapsed();
    println!(
        "                  SIGHUP reload (warm) applied in {:.0} ms, peak {:.1} MiB",
        reload.as_secs_f64() * 1000.0,
        sampler.peak_mib()
    );
    drop(sampler);

    // The biggest sorted answer, one client.
    let sorted = format!("{address}/scores?sort=change_7d&limit=1000");
    fetch_ok(client, &sorted).await?;
    let (latencies, failures, elapsed) =
        drive(client, Arc::new(vec![sorted]), 1, args.seconds).await;
    println!(
        "                  warm /scores?sort=change_7d&limit=1000 over {tenants} tenants, one client: p50 {:.2} ms (target < 20 ms), p99 {:.2} ms, {:.0} req/s ({} failed)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures
    );

    // Memory under load.
    let slugs: Vec<String> = emu
        .tenants()
        .into_iter()
        .map(|tenant| tenant.slug)
        .collect();
    let mut paths = Vec::new();
    for slug in &slugs {
        paths.push((0, format!("{address}/scores?limit=1000")));
        paths.push((1, format!("{address}/scores.csv?limit=1000")));
        paths.push((2, format!("{address}/tenants/{slug}/score")));
    }
    let LoadFigures {
        routes: figures,
        elapsed,
        before: idle,
        peak,
        after,
        settled,
    } = load_with_memory(
        client,
        gw.pid,
        paths,
        ROUTES.len(),
        args.clients,
        args.load_seconds,
    )
    .await?;
    println!(
        "                  {} clients for {:.0} s:",
        args.clients,
        elapsed.as_secs_f64()
    );
    for (route, figures) in ROUTES.iter().zip(&figures) {
        println!("                  {}", figures.line(route, elapsed));
    }
    println!(
        "                  resident memory idle {idle:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB, 3 s later {settled:.1} MiB: peak / idle = {:.2} (target <= 1.5x)",
        peak / idle
    );
    drop(gw);
    emu.stop().await;
    Ok(())
}
