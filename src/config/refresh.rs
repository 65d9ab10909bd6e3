//! `[refresh]`: the background refresher's serde type and its checks.

use super::checks::{check_range, wide};
use super::limits;
use serde::Deserialize;

/// `[refresh]`: the background refresher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Whether every tenant is kept warm in the background.
    pub enabled: bool,
    /// Most background fetches running at once (at least 1). The refresher also starts one only
    /// while more than half of `[upstream] max_in_flight` is free, so that interactive requests
    /// never wait for background work.
    pub max_concurrent: usize,
    /// Over how many seconds the first round of refreshes is spread after start-up; by default
    /// the refresh period (three quarters of `[cache] fresh_seconds`).
    pub startup_spread_seconds: Option<u64>,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            // 16 fetches at ~300 ms keep 10,000 tenants inside a 225 s refresh period.
            max_concurrent: 16,
            startup_spread_seconds: None,
        }
    }
}

/// `[refresh]`: the concurrency and the start-up spread in range.
pub(super) fn validate_refresh(refresh: &RefreshSettings, problems: &mut Vec<String>) {
    use limits::*;
    check_range(
        "refresh.max_concurrent",
        wide(refresh.max_concurrent),
        1,
        wide(MAX_REFRESH_CONCURRENT),
        problems,
    );
    if let Some(spread) = refresh.startup_spread_seconds {
        check_range(
            "refresh.startup_spread_seconds",
            spread,
            0,
            MAX_WINDOW_SECONDS,
            problems,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, problems, tempdir, write};
    use crate::config::Config;

    #[test]
    fn zero_counts_are_refused_where_they_would_stop_the_gateway() {
        let dir = tempdir();
        let path = write(
            &dir,
            "a.toml",
            "[refresh]\nmax_concurrent = 0\n[cache]\nmax_entries = 0\n",
        );
        let all = problems(Config::load_with_env(&path, env(&[]))).join("\n");
        assert!(
            all.contains("refresh.max_concurrent: must be greater than 0"),
            "{all}"
        );
        assert!(
            all.contains("cache.max_entries: must be greater than 0"),
            "{all}"
        );
    }
}
