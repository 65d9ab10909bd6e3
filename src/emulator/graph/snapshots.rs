//! The emulated Secure Score snapshots: a catalogue of controls in five categories, and per
//! tenant and day a deterministic snapshot (score, controls, comparisons, and the fields Graph
//! sends undocumented), paged into the `secureScores` answer.

use super::{Page, ODATA_CONTEXT, SNAPSHOT_DAYS};
use crate::emulator::clock::defender_time;
use crate::emulator::tenants::{mix, TenantRecord};
use crate::wire::{
    AverageComparativeScore, ControlScore, SecureScore, SecureScores, SecurityVendorInformation,
};
use serde_json::Value;
use time::OffsetDateTime;

/// A control of the emulated catalogue: name, category, maximum points, description.
struct Control {
    name: &'static str,
    category: &'static str,
    max_points: f64,
    description: &'static str,
}

/// The controls an emulated tenant may have, five categories. The first of each category is
/// always present, so every tenant has all five categories.
const CONTROLS: &[Control] = &[
    Control {
        name: "AdminMFAV2",
        category: "Identity",
        max_points: 10.0,
        description:
            "Ensure multifactor authentication is enabled for all users in administrative roles",
    },
    Control {
        name: "MFARegistrationV2",
        category: "Identity",
        max_points: 9.0,
        description: "Ensure all users can complete multifactor authentication",
    },
    Control {
        name: "BlockLegacyAuthentication",
        category: "Identity",
        max_points: 8.0,
        description: "Enable Conditional Access policies to block legacy authentication",
    },
    Control {
        name: "SigninRiskPolicy",
        category: "Identity",
        max_points: 7.0,
        description: "Turn on sign-in risk policy",
    },
    Control {
        name: "UserRiskPolicy",
        category: "Identity",
        max_points: 7.0,
        description: "Turn on user risk policy",
    },
    Control {
        name: "SelfServicePasswordReset",
        category: "Identity",
        max_points: 1.0,
        description: "Enable self-service password reset",
    },
    Control {
        name: "OneAdmin",
        category: "Identity",
        max_points: 1.0,
        description: "Designate more than one global admin",
    },
    Control {
        name: "DLPEnabled",
        category: "Data",
        max_points: 10.0,
        description: "Create Data Loss Prevention (DLP) policies",
    },
    Control {
        name: "InformationProtectionLabels",
        category: "Data",
        max_points: 5.0,
        description: "Ensure sensitivity labels are published",
    },
    Control {
        name: "mip_autosensitivitylabelspolicies",
        category: "Data",
        max_points: 3.0,
        description: "Extend sensitivity labels to content in Microsoft 365 data connectors",
    },
    Control {
        name: "scid_2010",
        category: "Device",
        max_points: 10.0,
        description: "Turn on Microsoft Defender Antivirus real-time protection",
    },
    Control {
        name: "scid_91",
        category: "Device",
        max_points: 9.0,
        description: "Block execution of potentially obfuscated scripts",
    },
    Control {
        name: "scid_2080",
        category: "Device",
        max_points: 8.0,
        description: "Turn on tamper protection",
    },
    Control {
        name: "scid_2095",
        category: "Device",
        max_points: 8.0,
        description: "Encrypt all supported drives with BitLocker",
    },
    Control {
        name: "scid_6000",
        category: "Device",
        max_points: 10.0,
        description: "Update Windows operating systems",
    },
    Control {
        name: "mdo_safeattachments",
        category: "Apps",
        max_points: 8.0,
        description: "Turn on Safe Attachments in block mode",
    },
    Control {
        name: "mdo_safelinksforOfficeApps",
        category: "Apps",
        max_points: 8.0,
        description: "Turn on Safe Links for Office applications",
    },
    Control {
        name: "exo_mailboxaudit",
        category: "Apps",
        max_points: 5.0,
        description: "Ensure mailbox auditing is turned on for all users",
    },
    Control {
        name: "mdo_zapspam",
        category: "Apps",
        max_points: 2.0,
        description: "Turn on zero-hour auto purge for spam",
    },
    Control {
        name: "CustomerLockBoxEnabled",
        category: "Apps",
        max_points: 1.0,
        description: "Turn on customer lockbox",
    },
    Control {
        name: "mdc_serversprotection",
        category: "Infrastructure",
        max_points: 10.0,
        description: "Turn on Microsoft Defender for Servers",
    },
    Control {
        name: "mdc_nsgrestricted",
        category: "Infrastructure",
        max_points: 6.0,
        description: "Restrict network security groups to the ports needed",
    },
    Control {
        name: "mdc_storagesecuretransfer",
        category: "Infrastructure",
        max_points: 3.0,
        description: "Require secure transfer to storage accounts",
    },
];

