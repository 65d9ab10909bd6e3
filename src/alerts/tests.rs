use super::*;
use secrecy::ExposeSecret;

#[test]
fn a_generated_secret_parses_back_and_never_shows_in_debug() {
    let (text, secret) = WebhookSecret::generate();
    assert_eq!(
        WebhookSecret::parse(text.expose_secret()),
        Some(secret.clone())
    );
    assert_eq!(format!("{secret:?}"), "WebhookSecret(redacted)");
    assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ="), None, "too short");
    assert_eq!(
        WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        None
    );
}

#[test]
fn timed_conditions_need_a_fetch_and_count_from_the_right_moment() {
    use store::FetchRow;
    let stale = Condition::StaleFor(Duration::from_secs(100));
    let failing = Condition::FailingFor(Duration::from_secs(100));
    assert_eq!(engine::timed(&stale, FetchRow::default(), 1_000), None);
    let ok = FetchRow {
        last_success: Some(950),
        first_failure: None,
    };
    assert!(!engine::timed(&stale, ok, 1_000).unwrap().firing);
    assert!(engine::timed(&stale, ok, 1_050).unwrap().firing);
    assert!(!engine::timed(&failing, ok, 5_000).unwrap().firing);
    let never = FetchRow {
        last_success: None,
        first_failure: Some(900),
    };
    assert!(engine::timed(&stale, never, 1_000).unwrap().firing);
    assert!(engine::timed(&failing, never, 1_000).unwrap().firing);
    assert!(!engine::timed(&failing, never, 999).unwrap().firing);
}
