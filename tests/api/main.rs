//! scoregate's integration tests: one binary, the real servers on port 0, over real HTTPS.
//!
//! Each module drives one component through its public surface and asserts status, body,
//! headers and the emulator's counters of what reached "Microsoft".

mod alerts;
mod alerts_e2e;
mod alerts_endpoints;
mod alerts_paging;
mod auth;
mod cli;
mod cluster;
mod emulator;
mod gateway;
mod hardening_config;
mod hardening_contract;
mod hardening_edge;
mod hardening_fetch;
mod helpers;
mod history;
mod history_reads;
mod history_wiring;
mod layers;
mod openapi;
mod operations;
mod postgres;
mod quota_stores;
mod scores;
mod sources;
mod storage;
mod structure;
mod tenant_rebinding;
mod token;
