//! Alert rules evaluated through the engine's interface (`on_reading`, `on_failure`, `tick`)
//! with a clock the tests move: each tenant fires once, a recovery resolves once, `stale_for`
//! and `failing_for` follow the clock, drops compare with the history, and a reload resolves
//! what a changed or removed rule was firing.

use crate::alerts::{
    engine, events, history, low_below_300, rule, sqlite_url, webhook, Receiver, TestClock,
};
use scoregate::alerts::{AlertsConfig, Condition};
use scoregate::history::Metric;
use scoregate::metrics::AlertMetrics;
use std::time::Duration;

#[tokio::test]
async fn each_tenant_in_scope_fires_once_and_never_again_while_firing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![rule("low", &["a", "b"], Condition::Below(300.0))],
        webhooks: vec![webhook("psa", &receiver.url)],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    for tenant in ["a", "b", "c"] {
        alerts.on_reading(tenant, Metric::Device, 250.0, clock.now());
    }
    clock.advance(Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 240.0, clock.now());
    alerts.on_reading("b", Metric::Exposure, 10.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.valid), "{received:?}");
    let mut tenants: Vec<&str> = received
        .iter()
        .map(|r| r.body["data"]["tenant"].as_str().unwrap())
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["a", "b"]);
    let body = &received[0].body;
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["alert"], "low");
    assert_eq!(body["data"]["metric"], "device");
    assert_eq!(body["data"]["value"], 250.0);
    assert_eq!(body["data"]["threshold"], 300.0);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(received[0].id.starts_with("msg_"));
    // Nothing more to deliver, nothing more fired.
    assert_eq!(alerts.deliver_due().await.unwrap(), 0);
    assert_eq!(events(&alerts).await.len(), 2);
    let firing = alerts.firing(None).await.unwrap();
    assert_eq!(firing.len(), 2);
    assert_eq!(firing[0].value, Some(250.0));
}

#[tokio::test]
async fn a_recovered_value_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![200]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    for value in [250.0, 350.0, 360.0] {
        alerts.on_reading("a", Metric::Device, value, clock.now());
        clock.advance(Duration::from_secs(60));
    }
    alerts.flush().await;
    assert_eq!(
        events(&alerts).await,
        [
            ("alert.firing".to_owned(), "low/a".to_owned()),
            ("alert.resolved".to_owned(), "low/a".to_owned())
        ]
    );
    alerts.deliver_due().await.unwrap();
    let types: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.body["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["alert.firing", "alert.resolved"]);
    assert_eq!(receiver.received()[1].body["data"]["value"], 350.0);
    assert!(alerts.firing(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn stale_for_and_failing_for_follow_a_clock_that_moves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![
            rule(
                "stale",
                &["a"],
                Condition::StaleFor(Duration::from_secs(7_200)),
            ),
            rule(
                "failing",
                &["a"],
                Condition::FailingFor(Duration::from_secs(3_600)),
            ),
        ],
        webhooks: vec![],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 300.0, clock.now());
    clock.advance(Duration::from_secs(600));
    alerts.on_failure("a", Metric::Device, clock.now());
    clock.advance(Duration::from_secs(3_000));
    alerts.on_failure("a", Metric::Device, clock.now());
    alerts.tick().await;
    assert!(events(&alerts).await.is_empty(), "50 minutes failing");
    clock.advance(Duration::from_secs(600));
    alerts.tick().await;
    assert_eq!(
        events(&alerts).await,
        [("alert.firing".to_owned(), "failing/a".to_owned())]
    );
    clock.advance(Duration::from_secs(3_600));
    alerts.tick().await;
    alerts.tick().await;
    assert_eq!(
        events(&alerts).await,
        [
            ("alert.firing".to_owned(), "failing/a".to_owned()),
            ("alert.firing".to_owned(), "stale/a".to_owned())
        ]
    );
    let firing = alerts.firing(None).await.unwrap();
    let stale = firing.iter().find(|f| f.alert == "stale").unwrap();
    assert_eq!(stale.threshold, Some(7_200.0));
    assert!(stale.value.unwrap() >= 7_200.0);
    // One success resolves both.
    clock.advance(Duration::from_secs(60));
    alerts.on_reading("a", Metric::Device, 300.0, clock.now());
    alerts.tick().await;
    let all = events(&alerts).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[2..].iter().all(|(kind, _)| kind == "alert.resolved"));
}

#[tokio::test]
async fn drops_compare_with_the_history_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let history = history(sqlite_url(&dir)).await;
    let config = AlertsConfig {
        rules: vec![
            rule(
                "drop",
                &["a"],
                Condition::Drop {
                    points: 20.0,
                    within: Duration::from_secs(7 * 86_400),
                },
            ),
            rule(
                "drop-percent",
                &["a"],
                Condition::DropPercent {
                    percent: 10.0,
                    within: Duration::from_secs(7 * 86_400),
                },
            ),
        ],
        webhooks: vec![],
    };
    let week_ago = clock.now() - Duration::from_secs(8 * 86_400);
    history.record(scoregate::history::Reading::of_score(
        scoregate::model::TenantId::parse("a").unwrap(),
        Metric::Device,
        300.0,
        week_ago,
    ));
    history.flush().await;
    let alerts = engine(config, history, &clock, AlertMetrics::default());
    alerts.on_reading("a", Metric::Device, 285.0, clock.now());
    alerts.flush().await;
    assert!(events(&alerts).await.is_empty(), "15 points, 5 %");
    alerts.on_reading("a", Metric::Device, 260.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 2);
    let firing = alerts.firing(None).await.unwrap();
    let drop = firing.iter().find(|f| f.alert == "drop").unwrap();
    assert_eq!((drop.value, drop.threshold), (Some(40.0), Some(20.0)));
}

#[tokio::test]
async fn a_changed_or_removed_rule_resolves_its_firing_states_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![
            rule("low", &["a"], Condition::Below(300.0)),
            rule("gone", &["a"], Condition::Above(100.0)),
        ],
        webhooks: vec![],
    };
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 2);
    alerts.reload(AlertsConfig {
        rules: vec![rule("low", &["a"], Condition::Below(200.0))],
        webhooks: vec![],
    });
    alerts.flush().await;
    let all = events(&alerts).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[2..].iter().all(|(kind, _)| kind == "alert.resolved"));
    assert!(alerts.firing(None).await.unwrap().is_empty());
    // The new definition is evaluated from scratch.
    alerts.on_reading("a", Metric::Device, 150.0, clock.now());
    alerts.flush().await;
    assert_eq!(events(&alerts).await.len(), 5);
}
