//! The `nginx` phase: the warm `/tenants/{id}/score` with an API key (the gateway as a process
//! of its own, its log on to a file) against nginx's `proxy_cache` serving the same cached
//! Defender answer, in both configurations of [`Keepalive`] (access log on), and a control:
//! nginx sending the six headers a gateway answer carries beside its own ([`Headers`]).
//!
//! Three drivers, each in rounds alternating the servers (rotated each round, so that no
//! server always runs first or right after another one), each round's ratio per
//! configuration, their median and spread: one burst of other work on the shared cores does
//! not decide a figure. Only 2xx answers count (a 429 of the bench key's rate limit is no warm
//! score). The figure with a target is wrk's (`wrk -t2 -c64`, client and servers sharing the
//! cores); wrk pinned to one core and the servers to another confirms it where the server is
//! the bottleneck. The bench's own client (reqwest, in this process) gives a secondary figure:
//! it needs as much CPU per answer as the servers or more, on the same cores, so it measures
//! itself as much as them. Each server's CPU time per answer, and for the bench's client its
//! own CPU time and preemptions per answer, say why the figures are what they are
//! (`docs/performance.md`).

use super::super::nginx::{self, Headers, Keepalive, Nginx};
use super::usage::{Reading, Usage};
use super::{drive, emulator, percentile, process, GatewayBenchArgs, GatewayProcess, BENCH_KEY};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Rounds of each driver (each round drives every server for `--seconds`).
const ROUNDS: usize = 3;

/// Connections of wrk and of the bench's client.
const CONNECTIONS: usize = 64;

/// The cores of the pinned rounds: wrk's, and the servers'.
const CLIENT_CORE: usize = 0;
const SERVER_CORE: usize = 1;

/// The nginx configurations the target compares with, in the order of a round's first
/// rotation; the control ([`Headers::Gateways`], `keepalive_requests 1000000`) follows them.
const CONFIGURATIONS: [Keepalive; 2] = [Keepalive::Unbounded, Keepalive::Default];

/// One server the rounds drive: its URL, the bearer token it takes, and its process (whose
/// threads' CPU time, its children's included, is read around each run).
struct Target {
    name: String,
    url: String,
    token: String,
    pid: u32,
}

/// What drives the servers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// `wrk -t2 -c64`, client and servers on any core.
    Wrk,
    /// `wrk -t1 -c64` on [`CLIENT_CORE`], the servers pinned to [`SERVER_CORE`]: the server's
    /// core is full, the client's is not.
    WrkPinned,
    /// The bench's reqwest client, 64 tasks on this process's runtime.
    BenchClient,
}

impl Driver {
    fn label(self) -> &'static str {
        match self {
            Driver::Wrk => "wrk -t2 -c64",
            Driver::WrkPinned => "wrk -t1 -c64 on its own core",
            Driver::BenchClient => "bench client (secondary)",
        }
    }
}

/// What one run of a driver measured on one server.
struct Figure {
    /// 2xx answers per second.
    ok_per_second: f64,
    /// Every answer, 2xx or not.
    answers: u64,
    /// Answers that were not 2xx, and transport errors.
    not_ok: u64,
    /// The bench client's p50 and p99, ms (wrk's are not read).
    latency: Option<(f64, f64)>,
    /// The server's threads (nginx's workers included) during the run.
    server: Option<Usage>,
    /// This process's threads during the run (the bench client's; idle under wrk).
    client: Option<Usage>,
}

impl Figure {
    /// CPU microseconds per answer of `usage`.
    fn cpu_per_answer(&self, usage: Option<Usage>) -> Option<f64> {
        let usage = usage?;
        (self.answers > 0).then(|| usage.cpu_seconds * 1e6 / self.answers as f64)
    }

    /// Preemptions per answer of `usage`.
    fn preempted_per_answer(&self, usage: Option<Usage>) -> Option<f64> {
        let usage = usage?;
        (self.answers > 0).then(|| usage.preempted as f64 / self.answers as f64)
    }
}

