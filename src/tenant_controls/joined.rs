//! What the controls routes get of a tenant: its joined controls and their snapshot.

use crate::controls::TenantControl;
use crate::model::Reading;
use std::sync::Arc;

/// A tenant's controls as last joined, with what the routes show of their snapshot.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The snapshot's time, score, maximum and fetch time.
    pub snapshot: Snapshot,
    /// Its controls, in Graph's order.
    pub controls: Arc<[TenantControl]>,
    /// Whether they were joined with fetched profiles (else: ids, categories and scores only).
    pub profiled: bool,
}

/// What the controls routes show of the `secure` snapshot the controls are of: the reading's
/// time, score, maximum and fetch time, without its categories and comparisons (the score's
/// cache holds those; 10,000 tenants' copies here would be megabytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Graph's `createdDateTime` of the snapshot.
    pub time: Box<str>,
    /// When scoregate read it.
    pub fetched_at: std::time::SystemTime,
    /// Its score.
    pub score: f64,
    /// Its maximum, when Graph sent one.
    pub max_score: Option<f64>,
}

impl Snapshot {
    /// What is kept of `reading`.
    pub fn of(reading: &Reading) -> Self {
        Self {
            time: reading.time.as_str().into(),
            fetched_at: reading.fetched_at,
            score: reading.score,
            max_score: reading.secure.as_ref().map(|secure| secure.max_score),
        }
    }
}
