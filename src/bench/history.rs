//! Benchmark of the score history on SQLite (the embedded default): the writer's ingest rate
//! with many tenants, a 90-day history query for one tenant, the `changes` look-up and sort
//! behind `/scores?sort=change_7d`, the database size projected for a long retention, and the
//! portfolio (`/scores/history`) over a full portfolio's retention, and the per-control
//! history's size projected to 1,000 tenants × 70 controls × a year.
//!
//! Figures are printed next to their targets: queries p50 < 10 ms, the projection under
//! 2 GiB, a one-tenant caller's portfolio in < 1 s with RSS growth < 50 MB, the per-control
//! history under 300 MB. Everything runs in
//! this process on the shared cores, in scratch directories removed at the end.

use crate::config::HistoryConfig;
use crate::history::{
    DailySnapshot, History, Interval, Metric, Reading, Store, DAY, ROLL_UP_AFTER_DAYS,
};
use crate::metrics::HistoryMetrics;
use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Options of `scoregate bench history`.
#[derive(Debug, clap::Args)]
pub struct HistoryBenchArgs {
    /// Tenants of the ingest phase and of the `change_7d` phase.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// Readings per tenant in the ingest phase (one per day, going back).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Tenants given a full retention of points for the size projection and the 90-day query.
    #[arg(long, default_value_t = 50)]
    pub sample_tenants: usize,
    /// Retention of the projection, in days.
    #[arg(long, default_value_t = 400)]
    pub days: i64,
    /// Tenants the projection is for.
    #[arg(long, default_value_t = 10_000)]
    pub projected_tenants: u64,
    /// Repetitions of each query for its percentiles.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Tenants of the portfolio phase, each with a full retention of points (`--days`): 30
    /// days hourly, the rest daily; 0 skips the phase.
    #[arg(long, default_value_t = 10_000)]
    pub portfolio_tenants: usize,
    /// Tenants given a year of per-control history (70 controls) for its size projection to
    /// 1,000 tenants; 0 skips the phase.
    #[arg(long, default_value_t = 20)]
    pub control_tenants: usize,
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("scoregate-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).context("a scratch directory")?;
        Ok(Self(dir))
    }

    fn url(&self, file: &str) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join(file).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `met` or `MISSED`, for a figure against its target.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The database file and its WAL, in bytes.
fn database_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

fn tenant(index: usize) -> String {
    format!("tenant-{index:05}")
}

/// [`tenant`] as the id a reading is keyed by.
fn tenant_id(index: usize) -> anyhow::Result<crate::model::TenantId> {
    Ok(crate::model::TenantId::parse(&tenant(index))?)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: HistoryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants > 0 && args.rounds > 0 && args.sample_tenants > 0 && args.queries > 0,
        "--tenants, --rounds, --sample-tenants and --queries must be at least 1"
    );
    anyhow::ensure!(
        args.days > ROLL_UP_AFTER_DAYS,
        "--days must be more than {ROLL_UP_AFTER_DAYS}"
    );
    println!("scoregate bench history (SQLite)");
    let now = OffsetDateTime::now_utc();

    // Ingest: every reading through the writer (bounded channel, batched transactions).
    let ingest_dir = TempDir::create()?;
    let readings = args.tenants * args.rounds;
    let history = std::sync::Arc::new(History::start(
        &HistoryConfig {
            enabled: true,
            url: secrecy::SecretString::from(ingest_dir.url("ingest.db")),
            retention_days: 400,
            alerts_retention_days: 400,
            buffer: readings.clamp(1, 1_000_000),
            controls: false,
        },
        HistoryMetrics::default(),
        &tokio::runtime::Handle::current(),
    ));
    // Connected and migrated first: the figure is the writing, not the start.
    tokio::time::timeout(Duration::from_secs(30), history.flush())
        .await
        .context("the history database opens")?;
    let started = Instant::now();
    for round in 0..args.rounds {
        let at = now - time::Duration::days(round as i64);
        for index in 0..args.tenants {
            history.record(Reading::of_score(
                tenant_id(index)?,
                Metric::Device,
                300.0 + (index % 200) as f64 - round as f64,
                at,
            ));
        }
    }
    history.flush().await;
    let elapsed = started.elapsed();
    let stats = history.stats();
    println!(
        "ingest            {} readings of {} tenants in {:.2} s: {:.0} readings/s ({} written, {} dropped)",
        readings,
        args.tenants,
        elapsed.as_secs_f64(),
        stats.written as f64 / elapsed.as_secs_f64(),
        stats.written,
        stats.dropped
    );

