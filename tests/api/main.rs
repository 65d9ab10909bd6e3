//! scoregate's integration tests: one binary, the real servers on port 0, over real HTTPS.
//!
//! Each module drives one component through its public surface and asserts status, body,
//! headers and the emulator's counters of what reached "Microsoft".

mod alerts;
mod alerts_controls;
mod alerts_delivery;
mod alerts_e2e;
mod alerts_e2e_process;
mod alerts_endpoints;
mod alerts_paging;
mod alerts_rules;
mod auth;
mod check_tenants;
mod cli;
mod cluster;
mod cluster_config;
mod cluster_quota;
mod control_history;
mod control_history_route;
mod controls;
mod controls_portfolio;
mod deploy_kit;
mod docs_links;
mod emulator;
mod entra;
mod entra_cluster;
mod entra_keys;
mod entra_refusals;
mod exposition;
mod gateway;
mod hardening_config;
mod hardening_contract;
mod hardening_document;
mod hardening_edge;
mod hardening_fetch;
mod helpers;
mod history;
mod history_reads;
mod history_routes;
mod history_wiring;
mod history_writer;
mod layers;
mod openapi;
mod operations;
mod operations_logs;
mod operations_reload;
mod postgres;
mod quota_stores;
mod scores;
mod scores_startup;
mod sources;
mod storage;
mod structure;
mod tenant_rebinding;
mod token;
