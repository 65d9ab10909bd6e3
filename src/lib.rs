//! scoregate: a multi-tenant gateway for Microsoft Defender for Endpoint's device secure score.
//!
//! Managed service providers hold one app registration per customer tenant (or one multi-tenant
//! app consented into each). scoregate holds those registrations, fetches every tenant's
//! `GET /api/configurationScore` without breaking Microsoft's limits, caches the answers and
//! serves them through one documented HTTP API.
//!
//! # Layout
//!
//! The gateway, the product (`cargo build --no-default-features` builds only this):
//!
//! - [`cli`]: the command line (`serve`, `check-config`, `openapi`, `keygen`, `healthcheck`; with
//!   the `emulator` feature also `demo`, `emulate` and `bench`).
//! - [`wire`]: the bytes Entra ID and Defender put on the wire; the only types the gateway and the
//!   emulator share.
//! - [`code`]: the stable error codes, their texts, HTTP statuses and OpenAPI schema.
//! - [`config`]: typed settings from TOML plus environment overrides, validated at load.
//! - [`tenants`]: the registry of app registrations and the table of clouds and hosts.
//! - [`auth`]: callers: API keys (stored as digests), their tenant scopes and request rates.
//! - [`credential`]: client secrets and certificates (client assertions signed in Rust).
//! - [`token`]: one azure_identity credential per registration; bearer tokens cached and renewed.
//! - [`upstream`]: the one shared HTTPS client and the score sources behind `ScoreSource`, one
//!   per metric (Defender's `configurationScore` and `exposureScore`, Graph's `secureScores`):
//!   one call with a token, a reading or the failure's facts.
//! - [`quota`]: the outbound limits' state behind `QuotaStore`: per-tenant (and per upstream
//!   service) rate windows on tokio's clock, 429 cool-downs, failure back-off.
//! - [`policy`]: the outbound policy stack, composed once in a documented order: gate (cool-down,
//!   back-off) → retries (quota → in-flight cap → token → call), and the pure failure classifier.
//! - [`cache`]: the score cache: fresh and stale windows, single flight, stale-if-error, over a
//!   `ScoreStore` (moka today).
//! - [`fanout`]: `GET /scores` without HTTP: filters, concurrent fetch within a deadline, summary,
//!   order and signed cursors.
//! - [`refresher`]: keeps every tenant warm in the background, spread out and behind interactive
//!   requests.
//! - [`service`]: the shared services built once, and one function per use case.
//! - [`api`]: routes, OpenAPI, problem+json errors, request ids.
//! - [`app`]: start-up: services, listener, HTTP server.
//! - [`lifecycle`]: process signals: graceful shutdown (SIGTERM, SIGINT) and live reload (SIGHUP).
//! - [`metrics`]: the Prometheus registry every component records into, served at `/metrics`.
//! - [`telemetry`]: logging set-up.
//!
//! The test rig, behind the default-on Cargo feature `emulator` (it alone needs rcgen and an
//! HTTPS server; it uses [`wire`] from the gateway, and `demo`/`bench` drive [`app`] and
//! [`config`] as an operator would):
//!
//! - `emulator`: a local, faithful stand-in for Entra ID's token endpoint and the Defender API.
//! - `bench`: benchmarks that print figures (speed and memory targets live here, not in tests).
//! - `demo`: `scoregate demo`, the emulator and the gateway in one process.

pub mod api;
pub mod app;
pub mod auth;
#[cfg(feature = "emulator")]
pub mod bench;
pub mod cache;
pub mod cli;
pub mod code;
pub mod config;
pub mod credential;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod fanout;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod quota;
pub mod refresher;
pub mod service;
pub mod telemetry;
pub mod tenants;
pub mod token;
pub mod upstream;
pub mod wire;