    // /scores?sort=change_7d: the history's share is `History::changes` over every tenant (one
    // database read per tenant and UTC day, then memory), then the sort by change (the fan-out
    // over cached scores is `bench gateway`'s warm /scores). The first request of a day pays
    // the read; it is reported apart.
    let ids: Vec<String> = (0..args.tenants).map(tenant).collect();
    let mut latencies = Vec::with_capacity(args.queries);
    let repetitions = args.queries.min(50) + 1;
    let mut with_change = 0;
    let mut first_of_the_day = None;
    for _ in 0..repetitions {
        let started = Instant::now();
        let keys: Vec<crate::model::TenantId> = ids
            .iter()
            .filter_map(|id| crate::model::TenantId::parse(id).ok())
            .collect();
        let past = history.changes(&keys, Metric::Device, now).await?;
        let mut changes: Vec<(Option<f64>, &String)> = ids
            .iter()
            .map(|id| {
                let change = past
                    .get(id.as_str())
                    .and_then(|past| past.ago_7d)
                    .map(|then| 300.0 - then);
                (change, id)
            })
            .collect();
        changes.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| a.1.cmp(b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(b.1),
        });
        if first_of_the_day.is_none() {
            first_of_the_day = Some(started.elapsed());
        } else {
            latencies.push(started.elapsed());
        }
        with_change = changes
            .iter()
            .filter(|(change, _)| change.is_some())
            .count();
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    println!(
        "change_7d         changes + sort over {} tenants ({} with a 7-day point): p50 {:.2} ms, p99 {:.2} ms (target p50 < 10 ms: {}); first of the UTC day (database read) {:.2} ms",
        args.tenants,
        with_change,
        p50,
        percentile(&latencies, 0.99),
        verdict(p50 < 10.0),
        first_of_the_day.unwrap_or_default().as_secs_f64() * 1000.0
    );
    drop(history);

    // A full retention for a sample of tenants: 30 days of hourly points, older days rolled up
    // (what the roll-up leaves), one metric.
    let sample_dir = TempDir::create()?;
    let sample = Store::connect(&sample_dir.url("sample.db")).await?;
    let today = Interval::Day.bucket(now.unix_timestamp());
    let mut points = 0u64;
    for index in 0..args.sample_tenants {
        let id = tenant(index);
        let key = tenant_id(index)?;
        let hourly: Vec<Reading> = (0..ROLL_UP_AFTER_DAYS * 24)
            .map(|hour| {
                Reading::of_score(
                    key.clone(),
                    Metric::Device,
                    300.0 + (hour % 37) as f64 * 0.25,
                    now - time::Duration::hours(hour),
                )
            })
            .collect();
        sample.write(&hourly).await?;
        let daily: Vec<DailySnapshot> = (ROLL_UP_AFTER_DAYS + 1..=args.days)
            .filter_map(|day| {
                Some(DailySnapshot {
                    at: OffsetDateTime::from_unix_timestamp(today - day * 86_400).ok()?,
                    score: 300.0 + (day % 53) as f64 * 0.5,
                    max_score: None,
                })
            })
            .collect();
        points += sample.insert_daily(&id, Metric::Device, &daily).await?;
        points += hourly.len() as u64;
    }

