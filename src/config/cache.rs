//! `[cache]`: the score cache. The serde type is the owner's ([`CacheSettings`], in `cache`);
//! here are its checks.

use super::checks::check_range;
use super::limits;
pub use crate::cache::CacheSettings;

/// `[cache]`: the windows and the entry count in range (moka panics on huge windows).
pub(super) fn validate_cache(cache: &CacheSettings, problems: &mut Vec<String>) {
    use limits::*;
    check_range(
        "cache.fresh_seconds",
        cache.fresh_seconds,
        1,
        MAX_WINDOW_SECONDS,
        problems,
    );
    check_range(
        "cache.stale_if_error_seconds",
        cache.stale_if_error_seconds,
        0,
        MAX_WINDOW_SECONDS,
        problems,
    );
    check_range(
        "cache.max_entries",
        cache.max_entries,
        1,
        MAX_CACHE_ENTRIES,
        problems,
    );
    check_range(
        "cache.min_forced_interval_ms",
        cache.min_forced_interval_ms,
        0,
        MAX_MIN_FORCED_INTERVAL_MS,
        problems,
    );
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, problems, tempdir, write};
    use crate::config::Config;

    #[test]
    fn the_minimum_forced_interval_defaults_to_five_seconds_and_is_bounded_by_an_hour() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "");
        let config = Config::load_with_env(&path, env(&[])).unwrap();
        assert_eq!(config.cache.min_forced_interval_ms, 5_000);
        let config = Config::load_with_env(
            &path,
            env(&[("SCOREGATE__CACHE__MIN_FORCED_INTERVAL_MS", "0")]),
        )
        .unwrap();
        assert_eq!(
            config.cache.min_forced_interval_ms, 0,
            "0 disables the floor"
        );
        let path = write(
            &dir,
            "b.toml",
            "[cache]\nmin_forced_interval_ms = 3600001\n",
        );
        let problems = problems(Config::load_with_env(&path, env(&[])));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("cache.min_forced_interval_ms: must be at most 3600000")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_moka_crashing_stale_window_is_refused_before_anything_is_built() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            "[cache]\nstale_if_error_seconds = 100000000000\n",
        );
        let problems = problems(Config::load_with_env(&path, env(&[])));
        assert_eq!(
            problems,
            ["cache.stale_if_error_seconds: must be at most 31536000, not 100000000000"]
        );
    }
}
