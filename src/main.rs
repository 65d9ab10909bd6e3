//! The `scoregate` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use std::process::ExitCode;

/// jemalloc, not the system's malloc: with thousands of tenants, glibc's malloc kept the
/// gateway's resident memory at about twice its live heap (freed memory stays scattered over its
/// arenas); jemalloc, told by [`JEMALLOC_CONF`] to return freed pages within a second, keeps it
/// near the live heap, for the same throughput (issue 15, `docs/performance.md`).
///
/// Where jemalloc supports it (Linux among them; not Apple, Android or DragonFly) it is linked
/// unprefixed: it replaces `malloc` itself, so the C code in the binary — SQLite's page caches,
/// aws-lc — allocates from it as well, rather than from glibc arenas that kept 3–4 MiB of freed
/// pages resident with the history on.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (the `MALLOC_CONF` environment variable —
/// `_RJEM_MALLOC_CONF` where jemalloc is prefixed — read after these, overrides them): a
/// background thread purges freed pages instead of the allocating threads, dirty pages go back
/// to the system after one second (jemalloc's default is ten), pages are not kept "muzzy"
/// (`MADV_FREE`d but still counted as resident), and there is one arena per CPU, used by
/// whichever thread runs on that CPU (jemalloc's default is four per CPU, bound to threads:
/// more partly used pages for the same heap, 1.5–2.5 MiB at 10,000 tenants).
#[cfg(not(target_env = "msvc"))]
#[cfg_attr(
    any(
        target_os = "android",
        target_os = "dragonfly",
        target_vendor = "apple"
    ),
    unsafe(export_name = "_rjem_malloc_conf")
)]
#[cfg_attr(
    not(any(
        target_os = "android",
        target_os = "dragonfly",
        target_vendor = "apple"
    )),
    unsafe(export_name = "malloc_conf")
)]
static JEMALLOC_CONF: &[u8; 80] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,percpu_arena:percpu\0";

fn main() -> ExitCode {
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
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints anyhow's whole cause chain on one line, without a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
