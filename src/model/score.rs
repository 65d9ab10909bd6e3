//! The body of a score: one [`Reading`] of one metric (value, the source's time, the fetch
//! time) and what only Microsoft Secure Score has ([`SecureDetails`]: maximum, percentage,
//! [`Categories`], [`Comparison`]s).
//!
//! Defined once and serialised once: the API's score views flatten it, the Redis level of the
//! cache stores it, the history records it. Its serde form is the API's JSON, so its doc
//! comments are the OpenAPI descriptions, written for API consumers.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

/// The value of one metric of one tenant, when the source computed it and when the gateway
/// fetched it. `max_score`, `percentage`, `categories` and `comparisons` are present only for
/// `metric: secure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    /// The metric's value. `device`: Microsoft Secure Score for Devices, raw points (Defender
    /// gives no maximum), higher is better. `exposure`: 0–100, **lower is better**. `secure`:
    /// Microsoft Secure Score points, of `max_score`, higher is better.
    pub score: f64,
    /// When the source computed it, exactly as it wrote it (Defender's `time`, Graph's
    /// `createdDateTime`).
    pub time: String,
    /// When the gateway fetched it (RFC 3339, UTC).
    #[serde(with = "whole_seconds")]
    #[schema(value_type = String, example = "2026-11-29T10:00:00Z")]
    pub fetched_at: SystemTime,
    /// What only Microsoft Secure Score has (metric `secure`); `None` for the other metrics.
    /// Flattened: its fields sit beside `score`, absent together.
    #[serde(flatten)]
    #[schema(schema_with = secure_details_schema)]
    pub secure: Option<SecureDetails>,
}

/// The parts of a Microsoft Secure Score snapshot beside its current score: one struct, so
/// that what Graph adds later (per-control data) is one more field here, in every copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecureDetails {
    /// Only for `secure`: the points achievable with the tenant's licences.
    pub max_score: f64,
    /// Only for `secure`: `100 × score / max_score` (0–100, two decimals; 0 when `max_score`
    /// is 0).
    // Derived, never read from the source: whoever builds the details sets it with
    // `SecureDetails::percentage_of`, and every copy (Redis, the API) carries it as computed.
    pub percentage: f64,
    /// Only for `secure`: points achieved per control category (all five always present).
    pub categories: Categories,
    /// Only for `secure`: the average scores of comparable tenants, in Graph's order.
    pub comparisons: Vec<Comparison>,
}

impl SecureDetails {
    /// `100 × score / max_score`, rounded to two decimals; 0 when the maximum is 0 (a tenant
    /// with no licensed controls has nothing to achieve, not an infinite score).
    pub fn percentage_of(score: f64, max_score: f64) -> f64 {
        if max_score > 0.0 {
            (score / max_score * 10_000.0).round() / 100.0
        } else {
            0.0
        }
    }
}

/// The schema of [`Reading::secure`]: the properties of [`SecureDetails`], none required (the
/// other metrics have none of them).
fn secure_details_schema() -> RefOr<Schema> {
    optional_properties(<SecureDetails as utoipa::PartialSchema>::schema())
}

/// `schema` with no property required: the schema of a part flattened from an `Option`, whose
/// fields are present or absent together. Only objects change; anything else is returned as
/// it is.
pub fn optional_properties(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut object)) => {
            object.required.clear();
            RefOr::T(Schema::Object(object))
        }
        RefOr::T(Schema::AllOf(mut all_of)) => {
            all_of.items = all_of.items.into_iter().map(optional_properties).collect();
            RefOr::T(Schema::AllOf(all_of))
        }
        other => other,
    }
}

/// Points achieved per Secure Score control category: the sum of the `controlScores[].score`
/// of each `controlCategory` (compared case-insensitively). Every category is present, 0 when
/// the snapshot has no control of it. Categories Microsoft may add later are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Categories {
    /// Identity controls (Entra ID: MFA, admin roles, sign-in risk…).
    pub identity: f64,
    /// Data controls (Purview, DLP…).
    pub data: f64,
    /// Device controls (Defender for Endpoint, Intune). Not the `device` metric: a part of a
    /// different score, on a different scale.
    pub device: f64,
    /// App controls (Exchange Online, SharePoint, Teams…).
    pub apps: f64,
    /// Infrastructure controls (Azure resources).
    pub infrastructure: f64,
}

impl Categories {
    /// Sums control scores per category; unknown categories and null scores are skipped.
    pub fn sum<'a>(controls: impl IntoIterator<Item = (&'a str, Option<f64>)>) -> Self {
        let mut categories = Self::default();
        for (category, score) in controls {
            let Some(score) = score.filter(|score| score.is_finite()) else {
                continue;
            };
            let slot = match category.to_ascii_lowercase().as_str() {
                "identity" => &mut categories.identity,
                "data" => &mut categories.data,
                "device" => &mut categories.device,
                "apps" => &mut categories.apps,
                "infrastructure" => &mut categories.infrastructure,
                _ => continue,
            };
            *slot += score;
        }
        // Float sums of two-decimal scores pick up noise (0.30000000000000004).
        for slot in [
            &mut categories.identity,
            &mut categories.data,
            &mut categories.device,
            &mut categories.apps,
            &mut categories.infrastructure,
        ] {
            *slot = (*slot * 1e6).round() / 1e6;
        }
        categories
    }
}

/// The average Secure Score of a group of comparable tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Comparison {
    /// The group, as Graph names it: `AllTenants`, `TotalSeats` (tenants of a similar size) or
    /// `IndustryTypes`.
    pub basis: String,
    /// The group's average score, in points.
    pub average_score: f64,
}

