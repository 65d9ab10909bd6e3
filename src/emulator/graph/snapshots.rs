//! The emulated Secure Score snapshots: per tenant and day a deterministic snapshot (score,
//! controls, comparisons, and the fields Graph sends undocumented), paged into the
//! `secureScores` answer. The controls themselves are [`super::controls`]'.

use super::catalogue::catalogue;
use super::controls::{
    control_entries, day_controls, population, round2, tenant_controls, tenant_states, unit,
};
use super::{Page, ODATA_CONTEXT, SNAPSHOT_DAYS};
use crate::emulator::tenants::{mix, TenantRecord};
use crate::wire::{AverageComparativeScore, SecureScore, SecureScores, SecurityVendorInformation};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// How a snapshot's `averageComparativeScores` come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparisons {
    /// The three bases, with their per-category averages.
    Present,
    /// As during Microsoft outages: `-1` or `[]`, depending on the day.
    Outage,
}

/// `yyyy-mm-dd` of a day number (days since the Unix epoch).
fn date_of(day: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    ))
}

/// The snapshot of `tenant` dated day number `date_day`, its values those of day number `day`
/// (the same unless the score date is pinned): deterministic in (seed, tenant, day). The
/// control scores sum to `currentScore`; `maxScore` is the sum of the tenant's controls' maxima
/// (their profiles' `maxScore`).
pub(crate) fn snapshot(
    seed: u64,
    tenant: &TenantRecord,
    date_day: i64,
    day: i64,
    comparisons: Comparisons,
) -> Value {
    let index = tenant.index as u64;
    let day_word = day as u64;
    let controls = tenant_controls(seed, index);
    let states = tenant_states(seed, index, &controls);
    let values = day_controls(seed, index, day, &controls, &states);
    let max_score: f64 = controls
        .iter()
        .filter_map(|number| catalogue().get(*number))
        .map(|control| control.max_score)
        .sum();
    let current_score = round2(values.iter().map(|control| control.score).sum::<f64>());

    let (active_users, _) = population(seed, index);
    let active_users = active_users as i64;
    let licensed_users = active_users + (mix(&[seed, 0x5EC6, index]) % 200) as i64;
    let average = |salt: u64, share: f64| {
        let wobble = 0.02 * (unit(&[seed, salt, index, day_word]) - 0.5);
        round2(max_score * (share + wobble))
    };
    let industry_share = 0.38 + 0.12 * unit(&[seed, 0x5EC7, index]);
    let seats_share = 0.36 + 0.14 * unit(&[seed, 0x5EC8, index]);
    let date = date_of(date_day).unwrap_or_default();
    let snapshot = SecureScore {
        id: format!("{}_{date}", tenant.tenant_id),
        azure_tenant_id: tenant.tenant_id.to_string(),
        created_date_time: format!("{date}T00:00:00Z"),
        current_score,
        max_score,
        active_user_count: Some(active_users),
        licensed_user_count: Some(licensed_users),
        enabled_services: [
            "HasAzureADPremium",
            "HasExchange",
            "HasSharePoint",
            "HasOD4B",
            "HasMDEP2",
            "HasMDO",
        ]
        .map(str::to_owned)
        .to_vec(),
        control_scores: Vec::new(),
        average_comparative_scores: vec![
            AverageComparativeScore {
                basis: "AllTenants".into(),
                average_score: Some(average(0x5EC9, 0.41)),
            },
            AverageComparativeScore {
                basis: "TotalSeats".into(),
                average_score: Some(average(0x5ECA, seats_share)),
            },
            AverageComparativeScore {
                basis: "IndustryTypes".into(),
                average_score: Some(average(0x5ECB, industry_share)),
            },
        ],
        vendor_information: Some(SecurityVendorInformation {
            provider: Some("SecureScore".into()),
            provider_version: None,
            sub_provider: None,
            vendor: Some("Microsoft".into()),
        }),
    };
    let mut value = serde_json::to_value(snapshot).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        let entries = control_entries(seed, index, date_day, &values);
        fields.insert("controlScores".into(), Value::Array(entries));
    }
    add_undocumented_fields(&mut value, seats_share);
    if comparisons == Comparisons::Outage {
        let outage = if mix(&[seed, 0x5EDC, index, date_day as u64]) % 2 == 0 {
            json!(-1)
        } else {
            json!([])
        };
        if let Some(fields) = value.as_object_mut() {
            fields.insert("averageComparativeScores".into(), outage);
        }
    }
    value
}

