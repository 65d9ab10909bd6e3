//! The `scoregate` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = scoregate::cli::Cli::parse();
    scoregate::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(scoregate::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints anyhow's whole cause chain on one line, without a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at two, unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives threads that allocate concurrently arenas of their own, up to eight per core;
/// the gateway's threads (actix workers, tokio workers, the fetch runtime, the blocking pool)
/// then leave freed memory scattered over many arenas, and a many-tenant gateway's resident
/// memory grows to about twice its live heap (issue 15, `docs/performance.md`). Two arenas
/// cost no throughput measurable here. Called first thing, before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
