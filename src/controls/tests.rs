//! The controls logic over hand-written Graph answers shaped like real ones
//! (`tests/fixtures/graph/`): lenient reading, the join, status, state, points, lists,
//! sharing across tenants and the cross-tenant summary.

use super::graph::{ControlProfilesPage, SecureScoresControls, SnapshotControls};
use super::*;
use std::sync::Arc;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const SNAPSHOTS: &str = include_str!("../../tests/fixtures/graph/secure_score_controls.json");
const PROFILES: &str = include_str!("../../tests/fixtures/graph/control_profiles.json");

fn snapshot(body: &str) -> SnapshotControls {
    let mut body: SecureScoresControls = serde_json::from_str(body).unwrap();
    body.value.remove(0)
}

fn profiles(body: &str) -> ControlProfilesPage {
    serde_json::from_str(body).unwrap()
}

/// A tenant's controls from the fixtures, its tenant id swapped in.
fn tenant(interner: &Interner, tenant_id: &str) -> (TenantProfiles, Box<[TenantControl]>) {
    let page = profiles(&PROFILES.replace(TENANT, tenant_id));
    let profiles = interner.tenant_profiles(tenant_id, &page.value);
    let snapshot = snapshot(&SNAPSHOTS.replace(TENANT, tenant_id));
    let controls = TenantControl::join(interner, &snapshot.control_scores, &profiles);
    (profiles, controls)
}

fn find<'a>(controls: &'a [TenantControl], id: &str) -> &'a TenantControl {
    controls.iter().find(|c| c.id() == id).expect(id)
}

#[test]
fn graph_answers_are_read_despite_strings_nulls_and_unknown_fields() {
    let snapshot = snapshot(SNAPSHOTS);
    // 12 objects: the string item is skipped, nothing fails.
    assert_eq!(snapshot.control_scores.len(), 12);
    let zap = &snapshot.control_scores[2];
    assert_eq!(zap.score, Some(0.5));
    assert_eq!(zap.score_in_percentage, Some(50.0));
    assert_eq!((zap.count, zap.total), (Some(6.0), Some(12.0)));
    assert_eq!(snapshot.control_scores[3].on, Some(false));
    assert_eq!(snapshot.control_scores[8].on, Some(true));
    let page = profiles(PROFILES);
    assert!(page
        .next_link
        .as_deref()
        .is_some_and(|link| link.contains("$skiptoken=")));
    assert_eq!(page.value.len(), 10, "the number item is skipped");
    assert_eq!(page.value[2].max_score, Some(1.0));
    assert_eq!(page.value[2].deprecated, Some(false));
    assert_eq!(page.value[2].threats, ["Phishing"]);
}

#[test]
fn the_newest_state_update_wins_whatever_the_order() {
    let page = profiles(PROFILES);
    let states: Vec<State> = page.value.iter().map(|p| p.state()).collect();
    assert_eq!(
        states[..6],
        [
            State::Default,
            State::Ignored,
            State::Default,
            State::ThirdParty,
            State::Reviewed,
            // An unknown state is not taken for one.
            State::Default,
        ]
    );
}

