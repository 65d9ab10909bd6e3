//! Webhook deliveries: a retry keeps the `webhook-id`, a redirect is not followed, a failing
//! endpoint is retried with back-off and given up after 24 hours, pending deliveries survive a
//! restart, and two replicas on a real PostgreSQL write one event and deliver it once.

use crate::alerts::{
    engine, events, history, low_below_300, rule, sqlite_url, webhook, Receiver, TestClock,
};
use crate::postgres;
use actix_web::{web, HttpResponse};
use scoregate::alerts::{AlertsConfig, Condition};
use scoregate::history::Metric;
use scoregate::metrics::AlertMetrics;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_503_then_200_is_delivered_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![503, 200]);
    let clock = TestClock::new();
    let metrics = AlertMetrics::default();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        metrics.clone(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let pending = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Pending), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_status, Some(503));
    let next = pending[0].next_attempt.unwrap();
    assert!(next > clock.now() && next <= clock.now() + Duration::from_secs(5));
    // Not due yet: nothing attempted.
    assert_eq!(alerts.deliver_due().await.unwrap(), 0);
    clock.advance(Duration::from_secs(6));
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].id, received[1].id);
    assert!(received.iter().all(|r| r.valid));
    assert_eq!(received[0].body, received[1].body);
    let delivered = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Delivered), None, 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(delivered[0].last_status, Some(200));
    assert_eq!(delivered[0].webhook_id, received[0].id);
}

/// An endpoint that answers every request with `307 Temporary Redirect` to `to` (a 307 keeps
/// the method and the body: a client that follows it would post the signed delivery there).
struct Redirector {
    url: String,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Redirector {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Redirector {
    fn start(to: &str) -> Self {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (to, counter) = (to.to_owned(), hits.clone());
        let (base, handle) = crate::helpers::serve_loopback(move || {
            let (to, counter) = (to.clone(), counter.clone());
            web::to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let to = to.clone();
                async move {
                    HttpResponse::TemporaryRedirect()
                        .insert_header(("location", to))
                        .finish()
                }
            })
        });
        let url = format!("{base}/hook");
        Self { url, hits, handle }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_the_delivery_fails_and_nothing_reaches_the_other_host() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let redirector = Redirector::start(&receiver.url);
    let clock = TestClock::new();
    let config = low_below_300(&redirector.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    let failed = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "a 3xx is a failed delivery, not retried");
    assert_eq!(failed[0].attempts, 1);
    assert_eq!(failed[0].last_status, Some(307));
    assert_eq!(redirector.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        receiver.received().is_empty(),
        "the delivery followed the redirect to another host"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_back_off_and_given_up_after_24_hours() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![500]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    alerts.on_reading("a", Metric::Device, 250.0, clock.now());
    alerts.flush().await;
    let mut attempts = 0;
    for _ in 0..100 {
        attempts += alerts.deliver_due().await.unwrap();
        clock.advance(Duration::from_secs(3_600));
    }
    let failed = alerts
        .deliveries(Some(scoregate::alerts::DeliveryStatus::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("given up after 24 h"));
    // Hourly at most once the back-off is at its cap: about 24 attempts, never past the day.
    assert!((20..=30).contains(&attempts), "{attempts}");
    assert_eq!(receiver.received().len(), attempts);
}

#[tokio::test]
async fn pending_deliveries_are_delivered_after_a_restart_without_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = low_below_300(&receiver.url);
    {
        let history = history(sqlite_url(&dir)).await;
        let alerts = engine(
            config.clone(),
            history.clone(),
            &clock,
            AlertMetrics::default(),
        );
        alerts.on_reading("a", Metric::Device, 250.0, clock.now());
        alerts.flush().await;
        // Stopped before any attempt.
        drop(alerts);
        history.store().unwrap().close().await;
    }
    assert!(receiver.received().is_empty());
    let alerts = engine(
        config,
        history(sqlite_url(&dir)).await,
        &clock,
        AlertMetrics::default(),
    );
    // Still firing after the restart: no second event.
    alerts.on_reading("a", Metric::Device, 240.0, clock.now());
    alerts.flush().await;
    assert_eq!(alerts.deliver_due().await.unwrap(), 1);
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(events(&alerts).await.len(), 1);
}

#[tokio::test]
async fn on_postgresql_two_replicas_write_one_event_and_deliver_it_once() {
    let url = postgres::shared().database().await;
    let receiver = Receiver::start(vec![204]);
    let clock = TestClock::new();
    let config = AlertsConfig {
        rules: vec![rule("low", &["a", "b"], Condition::Below(300.0))],
        webhooks: vec![webhook("psa", &receiver.url)],
    };
    let first = engine(
        config.clone(),
        history(url.clone()).await,
        &clock,
        AlertMetrics::default(),
    );
    let second = engine(config, history(url).await, &clock, AlertMetrics::default());
    for replica in [&first, &second] {
        replica.on_reading("a", Metric::Device, 250.0, clock.now());
        replica.on_reading("b", Metric::Device, 250.0, clock.now());
    }
    first.flush().await;
    second.flush().await;
    assert_eq!(events(&first).await.len(), 2);
    let (one, two) = tokio::join!(first.deliver_due(), second.deliver_due());
    assert_eq!(one.unwrap() + two.unwrap(), 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_ne!(received[0].id, received[1].id);
    // Resolved once, whichever replica sees the recovery.
    first.on_reading("a", Metric::Device, 350.0, clock.now());
    second.on_reading("a", Metric::Device, 350.0, clock.now());
    first.flush().await;
    second.flush().await;
    assert_eq!(events(&second).await.len(), 3);
}