/// `rounds 1.27, 1.39, 1.29, median 1.29x, spread 1.27-1.39x` (`ratios` not empty).
fn summary(ratios: &[f64]) -> String {
    let rounds: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "rounds {}, median {:.2}x, spread {:.2}-{:.2}x",
        rounds.join(", "),
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

/// The median of `values` (`None` when empty).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// `12.3 µs`-style text of `value` with `unit` and `decimals`, or `-` when it could not be read.
fn shown(value: Option<f64>, decimals: usize, unit: &str) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |value| format!("{value:.decimals$}{unit}"),
    )
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

/// Drives `target` with `driver` for `seconds`.
async fn measure(driver: Driver, target: &Target, seconds: u64) -> anyhow::Result<Figure> {
    let client = authorized(&target.token)?;
    if driver == Driver::BenchClient {
        // Opens a connection and checks the token works before anything is counted.
        let first = client.get(&target.url).send().await?;
        anyhow::ensure!(
            first.status().is_success(),
            "{} answered {}",
            target.name,
            first.status()
        );
    }
    let server_before = Reading::of(target.pid, true);
    let client_before = Reading::of(std::process::id(), false);
    let (ok_per_second, answers, not_ok, latency) = match driver {
        Driver::Wrk | Driver::WrkPinned => {
            let pinned_to = (driver == Driver::WrkPinned).then_some(CLIENT_CORE);
            let figure = nginx::wrk(&target.url, &target.token, CONNECTIONS, seconds, pinned_to)
                .with_context(|| format!("wrk gave no figure for {}", target.name))?;
            (figure.ok_per_second, figure.answers, figure.not_ok, None)
        }
        Driver::BenchClient => {
            let paths = Arc::new(vec![target.url.clone()]);
            let (latencies, failures, elapsed) = drive(&client, paths, CONNECTIONS, seconds).await;
            (
                latencies.len() as f64 / elapsed.as_secs_f64(),
                latencies.len() as u64 + failures,
                failures,
                Some((percentile(&latencies, 0.5), percentile(&latencies, 0.99))),
            )
        }
    };
    let usage = |before: Option<Reading>, after: Option<Reading>| Some(after?.since(&before?));
    Ok(Figure {
        ok_per_second,
        answers,
        not_ok,
        latency,
        server: usage(server_before, Reading::of(target.pid, true)),
        client: usage(client_before, Reading::of(std::process::id(), false)),
    })
}

/// Runs `driver`'s rounds over `targets` (the gateway first) and prints each round, each
/// nginx's ratios and what each server and the client paid per answer. Returns each nginx's
/// ratios (gateway / nginx), round by round.
async fn rounds(driver: Driver, targets: &[Target], seconds: u64) -> anyhow::Result<Vec<Vec<f64>>> {
    // figures[t]: target t's figure in each round.
    let mut figures: Vec<Vec<Figure>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        let mut this_round: Vec<Option<Figure>> = targets.iter().map(|_| None).collect();
        for step in 0..targets.len() {
            let index = (round + step) % targets.len();
            this_round[index] = Some(measure(driver, &targets[index], seconds).await?);
        }
        let this_round: Vec<Figure> = this_round.into_iter().flatten().collect();
        let gateway = this_round[0].ok_per_second;
        let mut line = format!(
            "                  {}, round {} of {ROUNDS}: gateway {gateway:.0} req/s",
            driver.label(),
            round + 1
        );
        for (target, figure) in targets.iter().zip(&this_round).skip(1) {
            line.push_str(&format!(
                ", {} {:.0} req/s ({:.2}x)",
                target.name,
                figure.ok_per_second,
                gateway / figure.ok_per_second
            ));
        }
        println!("{line}");
        for (target, figure) in targets.iter().zip(&this_round) {
            if figure.not_ok > 0 {
                // A 429 (the bench key's rate limit) or an error is no warm score.
                println!(
                    "                  {}: {} answers were not 2xx (not counted)",
                    target.name, figure.not_ok
                );
            }
        }
        for (figures, figure) in figures.iter_mut().zip(this_round) {
            figures.push(figure);
        }
    }
    let mut all_ratios = Vec::new();
    for (target, nginx) in targets.iter().zip(&figures).skip(1) {
        let ratios: Vec<f64> = figures[0]
            .iter()
            .zip(nginx)
            .map(|(gateway, nginx)| gateway.ok_per_second / nginx.ok_per_second)
            .collect();
        println!(
            "                  {}: gateway / {}, {}",
            driver.label(),
            target.name,
            summary(&ratios)
        );
        all_ratios.push(ratios);
    }
    // What an answer cost, median of the rounds: the servers' own CPU does not depend on
    // what else shares the cores; the client's CPU and preemptions say what it does.
    for (target, figures) in targets.iter().zip(&figures) {
        let of =
            |value: fn(&Figure) -> Option<f64>| median(figures.iter().filter_map(value).collect());
        let mut line = format!(
            "                  {} per answer, {}: server CPU {}",
            driver.label(),
            target.name,
            shown(of(|figure| figure.cpu_per_answer(figure.server)), 1, " µs")
        );
        if driver == Driver::BenchClient {
            line.push_str(&format!(
                ", client CPU {}, client preempted {} times; p50 {}, p99 {}",
                shown(of(|figure| figure.cpu_per_answer(figure.client)), 1, " µs"),
                shown(
                    of(|figure| figure.preempted_per_answer(figure.client)),
                    2,
                    ""
                ),
                shown(of(|figure| figure.latency.map(|(p50, _)| p50)), 2, " ms"),
                shown(of(|figure| figure.latency.map(|(_, p99)| p99)), 2, " ms"),
            ));
        }
        println!("{line}");
    }
    Ok(all_ratios)
}