#[test]
fn controls_join_their_profiles_with_status_state_and_points() {
    let interner = Interner::new();
    let (_, controls) = tenant(&interner, TENANT);
    // Unnamed and repeated entries are left out.
    assert_eq!(controls.len(), 10);

    let admin = find(&controls, "AdminMFAV2");
    assert_eq!(
        (admin.status(), admin.state()),
        (Status::Done, State::Default)
    );
    assert_eq!(
        (admin.points_to_gain(), admin.percentage()),
        (0.0, Some(100.0))
    );
    assert_eq!((admin.count(), admin.total()), (Some(2), Some(2)));
    assert_eq!(
        admin.implementation_status().as_deref(),
        Some("You have 0 out of 2 users with administrative roles that aren’t protected.")
    );
    assert_eq!(admin.last_synced(), Some(1_795_914_459));
    assert_eq!(admin.profile().threats.len(), 2);

    let zap = find(&controls, "mdo_zapspam");
    assert_eq!((zap.score(), zap.max_score()), (0.5, Some(1.0)));
    assert_eq!((zap.status(), zap.points_to_gain()), (Status::Partial, 0.5));
    assert_eq!(zap.profile().rank, Some(128));
    assert_eq!(
        zap.implementation_status().as_deref(),
        Some("50% of users are affected by policies that are configured securely\n- Default - 6 users (50%)")
    );
    assert_eq!(
        zap.profile().remediation(TENANT).as_deref(),
        Some("Set ‘ZAP’ on in every anti-spam policy.")
    );
    assert_eq!(
        find(&controls, "scid_2010").profile().remediation(TENANT).as_deref(),
        Some("Open https://security.microsoft.com/?tid=11111111-2222-3333-4444-555555555555 and turn it on.")
    );
    assert_eq!(
        zap.action_url(TENANT).as_deref(),
        Some("https://security.microsoft.com/antispam?tid=11111111-2222-3333-4444-555555555555")
    );

    // Ignored and third-party controls have nothing to gain, whatever their score.
    let one_admin = find(&controls, "OneAdmin");
    assert_eq!(
        (one_admin.status(), one_admin.state()),
        (Status::Todo, State::Ignored)
    );
    assert_eq!((one_admin.points_to_gain(), one_admin.total()), (0.0, None));
    let idle = find(&controls, "spo_idle_session_timeout");
    assert_eq!(
        (idle.status(), idle.state()),
        (Status::Todo, State::ThirdParty)
    );
    assert_eq!(idle.points_to_gain(), 0.0);

    let audit = find(&controls, "exo_mailboxaudit");
    assert_eq!(
        (audit.status(), audit.state()),
        (Status::Done, State::Reviewed)
    );
    assert_eq!(
        (audit.implementation_status(), audit.last_synced()),
        (None, None)
    );

    let device = find(&controls, "scid_2010");
    assert_eq!(device.category(), Some(Category::Device));
    assert_eq!(
        (device.status(), device.points_to_gain()),
        (Status::Partial, 2.5)
    );

    // A null score is no point; the maximum comes from the profile.
    let legacy = find(&controls, "BlockLegacyAuthentication");
    assert_eq!(
        (legacy.status(), legacy.points_to_gain()),
        (Status::Todo, 8.0)
    );

    // Without a profile: id and category kept, Graph's percentage decides, nothing to gain.
    let preview = find(&controls, "mip_newpreviewcontrol");
    assert!(preview.profile().is_bare());
    assert_eq!(preview.category(), Some(Category::Data));
    assert_eq!(
        (preview.status(), preview.percentage()),
        (Status::Partial, Some(50.0))
    );
    assert_eq!(preview.points_to_gain(), 0.0);
    assert_eq!(find(&controls, "q_future").category(), None);
}

#[test]
fn lists_filter_and_sort_with_total_orders() {
    let interner = Interner::new();
    let (_, controls) = tenant(&interner, TENANT);
    let ids = |filter: &ControlFilter, sort| -> Vec<String> {
        list(&controls, filter, sort)
            .iter()
            .map(|c| c.id().to_owned())
            .collect()
    };
    let all = ControlFilter::default();
    assert_eq!(
        ids(&all, ControlSort::Rank),
        [
            "AdminMFAV2",
            "BlockLegacyAuthentication",
            "scid_2010",
            "spo_idle_session_timeout",
            "OneAdmin",
            "exo_mailboxaudit",
            "mdo_zapspam",
            "CustomerLockBoxEnabled",
            "mip_newpreviewcontrol",
            "q_future",
        ]
    );
    assert_eq!(
        ids(&all, ControlSort::PointsToGain)[..4],
        [
            "BlockLegacyAuthentication",
            "scid_2010",
            "mdo_zapspam",
            "AdminMFAV2"
        ]
    );
    assert_eq!(ids(&all, ControlSort::Id)[0], "AdminMFAV2");
    let apps = ControlFilter {
        category: Some(Category::Apps),
        ..ControlFilter::default()
    };
    assert_eq!(ids(&apps, ControlSort::Rank).len(), 4);
    let todo = ControlFilter {
        status: Some(Status::Todo),
        ..ControlFilter::default()
    };
    assert_eq!(
        ids(&todo, ControlSort::Id),
        [
            "BlockLegacyAuthentication",
            "OneAdmin",
            "spo_idle_session_timeout"
        ]
    );
    let third_party_in_azure_ad = ControlFilter {
        state: Some(State::Ignored),
        service: Some("azuread".into()),
        ..ControlFilter::default()
    };
    assert_eq!(
        ids(&third_party_in_azure_ad, ControlSort::Rank),
        ["OneAdmin"]
    );
    assert_eq!(
        ControlSort::parse("-points_to_gain"),
        Some(ControlSort::PointsToGain)
    );
    assert_eq!(ControlSort::parse("points_to_gain"), None);
}

