//! scoregate: a multi-tenant gateway for Microsoft's security scores of many tenants.
//!
//! Managed service providers hold one app registration per customer tenant (or one multi-tenant
//! app consented into each). scoregate holds those registrations, fetches every tenant's
//! Defender device and exposure scores and Microsoft Secure Score (Graph) without breaking
//! Microsoft's limits, caches, keeps and watches them, and serves them through one documented
//! HTTP API, alone or as several replicas sharing Redis and PostgreSQL.
//!
//! The documentation for users, operators and contributors is in `docs/` (`docs/index.md`);
//! how the pieces fit is `docs/contributing/layers.md`.
//!
//! # Layout
//!
//! One line per module. The gateway, the product (`cargo build --no-default-features` builds only
//! this). Dependencies point down these layers, top to bottom (a module uses its own row and
//! the rows below; the layers test in `tests/api/layers.rs` keeps that, and no cycle):
//!
//! 1. `cli`, `check`, `demo`, `bench`, `emulator` (the emulator uses only `wire`)
//! 2. `app`, `lifecycle`
//! 3. `api`
//! 4. `refresher`
//! 5. `service` (the composition root: wires the cache's observer to history and alerts)
//! 6. `config` (builds the settings types each owner below defines)
//! 7. `fanout`, `alerts`, `history`, `cluster`
//! 8. `cache`, `tenant_controls`
//! 9. `policy`
//! 10. `upstream`, `token`, `quota`, `auth`
//! 11. `tenants`, `credential`, `metrics`
//! 12. `model`, `wire`, `code`, `cursor`, `telemetry`, `controls` (vocabulary and pure logic)
//!
//! - [`cli`]: the command line; `demo`, `emulate` and `bench` with the `emulator` feature.
//! - [`check`]: `check-tenants` (one token and one score call per tenant and metric through the
//!   policy stack, each failure named with its fix) and `consent-url`.
//! - [`wire`]: the bytes Entra ID, Defender and Graph put on the wire; shared with the emulator.
//! - [`controls`]: Secure Score controls without I/O: Graph's control shapes read leniently,
//!   HTML to text, profiles shared across tenants, a tenant's list and the cross-tenant summary.
//! - [`model`]: the shared vocabulary (`TenantId`, `Metric`, `UpstreamService`, `ScoreKey`) and
//!   the score body (`Reading`, `SecureDetails`) the API, Redis and the history share; imports
//!   nothing of the crate.
//! - [`code`]: the stable error codes: text, HTTP status and OpenAPI schema, written once.
//! - [`config`]: TOML plus environment overrides; one file per section (`server`, `auth`,
//!   `upstream`, `cache`, `refresh`, `history`, `tenants/`, `alerts`, `cluster`) with its type,
//!   checks and resolution.
//! - [`tenants`]: the registry of app registrations (each with one `Endpoint` per upstream
//!   service: base URL, token scope, limits) and the table of clouds and hosts.
//! - [`auth`]: callers: API keys (stored as digests) and Entra ID access tokens (`entra`: the
//!   checks and the mapping to callers; `jwks`: the issuer's signing keys), their tenant scopes
//!   and request rates.
//! - [`credential`]: client secrets and certificates (client assertions signed in Rust).
//! - [`token`]: cached bearer tokens per registration (`identity`, `entra`: Entra's errors).
//! - [`upstream`]: the one shared HTTPS client and the score sources behind `ScoreSource`:
//!   `sources/`, one file per metric (path, query, reading of the answer) listed in `SOURCES`,
//!   beside each service's dialect (Defender's and Graph's error bodies).
//! - [`quota`]: rate windows (sliding logs), 429 cool-downs and back-off behind `QuotaStore`, on
//!   tokio's clock; the replica's share of the limits while Redis is away.
//! - [`policy`]: the outbound stack, forced-fetch floor → gate → retries (quota → tenant slots →
//!   cap → token → call), each a named policy; the classifier.
//! - [`cache`]: fresh and stale windows, single flight, stale-if-error over a `ScoreStore`;
//!   tells a `ReadingObserver` of every reading and failed fetch.
//! - [`tenant_controls`]: each tenant's controls: profiles fetched through the policy stack and
//!   kept (once a day by default), the newest snapshot joined with them; `ControlsObserver`.
//! - [`cursor`]: the one codec of every paging cursor: sealed, bound to the query and the caller.
//! - [`fanout`]: `GET /scores` without HTTP: filters, deadline, summary, order, signed cursors,
//!   and the budget that bounds how many tenants the answers being built hold at once.
//! - [`history`]: every reading kept (SQLite or PostgreSQL): writer, roll-up, retention, trends;
//!   per-control history (a row per change).
//! - [`alerts`]: rules over the metrics, their state and events, signed webhooks from an outbox.
//! - [`cluster`]: several replicas: cache, single flight, quota, leases and caller limits in Redis.
//! - [`refresher`]: keeps every tenant warm, spread out and behind interactive requests.
//! - [`service`]: the shared services built once, and one function per use case; its
//!   `record` observes the cache for the history, the alerts and the `secure` back-fill.
//! - [`api`]: routes, OpenAPI, problem+json errors, request ids, key and token checks, views.
//! - [`app`]: start-up: services, listener, HTTP server, then the refresher.
//! - [`lifecycle`]: process signals: graceful shutdown (SIGTERM, SIGINT) and reload (SIGHUP).
//! - [`metrics`]: the Prometheus registry every component records into, served at `/metrics` (the
//!   Prometheus text format, or OpenMetrics when asked for).
//! - [`telemetry`]: logging set-up.
//!
//! The test rig, behind the default-on Cargo feature `emulator` (it alone needs rcgen and an
//! HTTPS server; it uses [`wire`] from the gateway, and `demo`/`bench` drive [`app`] and
//! [`config`] as an operator would):
//!
//! - `emulator`: a local, faithful stand-in for Entra ID, Defender and Graph, over HTTPS; it
//!   also plays the MSP's own tenant, whose caller apps get tokens for scoregate.
//! - `bench`: benchmarks that print figures (`gateway`, `controls`, `emulator`, `history`, `cluster`).
//! - `demo`: `scoregate demo`, the emulator and the gateway in one process.

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
#[cfg(feature = "emulator")]
pub mod bench;
pub mod cache;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod code;
pub mod config;
pub mod controls;
pub mod credential;
pub mod cursor;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod fanout;
pub mod history;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod quota;
pub mod refresher;
pub mod service;
pub mod telemetry;
pub mod tenant_controls;
pub mod tenants;
pub mod token;
pub mod upstream;
pub mod wire;