/// Pins every server's threads to [`SERVER_CORE`], when there is another core for wrk and
/// `taskset` is installed.
fn pin_servers(targets: &[Target]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    anyhow::ensure!(cores > SERVER_CORE, "{cores} core(s)");
    anyhow::ensure!(
        nginx::on_path("taskset").is_some(),
        "taskset is not on PATH (util-linux)"
    );
    for target in targets {
        process::pin_to_core(target.pid, SERVER_CORE)
            .with_context(|| format!("pinning {}", target.name))?;
    }
    Ok(())
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
    let mut targets = vec![Target {
        name: "gateway".to_owned(),
        url: format!("{}/tenants/{slug}/score", gw.address),
        token: BENCH_KEY.to_owned(),
        pid: gw.pid,
    }];
    let Some(binary) = nginx::on_path("nginx") else {
        println!("nginx             not on PATH: no comparison (apt-get install nginx)");
        return Ok(());
    };
    let token = nginx::defender_token(&emu).await?;
    // Every configuration at once, each idle while another is driven.
    let profiles = CONFIGURATIONS
        .map(|keepalive| (keepalive, Headers::Own))
        .into_iter()
        .chain([(Keepalive::Unbounded, Headers::Gateways)]);
    let mut servers = Vec::new();
    for (keepalive, headers) in profiles {
        let server = Nginx::start(&binary, &emu, 2, keepalive, headers)?;
        let name = match headers {
            Headers::Own => format!("nginx ({})", keepalive.label()),
            Headers::Gateways => format!("nginx ({}, the gateway's headers)", keepalive.label()),
        };
        targets.push(Target {
            name,
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
    println!(
        "warm /tenants/{{id}}/score, API key, {CONNECTIONS} connections, {ROUNDS} rounds of {} s per driver and server:",
        args.seconds
    );
    rounds(Driver::BenchClient, &targets, args.seconds).await?;
    if nginx::on_path("wrk").is_none() {
        println!("                  wrk not on PATH: no wrk rounds, no figure beside the target (apt-get install wrk)");
        return Ok(());
    }
    let ratios = rounds(Driver::Wrk, &targets, args.seconds).await?;
    // Last: the servers stay pinned until they stop.
    let pinned = match pin_servers(&targets) {
        Ok(()) => Some(rounds(Driver::WrkPinned, &targets, args.seconds).await?),
        Err(why) => {
            println!("                  no rounds with wrk on its own core: {why:#}");
            None
        }
    };
    for (index, keepalive) in CONFIGURATIONS.into_iter().enumerate() {
        println!(
            "warm score vs nginx ({}): wrk gateway / nginx, {} (target >= 1.2x)",
            keepalive.label(),
            summary(&ratios[index])
        );
        if let Some(pinned) = &pinned {
            println!(
                "                  the same with wrk on its own core, the servers on another: {} (target >= 1.2x)",
                summary(&pinned[index])
            );
        }
    }
    drop(servers);
    emu.stop().await;
    Ok(())
}