/// RFC 3339 UTC with whole seconds (`2026-11-29T10:00:00Z`): how the API writes every instant.
pub fn rfc3339(at: SystemTime) -> String {
    match fast_rfc3339(at) {
        Some(fast) => fast.to_string(),
        None => {
            // Before 1970 (no fetch is; kept to the second down to year 0) or after 9999, which
            // RFC 3339 cannot write (the `time` crate would panic converting it): its last
            // second instead.
            const YEAR_0: i64 = -62_167_219_200;
            const LAST_OF_9999: i64 = 253_402_300_799;
            let seconds = match at.duration_since(std::time::UNIX_EPOCH) {
                Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                Err(before) => {
                    let before = before.duration();
                    let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                    // Whole seconds round down, as after 1970: 0.5 s before is 23:59:59.
                    -whole.saturating_add(i64::from(before.subsec_nanos() > 0))
                }
            };
            OffsetDateTime::from_unix_timestamp(seconds.clamp(YEAR_0, LAST_OF_9999))
                .ok()
                .and_then(|at| at.format(&Rfc3339).ok())
                .unwrap_or_default()
        }
    }
}

/// [`rfc3339`] without a `String`, by humantime's formatter (a third of the `time` crate's
/// cost, a thousand times per `/scores`), for the instants it formats: from 1970 to the end of
/// 9999 (before 1970 it would panic). `None` outside them.
fn fast_rfc3339(at: SystemTime) -> Option<humantime::Rfc3339Timestamp> {
    /// 10000-01-01T00:00:00Z, in seconds since 1970.
    const YEAR_10000: u64 = 253_402_300_800;
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    (since.as_secs() < YEAR_10000).then(|| humantime::format_rfc3339_seconds(at))
}

/// [`Reading::fetched_at`] as the API writes it, [`rfc3339`]; read back from any RFC 3339
/// text. Whole seconds: a reading stored in Redis comes back to the second, as callers see it.
mod whole_seconds {
    use super::{fast_rfc3339, rfc3339, OffsetDateTime, Rfc3339, SystemTime};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        match fast_rfc3339(*at) {
            Some(fast) => serializer.collect_str(&fast),
            None => serializer.serialize_str(&rfc3339(*at)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap().into()
    }

    #[test]
    fn a_secure_reading_is_written_as_the_api_shows_it_and_read_back_to_the_second() {
        let reading = Reading {
            score: 342.5,
            time: "2026-11-29T00:00:00Z".to_owned(),
            fetched_at: at("2026-11-29T10:00:00.75Z"),
            secure: Some(SecureDetails {
                max_score: 863.0,
                percentage: SecureDetails::percentage_of(342.5, 863.0),
                categories: Categories {
                    identity: 10.3,
                    ..Categories::default()
                },
                comparisons: vec![Comparison {
                    basis: "AllTenants".to_owned(),
                    average_score: 310.5,
                }],
            }),
        };
        let json = serde_json::to_value(&reading).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "score": 342.5, "time": "2026-11-29T00:00:00Z",
                "fetched_at": "2026-11-29T10:00:00Z", "max_score": 863.0, "percentage": 39.69,
                "categories": {"identity": 10.3, "data": 0.0, "device": 0.0, "apps": 0.0,
                               "infrastructure": 0.0},
                "comparisons": [{"basis": "AllTenants", "average_score": 310.5}]
            })
        );
        let back: Reading = serde_json::from_value(json).unwrap();
        assert_eq!(
            back,
            Reading {
                fetched_at: at("2026-11-29T10:00:00Z"),
                ..reading
            }
        );
    }

    #[test]
    fn a_reading_of_another_metric_has_no_secure_fields_and_reads_back_without_them() {
        let reading = Reading {
            score: 40.0,
            time: "t".to_owned(),
            fetched_at: at("2026-11-29T10:00:00Z"),
            secure: None,
        };
        let json = serde_json::to_value(&reading).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"score": 40.0, "time": "t", "fetched_at": "2026-11-29T10:00:00Z"})
        );
        assert_eq!(serde_json::from_value::<Reading>(json).unwrap(), reading);
    }

    #[test]
    fn instants_are_written_to_the_second_in_every_year_without_a_panic() {
        use std::time::{Duration, UNIX_EPOCH};
        let by_time = |at: SystemTime| {
            let at = OffsetDateTime::from(at);
            at.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap()
        };
        for (at, text) in [
            (UNIX_EPOCH, "1970-01-01T00:00:00Z"),
            (
                UNIX_EPOCH + Duration::new(1_795_000_000, 999_999_999),
                "2026-11-18T11:06:40Z",
            ),
            (
                UNIX_EPOCH + Duration::new(253_402_300_799, 500_000_000),
                "9999-12-31T23:59:59Z",
            ),
        ] {
            assert_eq!(rfc3339(at), text);
            assert_eq!(rfc3339(at), by_time(at), "the same as the time crate's");
            let reading = Reading {
                score: 1.0,
                time: "t".to_owned(),
                fetched_at: at,
                secure: None,
            };
            let json = serde_json::to_string(&reading).unwrap();
            assert!(
                json.contains(&format!("\"fetched_at\":\"{text}\"")),
                "{json}"
            );
        }
        // Outside humantime's years: the time crate's formatter, no panic.
        let before = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
        let after = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400 * 400);
        assert_eq!(
            rfc3339(after),
            "9999-12-31T23:59:59Z",
            "the last second RFC 3339 writes"
        );
    }

    #[test]
    fn a_zero_maximum_is_zero_percent() {
        assert_eq!(SecureDetails::percentage_of(0.0, 0.0), 0.0);
        assert_eq!(SecureDetails::percentage_of(1.0, 3.0), 33.33);
    }
}