#[test]
fn tenants_share_one_copy_of_each_profile_version_and_of_repeated_texts() {
    let interner = Interner::new();
    let other = "99999999-8888-7777-6666-555555555555";
    let (first_profiles, first) = tenant(&interner, TENANT);
    let (second_profiles, second) = tenant(&interner, other);
    assert!(Arc::ptr_eq(first_profiles.set(), second_profiles.set()));
    let zap = |controls: &[TenantControl]| find(controls, "mdo_zapspam").profile().clone();
    assert!(Arc::ptr_eq(&zap(&first), &zap(&second)));
    let device = |controls: &[TenantControl]| find(controls, "scid_2010").profile().clone();
    assert!(Arc::ptr_eq(&device(&first), &device(&second)));
    assert!(device(&second)
        .remediation(other)
        .is_some_and(|text| text.contains(other) && !text.contains(TENANT)));
    // The shared URL still names each tenant.
    assert!(find(&second, "mdo_zapspam")
        .action_url(other)
        .is_some_and(|url| url.ends_with(other)));
    // Status texts that differ only in their numbers share their words.
    let words =
        |controls: &[TenantControl], id: &str| match find(controls, id).implementation_status() {
            Some(std::borrow::Cow::Borrowed(text)) => text.as_ptr(),
            other => panic!("{other:?}"),
        };
    assert_eq!(
        words(&first, "spo_idle_session_timeout"),
        words(&second, "spo_idle_session_timeout")
    );
    let shared_words = interner.counts().texts;
    let third_tenant = tenant(&interner, "00000000-1111-2222-3333-444444444444");
    assert_eq!(interner.counts().texts, shared_words);
    let counts = interner.counts();
    assert_eq!(
        (counts.sets, counts.profiles),
        (1, 11),
        "9 profiles, 2 stand-ins"
    );

    // A new version of one profile is a copy of its own; the rest stays shared.
    let changed = PROFILES.replace(
        "Ensure mailbox auditing is enabled",
        "Ensure mailbox auditing is on",
    );
    let page = profiles(&changed);
    let third = interner.tenant_profiles(TENANT, &page.value);
    assert!(!Arc::ptr_eq(third.set(), first_profiles.set()));
    let profile = |profiles: &TenantProfiles, id: &str| profiles.get(id).unwrap().0.clone();
    assert!(!Arc::ptr_eq(
        &profile(&third, "exo_mailboxaudit"),
        &profile(&first_profiles, "exo_mailboxaudit")
    ));
    assert!(Arc::ptr_eq(
        &profile(&third, "AdminMFAV2"),
        &profile(&first_profiles, "AdminMFAV2")
    ));

    // Versions nobody holds any more are freed.
    drop((
        first_profiles,
        second_profiles,
        third,
        first,
        second,
        third_tenant,
    ));
    assert_eq!(interner.counts().profiles, 0);
}

#[test]
fn a_tenant_control_stays_small() {
    // 700,000 of them for 10,000 tenants: every byte is 0.7 MB.
    assert!(std::mem::size_of::<TenantControl>() <= 48);
}

