//! `[upstream]`: the settings of every tenant's calls, defined here beside the code that uses
//! them; `config` reads, validates and resolves them.

use crate::model::Metric;
use crate::tenants::{Cloud, Geo};
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// `[upstream]`: defaults for every tenant's calls to Entra ID and Defender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Cloud of tenants that name none.
    pub cloud: Cloud,
    /// Geo API host for commercial tenants that name none.
    pub geo: Option<Geo>,
    /// Authority host, required for `cloud = "custom"`, overriding the cloud's otherwise.
    pub authority_host: Option<Url>,
    /// Defender API base, required for `cloud = "custom"`, overriding the cloud's otherwise.
    pub api_base: Option<Url>,
    /// Token scope; default `https://api.securitycenter.microsoft.com/.default`.
    pub scope: Option<String>,
    /// Deadline of one fetch, token and retries included, in milliseconds.
    pub timeout_ms: u64,
    /// Deadline of one HTTP attempt, in milliseconds (bounded by what is left of `timeout_ms`).
    pub attempt_timeout_ms: u64,
    /// TCP + TLS connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Retries of a transient failure (5xx, transport, timeout) within the deadline.
    pub max_retries: u32,
    /// First retry back-off in milliseconds; doubles each retry, with full jitter.
    pub retry_base_ms: u64,
    /// Longest single retry back-off in milliseconds.
    pub retry_max_ms: u64,
    /// Upstream calls in flight at once, over all tenants.
    pub max_in_flight: usize,
    /// PEM file of extra CA certificates to trust (the emulator's, a corporate TLS proxy's).
    pub extra_ca_file: Option<PathBuf>,
    /// Calls per tenant per minute (Microsoft's limit: 100).
    pub requests_per_minute: u32,
    /// Calls per tenant per hour (Microsoft's limit: 1,500).
    pub requests_per_hour: u32,
    /// Metrics of tenants that name none: any of `device` (Defender's device score),
    /// `exposure` (Defender's exposure score) and `secure` (Microsoft Secure Score, through
    /// Microsoft Graph). Default `["device"]`.
    pub metrics: Vec<Metric>,
    /// Microsoft Graph base, required for `cloud = "custom"` when a tenant has `secure`,
    /// overriding the cloud's otherwise.
    pub graph_base: Option<Url>,
    /// Token scope of Graph calls; default `{graph_base}/.default` (for custom hosts
    /// `https://graph.microsoft.com/.default`).
    pub graph_scope: Option<String>,
    /// Graph calls per tenant per minute (Graph's limit: 150).
    pub graph_requests_per_minute: u32,
    /// Graph calls per tenant in flight at once (Graph's limit: 4).
    pub graph_max_concurrent: u32,
    /// Largest answer body read from Defender or Graph, in bytes (default 4 MiB; a 90-day
    /// Secure Score back-fill is about 0.5 MiB): a larger answer is dropped as it arrives and
    /// the fetch fails as unusable.
    pub max_body_bytes: usize,
    /// Hours a tenant's Secure Score control profiles are kept before they are asked for again
    /// (default 24; Microsoft changes them rarely). A caller's `max_age=0` on the controls
    /// route asks at once.
    pub control_profiles_refresh_hours: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            cloud: Cloud::Commercial,
            geo: None,
            authority_host: None,
            api_base: None,
            scope: None,
            timeout_ms: 10_000,
            attempt_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            max_retries: 2,
            retry_base_ms: 200,
            retry_max_ms: 2_000,
            max_in_flight: 64,
            extra_ca_file: None,
            requests_per_minute: 100,
            requests_per_hour: 1_500,
            metrics: vec![Metric::Device],
            graph_base: None,
            graph_scope: None,
            graph_requests_per_minute: 150,
            graph_max_concurrent: 4,
            max_body_bytes: 4 * 1024 * 1024,
            control_profiles_refresh_hours: 24,
        }
    }
}
