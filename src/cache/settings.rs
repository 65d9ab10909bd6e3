//! `[cache]`: the cache's settings, defined here beside the code that uses them; `config`
//! reads and validates them.

use serde::Deserialize;

/// `[cache]`: how long scores are served without asking Defender again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Seconds a score is fresh (served as `cache`); Defender recomputes about once a day.
    pub fresh_seconds: u64,
    /// Seconds past freshness that the last good score may still be served when Defender fails.
    pub stale_if_error_seconds: u64,
    /// Most tenants' scores kept at once.
    pub max_entries: u64,
    /// Shortest interval, in milliseconds, between two fetches of one tenant forced by callers
    /// (`max_age` shorter than this, e.g. `max_age=0`): within it they are served the value last
    /// fetched. `0` disables the floor; at most one hour.
    pub min_forced_interval_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            fresh_seconds: 300,
            stale_if_error_seconds: 86_400,
            max_entries: 100_000,
            // A few seconds: a loop on `max_age=0` costs at most 12 calls a minute, while a
            // caller who really wants a new reading waits no longer than that.
            min_forced_interval_ms: 5_000,
        }
    }
}