/// Whether tenant `index` has control number `control` (licence-dependent, stable over time).
fn has_control(seed: u64, index: u64, control: usize) -> bool {
    let first_of_category = control == 0
        || CONTROLS
            .get(control.wrapping_sub(1))
            .zip(CONTROLS.get(control))
            .is_some_and(|(previous, this)| previous.category != this.category);
    first_of_category || mix(&[seed, 0x5EC0, index, control as u64]) % 100 < 85
}

/// A value in [0, 1) from the hash of `parts`.
fn unit(parts: &[u64]) -> f64 {
    (mix(parts) >> 11) as f64 / (1u64 << 53) as f64
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
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
/// control scores sum to `currentScore`; `maxScore` is the sum of the tenant's controls' maxima.
pub(crate) fn snapshot(seed: u64, tenant: &TenantRecord, date_day: i64, day: i64) -> Value {
    let index = tenant.index as u64;
    let day_word = day as u64;
    // How well the tenant is run overall, and a slow improvement/regression wave over months.
    let posture = 0.30 + 0.55 * unit(&[seed, 0x5EC1, index]);
    let phase = unit(&[seed, 0x5EC2, index]) * std::f64::consts::TAU;
    let trend = 0.08 * ((day as f64) * std::f64::consts::TAU / 120.0 + phase).sin();

    let mut control_scores = Vec::new();
    let mut extras = Vec::new();
    let mut max_score = 0.0;
    for (number, control) in CONTROLS.iter().enumerate() {
        if !has_control(seed, index, number) {
            continue;
        }
        let bias = 0.6 * (unit(&[seed, 0x5EC3, index, number as u64]) - 0.5);
        let jitter = 0.04 * (unit(&[seed, 0x5EC4, index, number as u64, day_word]) - 0.5);
        let share = (posture + bias + trend + jitter).clamp(0.0, 1.0);
        let score = round2(control.max_points * share);
        max_score += control.max_points;
        control_scores.push(ControlScore {
            control_category: control.category.to_owned(),
            control_name: control.name.to_owned(),
            description: Some(control.description.to_owned()),
            score: Some(score),
        });
        extras.push((score, control.max_points));
    }
    let current_score = round2(
        control_scores
            .iter()
            .filter_map(|control| control.score)
            .sum::<f64>(),
    );

    let active_users = 20 + (mix(&[seed, 0x5EC5, index]) % 4_980) as i64;
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
        control_scores,
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
    add_undocumented_fields(&mut value, &extras, day, seats_share);
    value
}

/// What real answers carry beyond the documented schema, so that clients prove they ignore it:
/// `scoreInPercentage`, `implementationStatus`, `lastSynced` and `controlState` on controls;
/// seat ranges on `TotalSeats`; `industryName` on `IndustryTypes`.
fn add_undocumented_fields(value: &mut Value, controls: &[(f64, f64)], day: i64, seats: f64) {
    let synced = OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400))
        .map(defender_time)
        .unwrap_or_default();
    if let Some(list) = value.get_mut("controlScores").and_then(Value::as_array_mut) {
        for (control, (score, max_points)) in list.iter_mut().zip(controls) {
            let percentage = if *max_points > 0.0 {
                round2(score / max_points * 100.0)
            } else {
                0.0
            };
            if let Some(fields) = control.as_object_mut() {
                fields.insert("scoreInPercentage".into(), percentage.into());
                fields.insert(
                    "implementationStatus".into(),
                    format!("{percentage}% of the recommended configuration is in place").into(),
                );
                fields.insert("lastSynced".into(), synced.clone().into());
                fields.insert(
                    "controlState".into(),
                    if percentage >= 100.0 {
                        "Completed"
                    } else {
                        "Default"
                    }
                    .into(),
                );
            }
        }
    }
    if let Some(list) = value
        .get_mut("averageComparativeScores")
        .and_then(Value::as_array_mut)
    {
        for comparison in list {
            let Some(fields) = comparison.as_object_mut() else {
                continue;
            };
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
) -> Value {
    let today = now.unix_timestamp().div_euclid(86_400);
    let available = u64::from(SNAPSHOT_DAYS);
    let first = page.skip.min(available);
    let last = page
        .top
        .map_or(available, |top| first.saturating_add(top).min(available));
    let value: Vec<Value> = (first..last)
        .map(|back| snapshot(seed, tenant, today - back as i64, score_day - back as i64))
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

    #[test]
    fn the_catalogue_covers_the_five_categories() {
        let mut categories: Vec<&str> = CONTROLS.iter().map(|c| c.category).collect();
        categories.dedup();
        assert_eq!(
            categories,
            ["Identity", "Data", "Device", "Apps", "Infrastructure"]
        );
    }
}
