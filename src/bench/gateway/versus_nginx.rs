//! The `nginx` phase: the warm `/tenants/{id}/score` with an API key (the gateway as a process
//! of its own, its log on to a file) against nginx's `proxy_cache` serving the same cached
//! Defender answer, in both configurations of [`Keepalive`] (access log on). The figure with
//! a target is wrk's (`wrk -t2 -c64`): rounds alternating the three servers, each round's
//! ratio per configuration, their median and spread, so that one burst of other work on the
//! shared cores does not decide it; only 2xx answers count (a 429 of the bench key's rate limit
//! is no warm score). The bench's own client (reqwest) gives a secondary figure.

use super::super::nginx::{self, Keepalive, Nginx};
use super::{drive, emulator, percentile, process, GatewayBenchArgs, GatewayProcess, BENCH_KEY};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Rounds of the wrk comparison (each drives every server for `--seconds`).
const WRK_ROUNDS: usize = 3;

/// Connections of wrk and of the bench's client.
const CONNECTIONS: usize = 64;

/// The nginx configurations, in the order of a round's first rotation.
const CONFIGURATIONS: [Keepalive; 2] = [Keepalive::Unbounded, Keepalive::Default];

/// One server the rounds drive: its URL, the bearer token it takes, and its process (whose
/// CPU time, children included, is read around each run).
struct Target {
    name: String,
    url: String,
    token: String,
    pid: u32,
}

/// The CPU time a server's processes used between two readings ([`process::cpu_seconds`]),
/// per answer, in microseconds: the server's own cost of an answer, whichever client drives it
/// and whatever that client costs on the shared cores.
fn per_answer(before: Option<f64>, after: Option<f64>, answers: u64) -> Option<f64> {
    let (before, after) = (before?, after?);
    (answers > 0).then(|| (after - before) * 1_000_000.0 / answers as f64)
}

/// `12.3 µs`, or `-` when it could not be read.
fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1} µs"))
}