    // A 90-day history by day for one tenant, as the route asks it.
    let mut latencies = Vec::with_capacity(args.queries);
    for query in 0..args.queries {
        let id = tenant(query % args.sample_tenants);
        let started = Instant::now();
        let found = sample
            .history(
                &id,
                Metric::Device,
                now - time::Duration::days(90),
                now,
                Interval::Day,
            )
            .await?;
        latencies.push(started.elapsed());
        anyhow::ensure!(found.len() >= 90, "the sample holds 90 days");
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    println!(
        "90-day history    one tenant by day: p50 {:.2} ms, p99 {:.2} ms over {} queries (target p50 < 10 ms: {})",
        p50,
        percentile(&latencies, 0.99),
        args.queries,
        verdict(p50 < 10.0)
    );

    // Size: closing the pool checkpoints the WAL into the file.
    sample.close().await;
    let bytes = database_bytes(&sample_dir.0);
    let per_point = bytes as f64 / points.max(1) as f64;
    let points_per_tenant = (ROLL_UP_AFTER_DAYS * 24 + (args.days - ROLL_UP_AFTER_DAYS)) as f64;
    let projected = per_point * points_per_tenant * args.projected_tenants as f64;
    let gib = projected / f64::from(1u32 << 30);
    println!(
        "size              {} points of {} tenants in {:.1} MiB: {:.0} bytes/point; {} tenants x {} days ({:.0} points each, one metric) = {:.2} GiB (target < 2 GiB: {})",
        points,
        args.sample_tenants,
        bytes as f64 / f64::from(1u32 << 20),
        per_point,
        args.projected_tenants,
        args.days,
        points_per_tenant,
        gib,
        verdict(gib < 2.0)
    );
    if args.portfolio_tenants > 0 {
        portfolio(&args, now).await?;
    }
    if args.control_tenants > 0 {
        control_history(args.control_tenants, now).await?;
    }
    Ok(())
}

/// The per-control history's size: `tenants` tenants × 70 controls × 365 days written through
/// the back-fill (rows only on change), each control changing on about 5 % of days, then the
/// file's growth per tenant projected to 1,000 tenants.
async fn control_history(tenants: usize, now: OffsetDateTime) -> anyhow::Result<()> {
    const CONTROLS: usize = 70;
    const DAYS: i64 = 365;
    const PROJECTED: f64 = 1_000.0;
    let dir = TempDir::create()?;
    let store = Store::connect(&dir.url("controls.db")).await?;
    store.close().await;
    let empty = database_bytes(&dir.0);
    let store = Store::connect(&dir.url("controls.db")).await?;
    let today = Interval::Day.bucket(now.unix_timestamp());
    // Graph-like ids: some long, some `scid_` numbers.
    let ids: Vec<String> = (0..CONTROLS)
        .map(|index| match index % 3 {
            0 => format!("scid_{}", 2000 + index),
            1 => format!("AdminMFAV2Registration{index}"),
            _ => format!("aad_sign_in_risk_policy_{index}"),
        })
        .collect();
    let started = Instant::now();
    for tenant_index in 0..tenants {
        // A deterministic stream: each control changes its score on about 1 day in 20.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ tenant_index as u64;
        let mut scores: Vec<f64> = (0..CONTROLS).map(|index| (index % 10) as f64).collect();
        let days: Vec<(OffsetDateTime, Vec<crate::history::ControlPoint>)> = (0..DAYS)
            .rev()
            .filter_map(|day| {
                let at = OffsetDateTime::from_unix_timestamp(today - day * DAY).ok()?;
                let points = ids
                    .iter()
                    .zip(scores.iter_mut())
                    .map(|(id, score)| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if seed % 20 == 0 {
                            *score = if *score >= 10.0 { 0.0 } else { *score + 1.0 };
                        }
                        crate::history::ControlPoint {
                            control: id.clone(),
                            score: *score,
                            max_score: Some(10.0),
                            state: crate::controls::State::Default,
                            category: None,
                        }
                    })
                    .collect();
                Some((at, points))
            })
            .collect();
        store
            .insert_control_days(&tenant(tenant_index), &days)
            .await?;
    }
    let elapsed = started.elapsed();
    let rows = store.control_rows().await?;
    store.close().await;
    let grown = database_bytes(&dir.0).saturating_sub(empty);
    let per_tenant = grown as f64 / tenants as f64;
    let projected_mb = per_tenant * PROJECTED / 1e6;
    println!(
        "control history   {tenants} tenants x {CONTROLS} controls x {DAYS} days, each control changing on ~5 % of days: {rows} rows ({:.1} per control and year), {:.1} MB in {:.2} s; projected by file growth per tenant x 1,000 tenants = {:.0} MB (target < 300 MB: {})",
        rows as f64 / (tenants * CONTROLS) as f64,
        grown as f64 / 1e6,
        elapsed.as_secs_f64(),
        projected_mb,
        verdict(projected_mb < 300.0)
    );
    Ok(())
}

