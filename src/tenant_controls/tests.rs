//! The control book under a paused clock, over the real policy stack and a scripted source of
//! profile pages: when profiles are fetched (once, after the refresh interval, forced, not
//! twice within the floor, not again within a minute of a failure), `@odata.nextLink`
//! followed, and the observer told once per snapshot.

use super::*;
use crate::controls::graph::{ControlProfile, ControlProfilesPage, ControlScoreEntry};
use crate::metrics::Metrics;
use crate::policy::testing::{registration, FakeTokens, DEFENDER_LIMITS, RETRIES};
use crate::policy::{Deadlines, Parts};
use crate::quota::{FailureBackoff, LocalQuotaStore};
use crate::token::BearerToken;
use crate::upstream::{CallFailure, ScoreSource, UpstreamService};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

const REFRESH: Duration = Duration::from_secs(24 * 3600);
const FLOOR: Duration = Duration::from_secs(5);

/// Two pages of profiles (the first links to the second), or a 503 while `failing`.
#[derive(Default)]
struct Profiles {
    pages: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl ScoreSource for Profiles {
    fn metric(&self) -> Metric {
        Metric::Secure
    }

    fn service(&self) -> UpstreamService {
        UpstreamService::Graph
    }

    async fn call(&self, _tenant: &Tenant, _token: &BearerToken) -> Result<Reading, CallFailure> {
        Ok(reading("2026-12-01T00:00:00Z"))
    }

    async fn control_profiles(
        &self,
        _tenant: &Tenant,
        _token: &BearerToken,
        next: Option<&str>,
    ) -> Result<ControlProfilesPage, CallFailure> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(CallFailure::Status {
                status: 403,
                retry_after: None,
                detail: "refused".to_owned(),
            });
        }
        let profile = |id: &str, max: f64| ControlProfile {
            id: Some(id.to_owned()),
            title: Some(format!("<b>{id}</b>")),
            max_score: Some(max),
            ..ControlProfile::default()
        };
        Ok(match next {
            None => ControlProfilesPage {
                next_link: Some("https://graph.example.test/page-2".to_owned()),
                value: vec![profile("AdminMFAV2", 10.0)],
            },
            Some(_) => ControlProfilesPage {
                next_link: None,
                value: vec![profile("scid_2010", 4.0)],
            },
        })
    }
}

fn reading(time: &str) -> Reading {
    Reading {
        score: 12.0,
        time: time.to_owned(),
        fetched_at: SystemTime::now(),
        secure: None,
    }
}

fn snapshot() -> SnapshotControls {
    let entry = |id: &str, score: f64| ControlScoreEntry {
        control_name: Some(id.to_owned()),
        control_category: Some("Identity".to_owned()),
        score: Some(score),
        ..ControlScoreEntry::default()
    };
    SnapshotControls {
        created_date_time: None,
        control_scores: vec![entry("AdminMFAV2", 10.0), entry("scid_2010", 2.0)],
    }
}

#[derive(Default)]
struct Told(parking_lot::Mutex<Vec<(OffsetDateTime, usize, Option<f64>)>>);

impl ControlsObserver for Told {
    fn on_controls(&self, _tenant: &Tenant, at: OffsetDateTime, controls: &[TenantControl]) {
        let max = controls.first().and_then(TenantControl::max_score);
        self.0.lock().push((at, controls.len(), max));
    }
}

fn book() -> (Arc<ControlBook>, Arc<Profiles>, Arc<Tenant>) {
    let source = Arc::new(Profiles::default());
    let outbound = Arc::new(Outbound::new(Parts {
        sources: vec![source.clone() as Arc<dyn ScoreSource>],
        tokens: Arc::new(FakeTokens::default()),
        store: Arc::new(LocalQuotaStore::default()),
        retries: crate::policy::Retries {
            max_retries: 0,
            ..RETRIES
        },
        max_in_flight: 8,
        deadlines: Deadlines {
            fetch: Duration::from_secs(10),
            attempt: Duration::from_secs(5),
        },
        backoff: FailureBackoff::default(),
        metrics: Arc::new(Metrics::default()),
    }));
    let tenant = Arc::new(registration("contoso", DEFENDER_LIMITS));
    let registry = Arc::new(Registry::new(vec![registration(
        "contoso",
        DEFENDER_LIMITS,
    )]));
    let book = ControlBook::new(REFRESH, FLOOR, registry, tokio::runtime::Handle::current());
    book.connect(&outbound);
    (book, source, tenant)
}