/// The median of `values` (`None` when empty).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// A client sending `Authorization: Bearer TOKEN`.
fn authorized(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// What the bench's client measured on one server.
struct ClientFigure {
    per_second: f64,
    p50: f64,
    p99: f64,
    failures: u64,
    /// The server's CPU time per answer, µs.
    server_cpu: Option<f64>,
    /// This process's (the client's) CPU time per answer, µs.
    client_cpu: Option<f64>,
}

/// Fetches `target` once (warming its cache, and checking the token works); returns what the
/// bench's client measured on it for `seconds`.
async fn bench_client(target: &Target, seconds: u64) -> anyhow::Result<ClientFigure> {
    let client = authorized(&target.token)?;
    let first = client.get(&target.url).send().await?;
    anyhow::ensure!(
        first.status().is_success(),
        "{} answered {}",
        target.name,
        first.status()
    );
    let before = process::cpu_seconds(target.pid, true);
    let client_before = process::cpu_seconds(std::process::id(), false);
    let (latencies, failures, elapsed) = drive(
        &client,
        Arc::new(vec![target.url.clone()]),
        CONNECTIONS,
        seconds,
    )
    .await;
    let answers = latencies.len() as u64 + failures;
    Ok(ClientFigure {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        failures,
        server_cpu: per_answer(before, process::cpu_seconds(target.pid, true), answers),
        client_cpu: per_answer(
            client_before,
            process::cpu_seconds(std::process::id(), false),
            answers,
        ),
    })
}

/// Runs the phase and prints its figures.
pub(super) async fn run(args: &GatewayBenchArgs) -> anyhow::Result<()> {
    let emu = emulator(args.tenants, Some(args.latency_ms)).await?;
    // A process of its own, as nginx is: the bench's client does not share its runtime.
    let gw = GatewayProcess::start(
        &emu,
        &reqwest::Client::new(),
        args.max_in_flight,
        true,
        true,
    )
    .await?;
    let slug = emu
        .tenants()
        .first()
        .map(|tenant| tenant.slug.clone())
        .context("no tenant")?;
    let gateway = Target {
        name: "gateway".to_owned(),
        url: format!("{}/tenants/{slug}/score", gw.address),
        token: BENCH_KEY.to_owned(),
        pid: gw.pid,
    };
    let figure = bench_client(&gateway, args.seconds).await?;
    println!(
        "warm /tenants/{{id}}/score, API key, bench client (secondary)  gateway {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed, {CONNECTIONS} clients); CPU per answer: server {}, client {}",
        figure.per_second,
        figure.p50,
        figure.p99,
        figure.failures,
        micros(figure.server_cpu),
        micros(figure.client_cpu)
    );
    let gateway_figure = figure;
    let Some(binary) = nginx::on_path("nginx") else {
        println!("nginx             not on PATH: no comparison (apt-get install nginx)");
        return Ok(());
    };
    let token = nginx::defender_token(&emu).await?;
    // Both configurations at once, each idle while the other is driven.
    let mut servers = Vec::new();
    let mut targets = vec![gateway];
    for keepalive in CONFIGURATIONS {
        let server = Nginx::start(&binary, &emu, 2, keepalive)?;
        targets.push(Target {
            name: format!("nginx ({})", keepalive.label()),
            url: format!(
                "{}{}",
                server.address,
                crate::wire::CONFIGURATION_SCORE_PATH
            ),
            token: token.clone(),
            pid: server.pid(),
        });
        servers.push(server);
    }
    for target in &targets[1..] {
        let figure = bench_client(target, args.seconds).await?;
        println!(
            "                  bench client (secondary): {} {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} failed); CPU per answer: server {}, client {}; gateway / nginx {:.2}x",
            target.name,
            figure.per_second,
            figure.p50,
            figure.p99,
            figure.failures,
            micros(figure.server_cpu),
            micros(figure.client_cpu),
            gateway_figure.per_second / figure.per_second,
        );
    }
    if nginx::on_path("wrk").is_none() {
        println!("                  wrk not on PATH: no wrk rounds, no figure beside the target (apt-get install wrk)");
        return Ok(());
    }
    // ratios[c][r]: gateway / nginx configuration c in round r.
    let mut ratios = vec![Vec::new(); CONFIGURATIONS.len()];
    // cpu[t]: the server CPU per answer of target t, per round.
    let mut cpu = vec![Vec::new(); targets.len()];
    for round in 0..WRK_ROUNDS {
        let mut rps = vec![0.0; targets.len()];
        let mut not_ok = vec![0; targets.len()];
        // Rotated each round: no server always runs first or right after another one.
        for step in 0..targets.len() {
            let index = (round + step) % targets.len();
            let target = &targets[index];
            let before = process::cpu_seconds(target.pid, true);
            let figure = nginx::wrk(&target.url, &target.token, CONNECTIONS, args.seconds)
                .with_context(|| format!("wrk gave no figure for {}", target.name))?;
            rps[index] = figure.ok_per_second;
            not_ok[index] = figure.not_ok;
            if let Some(per_answer) = per_answer(
                before,
                process::cpu_seconds(target.pid, true),
                figure.answers,
            ) {
                cpu[index].push(per_answer);
            }
        }
        let mut line = format!(
            "                  wrk -t2 -c{CONNECTIONS} -d{}s, round {} of {WRK_ROUNDS}: gateway {:.0} req/s",
            args.seconds,
            round + 1,
            rps[0]
        );
        for (configuration, nginx_rps) in rps[1..].iter().enumerate() {
            let ratio = rps[0] / nginx_rps;
            ratios[configuration].push(ratio);
            line.push_str(&format!(
                ", {} {nginx_rps:.0} req/s ({ratio:.2}x)",
                targets[configuration + 1].name
            ));
        }
        println!("{line}");
        for (target, not_ok) in targets.iter().zip(&not_ok) {
            if *not_ok > 0 {
                // A 429 (the bench key's rate limit) or an error is no warm score: the figures
                // above count 2xx answers only.
                println!(
                    "                  {}: {not_ok} answers were not 2xx (not counted)",
                    target.name
                );
            }
        }
    }
    for (keepalive, mut ratios) in CONFIGURATIONS.into_iter().zip(ratios) {
        let rounds: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
        ratios.sort_by(f64::total_cmp);
        let (Some(min), Some(max)) = (ratios.first(), ratios.last()) else {
            continue;
        };
        println!(
            "warm score vs nginx ({}): wrk gateway / nginx, rounds {}, median {:.2}x, spread {min:.2}-{max:.2}x (target >= 1.2x)",
            keepalive.label(),
            rounds.join(", "),
            ratios[ratios.len() / 2]
        );
    }
    // The servers' own cost of an answer, which no client's share of the cores changes.
    let medians: Vec<Option<f64>> = cpu.into_iter().map(median).collect();
    let mut line = format!(
        "server CPU per answer under wrk (median of the rounds): gateway {}",
        micros(medians[0])
    );
    for (target, nginx) in targets[1..].iter().zip(&medians[1..]) {
        line.push_str(&format!(", {} {}", target.name, micros(*nginx)));
        if let (Some(nginx), Some(gateway)) = (nginx, medians[0]) {
            line.push_str(&format!(" (nginx / gateway {:.2}x)", nginx / gateway));
        }
    }
    println!("{line}");
    drop(servers);
    emu.stop().await;
    Ok(())
}