/// The process's resident set and its peak since the last reset, in bytes (Linux; zeros
/// elsewhere).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident set (`VmHWM`) to the current one (Linux 4.0+).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The portfolio over `--portfolio-tenants` tenants × `--days` of points (the issue's
/// steady state: 10,000 × 400 days, 10.9 M points): a caller who sees one tenant, with the
/// longest hourly range and the daily defaults, then a caller who sees every tenant.
async fn portfolio(args: &HistoryBenchArgs, now: OffsetDateTime) -> anyhow::Result<()> {
    let dir = TempDir::create()?;
    let store = Store::connect(&dir.url("portfolio.db")).await?;
    let today = Interval::Day.bucket(now.unix_timestamp());
    let started = Instant::now();
    let mut points = 0u64;
    let ids: Vec<String> = (0..args.portfolio_tenants).map(tenant).collect();
    for chunk in ids.chunks(50) {
        let keys = chunk
            .iter()
            .map(|id| crate::model::TenantId::parse(id))
            .collect::<Result<Vec<_>, _>>()?;
        let hourly: Vec<Reading> = keys
            .iter()
            .enumerate()
            .flat_map(|(index, id)| {
                (0..ROLL_UP_AFTER_DAYS * 24).map(move |hour| {
                    Reading::of_score(
                        id.clone(),
                        Metric::Device,
                        300.0 + ((hour + index as i64) % 37) as f64,
                        now - time::Duration::hours(hour),
                    )
                })
            })
            .collect();
        store.write(&hourly).await?;
        points += hourly.len() as u64;
        for id in chunk {
            let daily: Vec<DailySnapshot> = (ROLL_UP_AFTER_DAYS + 1..=args.days)
                .filter_map(|day| {
                    Some(DailySnapshot {
                        at: OffsetDateTime::from_unix_timestamp(today - day * DAY).ok()?,
                        score: 300.0 + (day % 53) as f64,
                        max_score: None,
                    })
                })
                .collect();
            points += store.insert_daily(id, Metric::Device, &daily).await?;
        }
    }
    println!(
        "portfolio data    {} points of {} tenants x {} days in {:.1} s",
        points,
        args.portfolio_tenants,
        args.days,
        started.elapsed().as_secs_f64()
    );
    let one: HashSet<String> = ids.iter().take(1).cloned().collect();
    let every: HashSet<String> = ids.iter().cloned().collect();
    // (what, tenants, interval, days)
    let cases: [(&str, &HashSet<String>, Interval, i64); 4] = [
        (
            "one-tenant key",
            &one,
            Interval::Hour,
            Interval::Hour.max_range_days(),
        ),
        ("one-tenant key", &one, Interval::Day, 90),
        ("one-tenant key", &one, Interval::Day, 365),
        ("every-tenant key", &every, Interval::Day, 90),
    ];
    for (who, tenants, interval, days) in cases {
        reset_peak_rss();
        let (before, _) = rss();
        let started = Instant::now();
        let found = store
            .portfolio(
                tenants,
                Metric::Device,
                now - time::Duration::days(days),
                now,
                interval,
            )
            .await?;
        let elapsed = started.elapsed();
        let (_, peak) = rss();
        let growth = peak.saturating_sub(before) as f64 / 1e6;
        let target = if tenants.len() == 1 {
            format!(
                " (target < 1 s and < 50 MB: {})",
                verdict(elapsed < Duration::from_secs(1) && growth < 50.0)
            )
        } else {
            String::new()
        };
        println!(
            "portfolio         {who} ({} of {} tenants), interval={} over {days} days: {} points in {:.1} ms, RSS +{:.1} MB{target}",
            tenants.len(),
            args.portfolio_tenants,
            interval.as_str(),
            found.len(),
            elapsed.as_secs_f64() * 1000.0,
            growth,
        );
    }
    Ok(())
}
