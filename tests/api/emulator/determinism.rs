//! The seed decides everything but key material: ids, secrets, scores, fault selection.

use super::{secret_of, start, Harness};
use scoregate::emulator::{EmulatedTenant, EmulatorOptions, FaultProfile};

fn options(seed: u64) -> EmulatorOptions {
    EmulatorOptions {
        tenants: 30,
        seed,
        faults: vec!["slow=0.2".parse().unwrap(), "flaky=0.1".parse().unwrap()],
        ..EmulatorOptions::default()
    }
}

/// What the seed must reproduce, per tenant.
fn identity(
    tenant: &EmulatedTenant,
) -> (
    String,
    String,
    uuid::Uuid,
    uuid::Uuid,
    String,
    Option<FaultProfile>,
    Vec<String>,
) {
    (
        tenant.slug.clone(),
        tenant.name.clone(),
        tenant.tenant_id,
        tenant.client_id,
        secret_of(tenant),
        tenant.fault,
        tenant.tags.clone(),
    )
}

async fn scores(app: &Harness, slugs: &[&str]) -> Vec<f64> {
    let mut scores = Vec::new();
    for slug in slugs {
        let token = app.access_token(slug).await;
        let body = app.score(&token).await.json();
        scores.push(body["score"].as_f64().expect("a score"));
    }
    scores
}

#[tokio::test]
async fn the_same_seed_gives_the_same_tenants_secrets_faults_and_scores() {
    let first = start(options(7)).await;
    let second = start(options(7)).await;
    let a: Vec<_> = first.emu.tenants().iter().map(identity).collect();
    let b: Vec<_> = second.emu.tenants().iter().map(identity).collect();
    assert_eq!(a, b);
    assert_eq!(
        a.iter().filter(|t| t.5 == Some(FaultProfile::Slow)).count(),
        6
    );
    assert_eq!(
        a.iter()
            .filter(|t| t.5 == Some(FaultProfile::Flaky))
            .count(),
        3
    );
    let healthy: Vec<String> = first
        .emu
        .tenants()
        .iter()
        .filter(|t| t.fault.is_none())
        .take(3)
        .map(|t| t.slug.clone())
        .collect();
    let healthy: Vec<&str> = healthy.iter().map(String::as_str).collect();
    assert_eq!(
        scores(&first, &healthy).await,
        scores(&second, &healthy).await
    );
    assert_eq!(first.emu.msp_client_id(), second.emu.msp_client_id());
}

#[tokio::test]
async fn a_different_seed_gives_different_ids_secrets_and_faults_but_the_same_names() {
    let first = start(options(7)).await;
    let second = start(options(8)).await;
    let a = first.emu.tenants();
    let b = second.emu.tenants();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.slug, &x.name), (&y.slug, &y.name));
        assert_ne!(x.tenant_id, y.tenant_id);
        assert_ne!(x.client_id, y.client_id);
        assert_ne!(secret_of(x), secret_of(y));
    }
    let faults = |tenants: &[EmulatedTenant]| tenants.iter().map(|t| t.fault).collect::<Vec<_>>();
    assert_ne!(faults(&a), faults(&b));
}

#[tokio::test]
async fn scores_drift_from_one_emulated_day_to_the_next_but_not_within_a_day() {
    let app = start(EmulatorOptions {
        tenants: 1,
        ..EmulatorOptions::default()
    })
    .await;
    let now = app.emu.now();
    // Move to 01:00 of the next day so that the next hour stays within that day.
    let to_next_day = 86_400
        - i64::from(now.hour()) * 3_600
        - i64::from(now.minute()) * 60
        - i64::from(now.second())
        + 3_600;
    app.emu
        .advance_clock(std::time::Duration::from_secs(to_next_day as u64));
    let token = app.access_token("contoso").await;
    let morning = app.score(&token).await.json()["score"].as_f64().unwrap();
    app.emu.advance_clock(std::time::Duration::from_secs(600));
    let later = app.score(&token).await.json()["score"].as_f64().unwrap();
    assert_eq!(morning, later);

    let mut seen = vec![morning];
    for _ in 0..5 {
        app.emu
            .advance_clock(std::time::Duration::from_secs(86_400));
        let token = app.access_token("contoso").await;
        let score = app.score(&token).await.json()["score"].as_f64().unwrap();
        assert!(
            (score - morning).abs() < 80.0,
            "drifts slowly: {morning} → {score}"
        );
        seen.push(score);
    }
    seen.dedup();
    assert!(seen.len() > 1, "the score changes across days: {seen:?}");
}

#[tokio::test]
async fn ten_thousand_tenants_start_and_serve() {
    let app = start(EmulatorOptions {
        tenants: 10_000,
        ..EmulatorOptions::default()
    })
    .await;
    let last = app.emu.tenants().pop().expect("tenants");
    assert_eq!(last.slug, "northwind-traders-250");
    let token = app.access_token(&last.slug).await;
    assert_eq!(app.score(&token).await.status, 200);
}