/// The controls of `served` (the snapshot the sink was told of).
async fn ask(book: &Arc<ControlBook>, tenant: &Arc<Tenant>, served: &Reading, force: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = book.controls(tenant, served, force, deadline).await;
    let joined = joined.unwrap_or_else(|error| panic!("controls: {error}"));
    assert!(joined.profiled);
}

#[tokio::test(start_paused = true)]
async fn profiles_are_fetched_once_per_interval_every_page_and_when_forced_past_the_floor() {
    let (book, source, tenant) = book();
    let told = Arc::new(Told::default());
    book.observe(told.clone());
    let served = reading("2026-12-01T00:00:00Z");
    book.sink().on_snapshot(&tenant, &served, snapshot());
    assert!(told.0.lock().is_empty(), "not told before the profiles");

    ask(&book, &tenant, &served, false).await;
    assert_eq!(source.pages.load(Ordering::SeqCst), 2, "both pages");
    let joined = book.joined(&tenant).unwrap();
    assert_eq!(joined.controls[0].max_score(), Some(10.0));
    assert_eq!(
        joined.controls[0].profile().title.as_deref(),
        Some("AdminMFAV2")
    );
    assert_eq!(told.0.lock().len(), 1);

    ask(&book, &tenant, &served, false).await;
    ask(&book, &tenant, &served, true).await;
    assert_eq!(
        source.pages.load(Ordering::SeqCst),
        2,
        "fresh, and forced within the floor"
    );
    tokio::time::advance(FLOOR).await;
    ask(&book, &tenant, &served, true).await;
    assert_eq!(source.pages.load(Ordering::SeqCst), 4, "forced");
    tokio::time::advance(REFRESH).await;
    ask(&book, &tenant, &served, false).await;
    assert_eq!(source.pages.load(Ordering::SeqCst), 6, "due again");
    assert_eq!(told.0.lock().len(), 1, "the same snapshot is told once");

    // A new snapshot is joined at once with the profiles held, and told.
    let newer = reading("2026-12-02T00:00:00Z");
    book.sink().on_snapshot(&tenant, &newer, snapshot());
    let told = told.0.lock().clone();
    assert_eq!(told.len(), 2);
    assert_eq!(told[1].0.day(), 2);
    assert_eq!((told[1].1, told[1].2), (2, Some(10.0)));
}

#[tokio::test(start_paused = true)]
async fn snapshots_are_kept_only_for_tenants_whose_controls_were_asked_or_when_observed() {
    let (book, _, tenant) = book();
    let served = reading("2026-12-01T00:00:00Z");
    book.sink().on_snapshot(&tenant, &served, snapshot());
    assert!(book.joined(&tenant).is_none(), "nobody asked: nothing kept");
    book.want(&tenant);
    book.sink().on_snapshot(&tenant, &served, snapshot());
    assert_eq!(
        book.joined(&tenant).map(|joined| joined.controls.len()),
        Some(2)
    );

    // With an observer (the history records controls), every tenant's snapshot is kept.
    let (observed, _, tenant) = self::book();
    observed.observe(Arc::new(Told::default()));
    observed.sink().on_snapshot(&tenant, &served, snapshot());
    assert!(observed.joined(&tenant).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_not_repeated_for_a_minute_and_held_profiles_serve_meanwhile() {
    let (book, source, tenant) = book();
    let served = reading("2026-12-01T00:00:00Z");
    book.want(&tenant);
    book.sink().on_snapshot(&tenant, &served, snapshot());
    source.failing.store(true, Ordering::SeqCst);
    let deadline = || Instant::now() + Duration::from_secs(30);
    let first = book.controls(&tenant, &served, false, deadline()).await;
    assert!(matches!(
        first,
        Err(ControlsError::Upstream(UpstreamError::Denied {
            status: 403,
            ..
        }))
    ));
    let again = book.controls(&tenant, &served, false, deadline()).await;
    assert!(again.is_err());
    assert_eq!(
        source.pages.load(Ordering::SeqCst),
        1,
        "not asked again at once"
    );

    source.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(PROFILES_RETRY_AFTER_FAILURE).await;
    ask(&book, &tenant, &served, false).await;
    assert_eq!(source.pages.load(Ordering::SeqCst), 3);

    // Due again, failing: the profiles held serve, and the next try waits a minute.
    source.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(REFRESH).await;
    ask(&book, &tenant, &served, false).await;
    ask(&book, &tenant, &served, false).await;
    assert_eq!(source.pages.load(Ordering::SeqCst), 4);
}
