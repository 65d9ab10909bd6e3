//! The `mixed` phase: a gateway process of its own (`--tenants` tenants, all three metrics,
//! history on), warmed (every tenant's three scores, `/controls`, a few tenants' controls, a
//! history query), then `--clients` concurrent clients for `--mixed-seconds` spread over the
//! read routes: p50 and p99 per route, the errors (any non-2xx answer or transport error;
//! target 0) and the resident memory before, at its peak (sampled every 100 ms) and after.

use super::{
    fetch_every_tenant, load_with_memory, three_metrics, GatewayBenchArgs, GatewayProcess,
    LoadFigures, METRICS,
};
use crate::bench::gateway::emulator;
use anyhow::Context;
use std::time::Duration;

/// The routes of the load, in the order the figures are printed.
const ROUTES: [&str; 5] = [
    "/scores",
    "/tenants/{id}/score",
    "/tenants/{id}/history",
    "/tenants/{id}/controls",
    "/controls",
];

/// How long the warm-up's fetches of one metric (or of `/controls`) may take.
const WARM_BOUND: Duration = Duration::from_secs(300);

/// GET `url`, which must answer 2xx.
pub(super) async fn fetch_ok(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let response = client.get(url).send().await?;
    let status = response.status();
    response.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

/// Runs the phase and prints its figures.
pub(super) async fn run(args: &GatewayBenchArgs, client: &reqwest::Client) -> anyhow::Result<()> {
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    let gw = GatewayProcess::start_with(
        &emu,
        client,
        args.max_in_flight,
        false,
        true,
        &three_metrics(),
    )
    .await?;
    let address = &gw.address;
    let slugs: Vec<String> = emu
        .tenants()
        .into_iter()
        .map(|tenant| tenant.slug)
        .collect();
    let first = slugs.first().context("no tenant")?;

    // Warm: every score, every tenant's controls (through `/controls`), a few single-tenant
    // controls and one history query.
    for metric in METRICS {
        fetch_every_tenant(client, address, metric, WARM_BOUND).await?;
    }
    tokio::time::timeout(
        WARM_BOUND,
        fetch_ok(
            client,
            &format!("{address}/controls?limit=1000&timeout_ms=60000"),
        ),
    )
    .await
    .context("the warm-up's /controls took too long")??;
    for slug in slugs.iter().take(5) {
        fetch_ok(client, &format!("{address}/tenants/{slug}/controls")).await?;
    }
    fetch_ok(client, &format!("{address}/tenants/{first}/history")).await?;
    // Warm means at rest: the secure scores' 90-day back-fills drained first, or they would
    // share the cores (and the database) with the load.
    let settled =
        super::memory::settle(client, &gw, Duration::from_secs(args.settle_seconds)).await?;
    println!("                  warm and settled: {}", settled.describe());

    // Every route once per tenant, the metrics taking turns where a route has one.
    let mut paths = Vec::new();
    for (index, slug) in slugs.iter().enumerate() {
        let metric = METRICS[index % METRICS.len()];
        paths.push((0, format!("{address}/scores?limit=1000&metric={metric}")));
        paths.push((1, format!("{address}/tenants/{slug}/score?metric={metric}")));
        paths.push((
            2,
            format!("{address}/tenants/{slug}/history?metric={metric}"),
        ));
        paths.push((3, format!("{address}/tenants/{slug}/controls")));
        paths.push((4, format!("{address}/controls?limit=1000")));
    }
    let LoadFigures {
        routes: figures,
        elapsed,
        before,
        peak,
        after,
        settled,
    } = load_with_memory(
        client,
        gw.pid,
        paths,
        ROUTES.len(),
        args.clients,
        args.mixed_seconds,
    )
    .await?;

    println!(
        "mixed             {} tenants, three metrics, history on, warm; {} clients for {:.0} s:",
        slugs.len(),
        args.clients,
        elapsed.as_secs_f64()
    );
    let mut errors = 0;
    for (route, figures) in ROUTES.iter().zip(&figures) {
        errors += figures.errors;
        println!("                  {}", figures.line(route, elapsed));
    }
    println!(
        "                  errors {errors} (target 0); resident memory before {before:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB, 3 s later {settled:.1} MiB"
    );
    drop(gw);
    emu.stop().await;
    Ok(())
}
