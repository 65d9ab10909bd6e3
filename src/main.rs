//! The `scoregate` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use std::process::ExitCode;

/// jemalloc, not the system's malloc: with thousands of tenants, glibc's malloc kept the
/// gateway's resident memory at about twice its live heap (freed memory stays scattered over its
/// arenas); jemalloc, told by [`JEMALLOC_CONF`] to return freed pages within a second, keeps it
/// near the live heap, for the same throughput (issue 15, `docs/performance.md`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (the `_RJEM_MALLOC_CONF` environment variable, read
/// after these, overrides them): a background thread purges freed pages instead of the
/// allocating threads, dirty pages go back to the system after one second (jemalloc's default
/// is ten), and pages are not kept "muzzy" (`MADV_FREE`d but still counted as resident).
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    one_malloc_arena_for_c();
    let cli = scoregate::cli::Cli::parse();
    let log = scoregate::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            drop(log);
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(scoregate::cli::run(cli));
    drop(runtime);
    // Every queued log line out before the last word.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints anyhow's whole cause chain on one line, without a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the C libraries' allocations (SQLite's page caches, aws-lc's) in one glibc arena,
/// unless `MALLOC_ARENA_MAX` says otherwise.
///
/// Rust's allocations go to jemalloc, but SQLite and aws-lc call glibc's `malloc`, which gives
/// each thread that allocates concurrently an arena of its own; sqlx runs each SQLite
/// connection on its own thread, and the arenas' freed memory stayed resident: one arena took
/// 3–4 MiB off a 10,000-tenant gateway with the history on (docs/performance.md). Those
/// allocations are few and short, so one arena costs no measurable throughput. Called first
/// thing, before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena_for_c() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena_for_c() {}
