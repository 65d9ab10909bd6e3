//! Graph's `GET /v1.0/security/secureScoreControlProfiles` answer: every control of the
//! catalogue (also those the tenant's licences do not score, and retired ones), sorted by id as
//! Graph lists them, with the tenant's `controlStateUpdates`, HTML remediation texts, `?tid=`
//! in some action URLs, an undocumented and an unknown field, paged with an absolute
//! `@odata.nextLink`.

use super::catalogue::{catalogue, CatalogueControl, Kind};
use super::controls::{tenant_controls, tenant_states, State};
use super::Page;
use crate::emulator::tenants::{mix, TenantRecord};
use crate::wire::SECURE_SCORE_CONTROL_PROFILES_PATH;
use serde_json::{json, Value};

/// The `@odata.context` of the answer.
const PROFILES_CONTEXT: &str =
    "https://graph.microsoft.com/v1.0/$metadata#security/secureScoreControlProfiles";

/// Most profiles in one page, and the page size without `$top`: the catalogue takes two pages,
/// so that clients must follow `@odata.nextLink`.
pub(crate) const PROFILE_PAGE_SIZE: u64 = 50;

/// The page of profiles `page` asks for; `base` (`https://host:port`) starts the next link.
pub(crate) fn control_profiles_body(
    seed: u64,
    tenant: &TenantRecord,
    page: Page,
    base: &str,
) -> Value {
    let index = tenant.index as u64;
    let controls = tenant_controls(seed, index);
    let states = tenant_states(seed, index, &controls);
    let state_of = |number: usize| {
        controls
            .iter()
            .position(|n| *n == number)
            .and_then(|position| states.get(position).copied())
            .unwrap_or(State::Default)
    };
    let mut order: Vec<usize> = (0..catalogue().len()).collect();
    order.sort_by_key(|number| catalogue()[*number].id.to_ascii_lowercase());

    let size = page.top.unwrap_or(PROFILE_PAGE_SIZE).min(PROFILE_PAGE_SIZE);
    let available = order.len() as u64;
    let first = page.skip.min(available);
    let last = first.saturating_add(size).min(available);
    let value: Vec<Value> = order
        .get(first as usize..last as usize)
        .unwrap_or_default()
        .iter()
        .filter_map(|number| {
            let control = catalogue().get(*number)?;
            Some(profile(seed, tenant, *number, control, state_of(*number)))
        })
        .collect();
    let mut body = json!({
        "@odata.context": PROFILES_CONTEXT,
        "value": value,
    });
    if last < available && size > 0 {
        let top = page
            .top
            .map(|top| format!("$top={top}&"))
            .unwrap_or_default();
        let next = format!("{base}{SECURE_SCORE_CONTROL_PROFILES_PATH}?{top}$skip={last}");
        if let Some(fields) = body.as_object_mut() {
            fields.insert("@odata.nextLink".into(), next.into());
        }
    }
    body
}

/// Where a service's controls are fixed; some carry the tenant in `?tid=`, as real ones do.
fn action_url(service: &str, tenant: &TenantRecord) -> String {
    let tid = tenant.tenant_id;
    match service {
        "AzureAD" => "https://entra.microsoft.com/#view/Microsoft_AAD_IAM/SecurityMenuBlade".into(),
        "MDO" => format!("https://security.microsoft.com/threatpolicy?tid={tid}"),
        "MDATP" => format!("https://security.microsoft.com/securescore?viewid=actions&tid={tid}"),
        "Exchange Online" => "https://admin.exchange.microsoft.com/#/settings".into(),
        "SharePoint Online" => "https://admin.microsoft.com/sharepoint?page=accessControl".into(),
        "Microsoft Information Protection" => {
            format!("https://purview.microsoft.com/informationprotection?tid={tid}")
        }
        _ => "https://learn.microsoft.com/en-us/microsoft-365/security/defender/microsoft-secure-score-improvement-actions".into(),
    }
}

/// `yyyy-mm-ddThh:mm:ssZ` of a day in 2026 (`day_of_year` from 0) and a second of that day.
fn instant_2026(day_of_year: u64, second: u64) -> String {
    // 2026-01-01 is day 20,454 since the Unix epoch.
    let seconds = (20_454 + (day_of_year % 365) as i64) * 86_400 + (second % 86_400) as i64;
    time::OffsetDateTime::from_unix_timestamp(seconds)
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

/// The `controlStateUpdates` of one control in one tenant: a lone null `Default` entry, or an
/// earlier `Default` and the newer state, in either order (Graph's order is not a promise:
/// clients pick the newest `updatedDateTime`).
fn state_updates(seed: u64, tenant: &TenantRecord, number: usize, state: State) -> Value {
    if state == State::Default {
        return json!([{
            "assignedTo": null, "comment": null, "state": "Default",
            "updatedBy": null, "updatedDateTime": null,
        }]);
    }
    let hash = mix(&[seed, 0x5EDD, tenant.index as u64, number as u64]);
    let day = 120 + hash % 150;
    let comment = match state {
        State::Ignored => "Risk accepted: a line-of-business app still needs it",
        State::ThirdParty => "Covered by our third-party security tool",
        State::Reviewed => "Reviewed; planned for next quarter",
        State::Default => "",
    };
    let by = format!("secops@{}", tenant.domain);
    let earlier = json!({
        "assignedTo": null, "comment": null, "state": "Default",
        "updatedBy": by, "updatedDateTime": instant_2026(day - 60, hash),
    });
    let newer = json!({
        "assignedTo": by, "comment": comment, "state": state.as_graph(),
        "updatedBy": by, "updatedDateTime": instant_2026(day, hash >> 17),
    });
    if hash & 1 == 0 {
        json!([earlier, newer])
    } else {
        json!([newer, earlier])
    }
}

fn profile(
    seed: u64,
    tenant: &TenantRecord,
    number: usize,
    control: &CatalogueControl,
    state: State,
) -> Value {
    let url = action_url(control.service, tenant);
    let remediation = format!(
        "<ol> <li>Open <a href=\"{url}\" target=\"_blank\">the admin center</a>.</li> <li>{}.</li> <li>Select <em>Save</em>&nbsp;&amp; check the result the next day.</li> </ol>",
        control.title
    );
    let impact = if control.user_impact == "Low" {
        "None.".to_owned()
    } else {
        format!(
            "<p>Users may notice the change ({}&nbsp;impact).</p>",
            control.user_impact.to_ascii_lowercase()
        )
    };
    // Real profiles send `userImpact: null` now and then.
    let user_impact = if control.rank % 7 == 0 {
        Value::Null
    } else {
        control.user_impact.into()
    };
    json!({
        "id": control.id,
        "azureTenantId": tenant.tenant_id.to_string(),
        "actionType": control.action_type,
        "actionUrl": url,
        // Real answers carry it; Graph's reference does not list it.
        "controlCategory": control.category,
        "title": control.title,
        "deprecated": control.kind == Kind::Deprecated,
        "implementationCost": control.implementation_cost,
        "lastModifiedDateTime": null,
        "maxScore": control.max_score,
        "rank": control.rank,
        "remediation": remediation,
        "remediationImpact": impact,
        "service": control.service,
        "threats": control.threats,
        "tier": control.tier,
        "userImpact": user_impact,
        "vendorInformation": {
            "provider": "SecureScore", "providerVersion": null,
            "subProvider": null, "vendor": "Microsoft",
        },
        "complianceInformation": [],
        "controlStateUpdates": state_updates(seed, tenant, number, state),
        // Profiles are an OData open type: a field no documentation knows, for clients to ignore.
        "emulatorNote": "an unknown field: ignore it",
    })
}