#[test]
fn the_summary_counts_tenants_per_status_and_state_and_lists_who_is_still_to_do() {
    let interner = Interner::new();
    let tenants: Vec<(String, Box<[TenantControl]>)> = (0..25)
        .map(|n| {
            let id = format!("{n:08}-2222-3333-4444-555555555555");
            let mut snapshot = SNAPSHOTS.replace(TENANT, &id);
            if n == 3 {
                // One tenant has blocked legacy authentication.
                snapshot = snapshot.replace(
                    "\"controlName\": \"BlockLegacyAuthentication\",\n          \"score\": null",
                    "\"controlName\": \"BlockLegacyAuthentication\",\n          \"score\": 8",
                );
            }
            let page = profiles(&PROFILES.replace(TENANT, &id));
            let profiles = interner.tenant_profiles(&id, &page.value);
            let snapshot = self::snapshot(&snapshot);
            let controls = TenantControl::join(&interner, &snapshot.control_scores, &profiles);
            (format!("t{n:02}"), controls)
        })
        .collect();
    let input = || tenants.iter().map(|(id, controls)| (id, &controls[..]));
    let rows = summarize(
        input(),
        &ControlFilter::default(),
        ControlSort::PointsToGain,
    );
    assert_eq!(rows.len(), 10);
    let legacy = &rows[0];
    assert_eq!(legacy.id(), "BlockLegacyAuthentication");
    assert_eq!((legacy.done, legacy.todo, legacy.partial), (1, 24, 0));
    assert_eq!(legacy.points_to_gain, 192.0);
    assert_eq!(legacy.todo_tenants_count, 24);
    assert_eq!(legacy.todo_tenants.len(), TODO_TENANTS_SHOWN);
    assert_eq!(legacy.todo_tenants[..4], ["t00", "t01", "t02", "t04"]);
    assert_eq!(rows[1].id(), "scid_2010");
    assert_eq!(rows[1].points_to_gain, 62.5);

    let one_admin = rows.iter().find(|r| r.id() == "OneAdmin").unwrap();
    assert_eq!((one_admin.ignored, one_admin.todo), (25, 0));
    assert_eq!(
        (one_admin.todo_tenants_count, one_admin.points_to_gain),
        (0, 0.0)
    );
    let audit = rows.iter().find(|r| r.id() == "exo_mailboxaudit").unwrap();
    assert_eq!((audit.done, audit.reviewed), (25, 25));

    let third_party = ControlFilter {
        state: Some(State::ThirdParty),
        ..ControlFilter::default()
    };
    let rows = summarize(input(), &third_party, ControlSort::Id);
    let ids: Vec<&str> = rows.iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["spo_idle_session_timeout"]);
    let devices = ControlFilter {
        category: Some(Category::Device),
        ..ControlFilter::default()
    };
    let rows = summarize(input(), &devices, ControlSort::Rank);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].profile.title.as_deref(),
        Some("Turn on Microsoft Defender Antivirus real-time protection")
    );
}

#[test]
fn controls_joined_before_their_profiles_take_them_when_they_arrive() {
    let interner = Interner::new();
    let (profiles, joined) = tenant(&interner, TENANT);
    let empty = interner.tenant_profiles(TENANT, &[]);
    let bare = TenantControl::join(&interner, &snapshot(SNAPSHOTS).control_scores, &empty);
    assert!(bare
        .iter()
        .all(|c| c.profile().is_bare() && c.state() == State::Default));
    let later: Vec<TenantControl> = bare
        .iter()
        .map(|control| control.with_profiles(&interner, &profiles))
        .collect();
    // Compared as printed: a control without Graph's percentage holds NaN, unequal to itself.
    assert_eq!(
        format!("{later:?}"),
        format!("{:?}", joined.to_vec()),
        "the same as joined with them at once"
    );
    // And back: a control the new profiles lack keeps its own values on a bare profile.
    let again: Vec<TenantControl> = later
        .iter()
        .map(|control| control.with_profiles(&interner, &empty))
        .collect();
    for (control, original) in again.iter().zip(bare.iter()) {
        assert_eq!(control.id(), original.id());
        assert_eq!(control.score(), original.score());
        assert_eq!(control.category(), original.category());
        assert!(control.profile().is_bare());
    }
}

#[test]
fn graphs_percentage_is_kept_in_hundredths_and_nonsense_is_no_percentage() {
    use super::control::hundredths;
    assert_eq!(hundredths(33.333), Some(3333));
    assert_eq!(hundredths(99.9951), Some(10_000));
    assert_eq!(hundredths(0.0), Some(0));
    for nonsense in [-1.0, f64::NAN, f64::INFINITY, 1e9] {
        assert_eq!(hundredths(nonsense), None, "{nonsense}");
    }
}
