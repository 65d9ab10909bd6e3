//! `secure`: Microsoft Secure Score, Microsoft Graph's
//! `GET {graph_base}/v1.0/security/secureScores?$top=1` with a Graph token
//! (`SecurityEvents.Read.All`): the newest daily snapshot — score, maximum, categories,
//! comparisons, bounded — and, for the history's back-fill, up to 90 of them (`$top={days}`).
//! The same bytes give each snapshot's controls, and
//! `GET {graph_base}/v1.0/security/secureScoreControlProfiles` their profiles (paged).

use super::{Controls, Daily, Source};
use crate::controls::graph::{ControlProfilesPage, SecureScoresControls, SnapshotControls};
use crate::model::Metric;
use crate::upstream::{CallFailure, Categories, Comparison, DailyReadings, Reading, SecureDetails};
use crate::wire::{
    SecureScore, SecureScores, SECURE_SCORES_PATH, SECURE_SCORE_CONTROL_PROFILES_PATH,
};
use std::time::SystemTime;

/// The `secure` source.
pub const SOURCE: Source = Source {
    metric: Metric::Secure,
    path: SECURE_SCORES_PATH,
    query: &[("$top", "1")],
    read: read_secure_scores,
    daily: Some(Daily {
        days_parameter: "$top",
        skip_parameter: "$skip",
        read: read_secure_snapshots,
    }),
    controls: Some(Controls {
        profiles_path: SECURE_SCORE_CONTROL_PROFILES_PATH,
        snapshots: read_snapshot_controls,
        profiles: read_control_profiles,
    }),
};

/// The controls of every snapshot of a `secureScores` body, newest first, descriptions
/// dropped; empty when the body does not read (the score's own reading reports that).
fn read_snapshot_controls(body: &[u8]) -> Vec<SnapshotControls> {
    let Ok(answer) = serde_json::from_slice::<SecureScoresControls>(body) else {
        return Vec::new();
    };
    answer
        .value
        .into_iter()
        .map(|mut snapshot| {
            for entry in &mut snapshot.control_scores {
                entry.description = None;
            }
            snapshot
        })
        .collect()
}

/// One page of `secureScoreControlProfiles`.
fn read_control_profiles(body: &[u8]) -> Result<ControlProfilesPage, CallFailure> {
    serde_json::from_slice::<ControlProfilesPage>(body).map_err(|error| CallFailure::Unusable {
        detail: format!("Microsoft Graph answered an unusable control profiles page: {error}"),
    })
}

/// Most comparisons kept of one snapshot: Graph sends a handful (all tenants, similar seats,
/// the industry); the rest of an answer that carries more is not kept or cached.
pub const MAX_COMPARISONS: usize = 16;

/// Longest comparison basis kept, in characters (Graph's are short words).
pub(super) const MAX_BASIS_CHARS: usize = 64;

/// The newest snapshot of a `secureScores` body, with its categories and comparisons.
pub(super) fn read_secure_scores(body: &[u8]) -> Result<Reading, CallFailure> {
    let answer = parse_secure_scores(body)?;
    // Graph lists newest first; `$top=1` asks for that one alone.
    let Some(snapshot) = answer.value.into_iter().next() else {
        return Err(CallFailure::Unusable {
            detail: "Microsoft Graph holds no Secure Score snapshot for this tenant yet".to_owned(),
        });
    };
    snapshot_reading(snapshot)
}

/// Every usable snapshot of a `secureScores` body, newest first (Graph's order); snapshots
/// whose numbers are not finite are left out (but counted). An empty page is no error: a new
/// tenant has none.
fn read_secure_snapshots(body: &[u8]) -> Result<DailyReadings, CallFailure> {
    let snapshots = parse_secure_scores(body)?.value;
    Ok(DailyReadings {
        snapshots: snapshots.len(),
        readings: snapshots
            .into_iter()
            .filter_map(|snapshot| snapshot_reading(snapshot).ok())
            .collect(),
    })
}

/// A `secureScores` body.
fn parse_secure_scores(body: &[u8]) -> Result<SecureScores, CallFailure> {
    serde_json::from_slice::<SecureScores>(body).map_err(|error| CallFailure::Unusable {
        detail: format!("Microsoft Graph answered an unusable body: {error}"),
    })
}

/// One snapshot as a reading, with its categories and comparisons.
fn snapshot_reading(snapshot: SecureScore) -> Result<Reading, CallFailure> {
    if !snapshot.current_score.is_finite() || !snapshot.max_score.is_finite() {
        return Err(CallFailure::Unusable {
            detail: "Microsoft Graph answered a score that is not a finite number".to_owned(),
        });
    }
    let categories = Categories::sum(
        snapshot
            .control_scores
            .iter()
            .map(|control| (control.control_category.as_str(), control.score)),
    );
    let comparisons = snapshot
        .average_comparative_scores
        .iter()
        .take(MAX_COMPARISONS)
        .filter_map(|average| {
            Some(Comparison {
                basis: average.basis.chars().take(MAX_BASIS_CHARS).collect(),
                average_score: average.average_score.filter(|score| score.is_finite())?,
            })
        })
        .collect();
    Ok(Reading {
        score: snapshot.current_score,
        time: snapshot.created_date_time,
        fetched_at: SystemTime::now(),
        secure: Some(SecureDetails {
            max_score: snapshot.max_score,
            percentage: SecureDetails::percentage_of(snapshot.current_score, snapshot.max_score),
            categories,
            comparisons,
        }),
    })
}