/// What real answers carry beyond the documented schema on comparisons (the controls' own are
/// [`control_entries`]'): seat ranges on `TotalSeats`, `industryName` on `IndustryTypes`, and
/// per-category averages (`identityScore`, `identityScoreMax`, …) on every basis.
fn add_undocumented_fields(value: &mut Value, seats: f64) {
    let Some(list) = value
        .get_mut("averageComparativeScores")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for comparison in list {
        let Some(fields) = comparison.as_object_mut() else {
            continue;
        };
        let share = fields
            .get("averageScore")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        for (category, max) in [
            ("identity", 90.0),
            ("data", 20.0),
            ("device", 170.0),
            ("apps", 130.0),
            ("infrastructure", 30.0),
        ] {
            fields.insert(
                format!("{category}Score"),
                json!(round2(share * max / 440.0)),
            );
            fields.insert(format!("{category}ScoreMax"), json!(max));
        }
        match fields.get("basis").and_then(Value::as_str) {
            Some("TotalSeats") => {
                let lower = if seats < 0.43 { "1" } else { "101" };
                let upper = if seats < 0.43 { "100" } else { "1000" };
                fields.insert("seatSizeRangeLowerValue".into(), lower.into());
                fields.insert("seatSizeRangeUpperValue".into(), upper.into());
            }
            Some("IndustryTypes") => {
                fields.insert("industryName".into(), "Professional services".into());
            }
            _ => {}
        }
    }
}

/// The answer of `GET /v1.0/security/secureScores` for `tenant` at emulated time `now`: the
/// snapshots of the last [`SNAPSHOT_DAYS`] days (today's at 00:00Z first), paged; their values
/// are those of `score_day` and the days before it.
pub(crate) fn secure_scores_body(
    seed: u64,
    tenant: &TenantRecord,
    now: OffsetDateTime,
    score_day: i64,
    page: Page,
    comparisons: Comparisons,
) -> Value {
    let today = now.unix_timestamp().div_euclid(86_400);
    let available = u64::from(SNAPSHOT_DAYS);
    let first = page.skip.min(available);
    let last = page
        .top
        .map_or(available, |top| first.saturating_add(top).min(available));
    let value: Vec<Value> = (first..last)
        .map(|back| {
            let back = back as i64;
            snapshot(seed, tenant, today - back, score_day - back, comparisons)
        })
        .collect();
    let envelope = SecureScores {
        odata_context: Some(ODATA_CONTEXT.to_owned()),
        value: Vec::new(),
    };
    let mut body = serde_json::to_value(envelope).unwrap_or(Value::Null);
    if let Some(fields) = body.as_object_mut() {
        fields.insert("value".into(), Value::Array(value));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::options::EmulatorOptions;
    use crate::emulator::tenants::Directory;

    fn directory() -> Directory {
        let options = EmulatorOptions {
            tenants: 6,
            ..EmulatorOptions::default()
        };
        Directory::generate(&options).expect("tenants")
    }

    #[test]
    fn ninety_snapshots_stay_well_under_the_gateways_default_body_limit() {
        // The gateway reads at most 4 MiB by default ([upstream] max_body_bytes) and its
        // back-fill asks for all 90 days at once.
        let directory = directory();
        let now = OffsetDateTime::from_unix_timestamp(20_000 * 86_400).unwrap();
        for tenant in &directory.tenants {
            let page = Page { top: None, skip: 0 };
            let body = secure_scores_body(7, tenant, now, 20_000, page, Comparisons::Present);
            let bytes = serde_json::to_vec(&body).unwrap().len();
            assert!(bytes < 3 * 1024 * 1024, "{bytes} bytes");
        }
    }

    #[test]
    fn scores_sum_to_the_current_score_and_maxima_to_the_max_score() {
        let directory = directory();
        for tenant in &directory.tenants {
            let value = snapshot(7, tenant, 20_000, 20_000, Comparisons::Present);
            let parsed: SecureScore = serde_json::from_value(value.clone()).unwrap();
            let sum: f64 = parsed.control_scores.iter().filter_map(|c| c.score).sum();
            assert!((sum - parsed.current_score).abs() < 1e-6);
            assert!((60..=80).contains(&parsed.control_scores.len()));
            let max: f64 = parsed
                .control_scores
                .iter()
                .filter_map(|c| catalogue().iter().find(|p| p.id == c.control_name))
                .map(|p| p.max_score)
                .sum();
            assert_eq!(max, parsed.max_score);
        }
    }

    #[test]
    fn an_outage_sends_minus_one_or_an_empty_list_for_comparisons() {
        let directory = directory();
        let tenant = &directory.tenants[0];
        let seen: std::collections::BTreeSet<String> = (20_000..20_010)
            .map(|day| {
                snapshot(7, tenant, day, day, Comparisons::Outage)["averageComparativeScores"]
                    .to_string()
            })
            .collect();
        assert_eq!(
            seen,
            ["-1".to_owned(), "[]".to_owned()].into_iter().collect()
        );
    }
}
