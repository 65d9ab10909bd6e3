//! Secure Score controls: what to fix, per tenant and across tenants. Pure logic, no I/O.
//!
//! A control is one recommendation in one tenant: an entry of a `secureScores` snapshot's
//! `controlScores` joined with the tenant's `secureScoreControlProfiles` by `controlName` =
//! profile `id`. This module reads both leniently ([`graph`]), turns their HTML into plain text
//! ([`text`]), keeps one copy of what tenants share ([`Interner`]: profiles per control and
//! version, status texts), and holds the logic of the routes that will serve them: a tenant's
//! controls filtered and sorted ([`list`]) and controls summed up across tenants
//! ([`summarize`]). It does not fetch, cache or serve anything.
//!
//! # Layout
//!
//! - [`kinds`]: `Category`, `Status` (done / partial / todo), `State` (default / ignored /
//!   third_party / reviewed): the closed sets and their spellings.
//! - [`graph`]: Graph's shapes, read leniently (`ControlScoreEntry`, `ControlProfile`, pages).
//! - [`text`]: HTML to plain text.
//! - `profile`: `Profile` (shared), `ProfileSet`, `TenantProfiles` (shared set + states).
//! - `interner`: [`Interner`], one copy of each profile version, profile set and status text.
//! - `control`: [`TenantControl`], the join, status, points to gain.
//! - `listing`: [`ControlFilter`], [`ControlSort`], [`list`].
//! - `summary`: [`ControlSummary`], [`summarize`].

mod control;
pub mod graph;
mod interner;
pub mod kinds;
mod listing;
mod profile;
mod summary;
pub mod text;

pub use control::TenantControl;
pub use interner::{Interner, InternerCounts};
pub use kinds::{Category, State, Status};
pub use listing::{list, ControlFilter, ControlSort};
pub use profile::{Profile, ProfileSet, TenantProfiles};
pub use summary::{summarize, ControlSummary, TODO_TENANTS_SHOWN};

#[cfg(test)]
mod tests;
