//! Which controls an emulated tenant has, their state (ignored, third party, reviewed) and their
//! daily values, and the `controlScores` entries of a snapshot with the fields real answers carry
//! undocumented — some numbers as strings, booleans as strings, HTML texts.
//!
//! Deterministic in (seed, tenant, day). A tenant's posture and each control's bias put it
//! somewhere between neglected and well run; a slow wave over months moves pass/fail controls
//! across their line now and then, shares of users and devices wander a little every day, and
//! a control that is done regresses for a few days now and then.

use super::catalogue::{catalogue, is_anchor, CatalogueControl, Kind};
use crate::emulator::tenants::mix;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// Fewest and most controls a tenant has.
const CONTROLS_PER_TENANT: (u64, u64) = (60, 80);

/// Chance that a control that is done regresses in a given block of [`REGRESSION_DAYS`] days.
const REGRESSION_CHANCE: f64 = 0.004;

/// How long a regression lasts, in days.
const REGRESSION_DAYS: i64 = 4;

/// A value in [0, 1) from the hash of `parts`.
pub(crate) fn unit(parts: &[u64]) -> f64 {
    (mix(parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// Rounds to two decimals, as Graph's scores are.
pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A control's state in a tenant (the newest of its profile's `controlStateUpdates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nobody said anything.
    Default,
    /// Risk accepted: scored 0.
    Ignored,
    /// Resolved through a third party: full points.
    ThirdParty,
    /// Reviewed, still scored as it is.
    Reviewed,
}

impl State {
    /// Graph's spelling.
    pub fn as_graph(self) -> &'static str {
        match self {
            State::Default => "Default",
            State::Ignored => "Ignored",
            State::ThirdParty => "ThirdParty",
            State::Reviewed => "Reviewed",
        }
    }
}

/// Numbers of the catalogue's controls tenant `index` has (licence-dependent, stable over
/// time), in catalogue order: every anchor, then the others ranked by a hash up to a count of
/// 60–80.
pub(crate) fn tenant_controls(seed: u64, index: u64) -> Vec<usize> {
    let (fewest, most) = CONTROLS_PER_TENANT;
    let wanted = fewest + mix(&[seed, 0x5ED0, index]) % (most - fewest + 1);
    let mut anchors = Vec::new();
    let mut others = Vec::new();
    for (number, control) in catalogue().iter().enumerate() {
        if control.kind == Kind::Deprecated {
            continue;
        }
        if is_anchor(number) {
            anchors.push(number);
        } else {
            others.push((mix(&[seed, 0x5EC0, index, number as u64]), number));
        }
    }
    others.sort_unstable();
    let room = usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .saturating_sub(anchors.len());
    let mut chosen: Vec<usize> = anchors
        .into_iter()
        .chain(others.into_iter().take(room).map(|(_, number)| number))
        .collect();
    chosen.sort_unstable();
    chosen
}

/// The state of each control tenant `index` has (as [`tenant_controls`] lists them): one to
/// three ignored, one or two resolved by a third party, up to two reviewed, the rest default.
/// Anchors keep the default state, so every snapshot shows each category's anchor scored.
pub(crate) fn tenant_states(seed: u64, index: u64, controls: &[usize]) -> Vec<State> {
    let ignored = 1 + mix(&[seed, 0x5ED4, index]) % 3;
    let third_party = 1 + mix(&[seed, 0x5ED5, index]) % 2;
    let reviewed = mix(&[seed, 0x5ED6, index]) % 3;
    let mut ranked: Vec<(u64, usize)> = controls
        .iter()
        .enumerate()
        .filter(|(_, number)| !is_anchor(**number))
        .map(|(position, number)| (mix(&[seed, 0x5ED7, index, *number as u64]), position))
        .collect();
    ranked.sort_unstable();
    let mut states = vec![State::Default; controls.len()];
    let plan = std::iter::repeat_n(State::Ignored, ignored as usize)
        .chain(std::iter::repeat_n(State::ThirdParty, third_party as usize))
        .chain(std::iter::repeat_n(State::Reviewed, reviewed as usize));
    for ((_, position), state) in ranked.into_iter().zip(plan) {
        if let Some(slot) = states.get_mut(position) {
            *slot = state;
        }
    }
    states
}

/// One control's values on one day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DayControl {
    /// Catalogue number.
    pub number: usize,
    /// Points achieved (two decimals).
    pub score: f64,
    /// Users or devices that meet it (shares), findings (`count` kind).
    pub count: Option<u64>,
    /// Users or devices in scope (shares).
    pub total: Option<u64>,
    /// Whether it is in place (the `on` kind).
    pub on: Option<bool>,
}

/// Users and devices of tenant `index`: what shares are counted in.
pub(crate) fn population(seed: u64, index: u64) -> (u64, u64) {
    let users = 20 + mix(&[seed, 0x5EC5, index]) % 4_980;
    let devices = 5 + mix(&[seed, 0x5ED8, index]) % 600;
    (users, devices)
}

/// The values of `controls` (numbers, with `states`) for tenant `index` on day number `day`.
pub(crate) fn day_controls(
    seed: u64,
    index: u64,
    day: i64,
    controls: &[usize],
    states: &[State],
) -> Vec<DayControl> {
    let posture = 0.30 + 0.55 * unit(&[seed, 0x5EC1, index]);
    let phase = unit(&[seed, 0x5EC2, index]) * std::f64::consts::TAU;
    let trend = 0.05 * ((day as f64) * std::f64::consts::TAU / 120.0 + phase).sin();
    let (users, devices) = population(seed, index);
    let day_word = day as u64;
    let block = day.div_euclid(REGRESSION_DAYS) as u64;
    controls
        .iter()
        .zip(states)
        .filter_map(|(number, state)| {
            let control = catalogue().get(*number)?;
            let key = *number as u64;
            let bias = 0.6 * (unit(&[seed, 0x5EC3, index, key]) - 0.5);
            let level = posture + bias + trend;
            let regressed = unit(&[seed, 0x5ED1, index, key, block]) < REGRESSION_CHANCE;
            let mut values = if control.kind.is_share() {
                let total = if control.kind == Kind::Devices {
                    devices
                } else {
                    users
                };
                // Done (every user or device) only while the slow trend keeps the share high:
                // day-to-day jitter moves partial shares, never in and out of done.
                let share = (level - 0.15) / 0.7;
                let mut count = if share >= 0.9 {
                    total
                } else {
                    let jitter = 0.04 * (unit(&[seed, 0x5EC4, index, key, day_word]) - 0.5);
                    let share = (share + jitter).clamp(0.0, 0.98);
                    ((total as f64) * share).round() as u64
                };
                if regressed && count == total {
                    count = total - (total / 10).max(1);
                }
                shared(control, *number, count, total)
            } else {
                let done = level > 0.5 && !regressed;
                pass_or_fail(control, *number, done, mix(&[seed, 0x5EDA, index, key]))
            };
            match state {
                State::ThirdParty => values.score = control.max_score,
                State::Ignored => values.score = 0.0,
                State::Default | State::Reviewed => {}
            }
            Some(values)
        })
        .collect()
}

fn shared(control: &CatalogueControl, number: usize, count: u64, total: u64) -> DayControl {
    let score = if total == 0 {
        control.max_score
    } else {
        round2(control.max_score * count as f64 / total as f64)
    };
    DayControl {
        number,
        score,
        count: Some(count),
        total: Some(total),
        on: None,
    }
}

fn pass_or_fail(control: &CatalogueControl, number: usize, done: bool, hash: u64) -> DayControl {
    DayControl {
        number,
        score: if done { control.max_score } else { 0.0 },
        count: (control.kind == Kind::Count).then_some(if done { 0 } else { 1 + hash % 5 }),
        total: None,
        on: (control.kind == Kind::On).then_some(done),
    }
}

/// `yyyy-mm-ddThh:mm:ssZ` of a Unix time (Graph's `lastSynced`).
fn graph_instant(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map(|at| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )
        })
        .unwrap_or_default()
}

/// The `implementationStatus` text (often HTML) of a control's values.
fn implementation_status(control: &CatalogueControl, values: &DayControl) -> String {
    let done = values.score >= control.max_score;
    match (control.kind, values.count, values.total) {
        (Kind::Users, Some(count), Some(total)) if control.service == "MDO" => {
            let percent = (count * 100).checked_div(total).unwrap_or(100);
            let how = if done {
                "configured securely"
            } else {
                "configured less securely than is recommended"
            };
            format!(
                "<p> {percent}% of users are affected by policies that are {how}&nbsp;</p><ul><li>Default - {count} users ({percent}%)&nbsp;</li></ul>"
            )
        }
        (Kind::Users, Some(count), Some(total)) => format!(
            "You have {} out of {total} users that aren&rsquo;t covered.",
            total - count
        ),
        (Kind::Devices, Some(count), Some(total)) => {
            format!("{} of {total} devices are exposed", total - count)
        }
        (Kind::Count, Some(findings), _) => format!("You have {findings} findings to resolve."),
        (Kind::On, ..) => format!("Feature in place: {done}."),
        _ if done => "The setting is compliant.".to_owned(),
        _ => String::new(),
    }
}

/// The `controlScores` entries of tenant `index`'s snapshot dated day number `date_day`.
/// Numbers are numbers, except on about one control in eight (never an anchor), which sends
/// `score` and `scoreInPercentage` as strings (`"0.0"`); `count`, `total` and `on` are always
/// strings, as Graph sends them.
pub(crate) fn control_entries(
    seed: u64,
    index: u64,
    date_day: i64,
    values: &[DayControl],
) -> Vec<Value> {
    values
        .iter()
        .filter_map(|values| {
            let control = catalogue().get(values.number)?;
            let key = values.number as u64;
            let percentage = if control.max_score > 0.0 {
                round2(values.score / control.max_score * 100.0)
            } else {
                100.0
            };
            let stringly = !is_anchor(values.number) && unit(&[seed, 0x5EDB, index, key]) < 0.125;
            let number = |value: f64| -> Value {
                if stringly {
                    Value::String(format!("{value:?}"))
                } else {
                    json!(value)
                }
            };
            // Each service syncs at its own time of the day before the snapshot.
            let service_hash = control
                .service
                .bytes()
                .fold(0u64, |hash, byte| hash.wrapping_mul(31) ^ u64::from(byte));
            let synced =
                (date_day - 1) * 86_400 + (mix(&[seed, index, service_hash]) % 86_400) as i64;
            let mut entry = Map::new();
            entry.insert("controlCategory".into(), control.category.into());
            entry.insert("controlName".into(), control.id.into());
            entry.insert("description".into(), control.description.into());
            entry.insert("score".into(), number(values.score));
            entry.insert("lastSynced".into(), graph_instant(synced).into());
            entry.insert(
                "implementationStatus".into(),
                implementation_status(control, values).into(),
            );
            if let Some(on) = values.on {
                entry.insert("on".into(), on.to_string().into());
            }
            if let Some(count) = values.count {
                entry.insert("count".into(), count.to_string().into());
            }
            if let Some(total) = values.total {
                entry.insert("total".into(), total.to_string().into());
            }
            entry.insert("scoreInPercentage".into(), number(percentage));
            Some(Value::Object(entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_have_60_to_80_controls_with_every_anchor_and_some_states() {
        let mut sizes = std::collections::BTreeSet::new();
        for index in 0..40 {
            let controls = tenant_controls(7, index);
            assert!((60..=80).contains(&controls.len()), "{}", controls.len());
            sizes.insert(controls.len());
            assert!((0..catalogue().len())
                .filter(|n| is_anchor(*n))
                .all(|anchor| controls.contains(&anchor)));
            let states = tenant_states(7, index, &controls);
            assert!(states.contains(&State::Ignored) && states.contains(&State::ThirdParty));
        }
        assert!(sizes.len() > 5, "{sizes:?}");
    }

    #[test]
    fn controls_move_from_day_to_day_and_sometimes_regress() {
        let mut regressions = 0;
        let mut moved = 0;
        for index in 0..20 {
            let controls = tenant_controls(7, index);
            let states = tenant_states(7, index, &controls);
            let mut previous = day_controls(7, index, 20_000, &controls, &states);
            for day in 20_001..20_091 {
                let today = day_controls(7, index, day, &controls, &states);
                for (before, now) in previous.iter().zip(&today) {
                    let max = catalogue()[now.number].max_score;
                    if before.score != now.score {
                        moved += 1;
                    }
                    if before.score >= max && now.score < max {
                        regressions += 1;
                    }
                }
                previous = today;
            }
        }
        assert!(moved > 200, "{moved}");
        // A few regressions per tenant and quarter (about one every week or two), not daily.
        assert!((20..250).contains(&regressions), "{regressions}");
    }

    #[test]
    fn entries_carry_the_undocumented_fields_and_some_strings() {
        let controls = tenant_controls(7, 3);
        let states = tenant_states(7, 3, &controls);
        let values = day_controls(7, 3, 20_000, &controls, &states);
        let entries = control_entries(7, 3, 20_000, &values);
        assert_eq!(entries.len(), controls.len());
        assert!(entries[0]["score"].is_number() && entries[0]["scoreInPercentage"].is_number());
        assert!(entries.iter().any(|e| e["score"].is_string()));
        assert!(entries.iter().any(|e| e["on"].is_string()));
        assert!(entries
            .iter()
            .any(|e| e["count"].is_string() && e["total"].is_string()));
        assert!(entries
            .iter()
            .all(|e| e["lastSynced"].as_str().is_some_and(|s| s.ends_with('Z'))));
    }
}
