//! `control_regressed` through the engine's interface (`on_controls`) with a clock the tests
//! move: a done control no longer done fires once per (alert, tenant), its webhook is
//! delivered once and names the control, and the control done again resolves it.

use crate::alerts::{engine, events, history, sqlite_url, webhook, Receiver, TestClock};
use crate::control_history::point;
use scoregate::alerts::{AlertsConfig, Condition, Rule};
use scoregate::controls::{Category, State};
use scoregate::history::{ControlPoint, Metric};
use scoregate::metrics::AlertMetrics;
use std::collections::BTreeSet;
use std::time::Duration;

fn identity(control: &str, score: f64) -> ControlPoint {
    ControlPoint {
        category: Some(Category::Identity),
        ..point(control, score, State::Default)
    }
}

#[tokio::test]
async fn a_regressed_control_fires_once_and_resolves_when_done_again() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![Rule {
            name: "mfa".to_owned(),
            metric: Metric::Secure,
            tenants: ["a".to_owned(), "b".to_owned()].into(),
            condition: Condition::ControlRegressed {
                controls: BTreeSet::new(),
                categories: [Category::Identity].into(),
            },
        }],
        webhooks: vec![webhook("psa", &receiver.url)],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    let step = Duration::from_secs(3_600);
    // First reading: done or not, nothing was done before.
    let other = || point("scid_2010", 10.0, State::Default);
    for tenant in ["a", "b", "c"] {
        alerts.on_controls(
            tenant,
            clock.now(),
            &[identity("MFARegistrationV2", 10.0), other()],
        );
    }
    clock.advance(step);
    // `a` regresses; `b`'s control outside the categories regresses (not watched); `c` is out
    // of scope.
    alerts.on_controls(
        "a",
        clock.now(),
        &[identity("MFARegistrationV2", 4.0), other()],
    );
    alerts.on_controls(
        "b",
        clock.now(),
        &[
            identity("MFARegistrationV2", 10.0),
            point("scid_2010", 2.0, State::Default),
        ],
    );
    alerts.on_controls("c", clock.now(), &[identity("MFARegistrationV2", 0.0)]);
    clock.advance(step);
    // Still not done: still the one firing, no second event.
    alerts.on_controls(
        "a",
        clock.now(),
        &[identity("MFARegistrationV2", 5.0), other()],
    );
    alerts.flush().await;
    assert_eq!(
        events(&alerts).await,
        [("alert.firing".to_owned(), "mfa/a".to_owned())]
    );
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    assert_eq!(alerts.deliver_due().await.unwrap(), 0);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].valid);
    let data = &received[0].body["data"];
    assert_eq!(data["alert"], "mfa");
    assert_eq!(data["tenant"], "a");
    assert_eq!(data["metric"], "secure");
    assert_eq!(data["control"], "MFARegistrationV2");
    assert_eq!(data["value"], 1.0);
    let firing = alerts.firing(None).await.unwrap();
    assert_eq!(firing.len(), 1);
    let listed = alerts
        .events(&scoregate::alerts::EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed[0].1.control.as_deref(), Some("MFARegistrationV2"));

    // Done again: resolved, once.
    clock.advance(step);
    for _ in 0..2 {
        alerts.on_controls(
            "a",
            clock.now(),
            &[identity("MFARegistrationV2", 10.0), other()],
        );
    }
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1].body["type"], "alert.resolved");
    assert_eq!(received[1].body["data"]["control"], "MFARegistrationV2");
    assert!(alerts.firing(None).await.unwrap().is_empty());
    assert_eq!(events(&alerts).await.len(), 2);

    // A score reading of the same metric decides nothing for this rule.
    alerts.on_reading("a", Metric::Secure, 1.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 2);
}
