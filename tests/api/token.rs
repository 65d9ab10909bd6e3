//! The token source against the real emulator over HTTPS: the configuration it writes, the
//! shared client trusting its CA, secret, shared-app and certificate credentials, and the
//! refusals it answers with Entra's own error bodies.

use scoregate::config::Config;
use scoregate::credential::Credential;
use scoregate::emulator::{
    CredentialAssignment, CredentialKind, Emulator, EmulatorOptions, FaultProfile, Selector,
};
use scoregate::token::{TokenError, TokenSource};
use secrecy::ExposeSecret;

struct Setup {
    emulator: Emulator,
    config: Config,
    tokens: TokenSource,
    dir: std::path::PathBuf,
}

async fn setup(credentials: Vec<CredentialAssignment>) -> Setup {
    let emulator = crate::helpers::start_emulator(EmulatorOptions {
        tenants: 6,
        seed: 42,
        credentials,
        ..EmulatorOptions::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("scoregate-token-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = emulator.write_config(&dir).expect("a configuration");
    let config = Config::load_with_env(&path, Vec::new()).expect("the configuration loads");
    let http = scoregate::upstream::http_client(&config.upstream, config.extra_ca_pem.as_deref())
        .expect("an HTTP client");
    Setup {
        emulator,
        config,
        tokens: TokenSource::new(http),
        dir,
    }
}

impl Setup {
    async fn stop(self) {
        self.emulator.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assignment(kind: CredentialKind, share: f64) -> CredentialAssignment {
    CredentialAssignment {
        kind,
        selector: Selector::Fraction(share),
    }
}

#[tokio::test]
async fn every_kind_of_credential_gets_a_token_once_and_reuses_it() {
    let setup = setup(vec![
        assignment(CredentialKind::Certificate, 0.34),
        assignment(CredentialKind::Shared, 0.34),
    ])
    .await;
    let tenants = setup.config.registry.all().to_vec();
    let kinds: std::collections::BTreeSet<_> =
        tenants.iter().map(|t| t.credential.kind()).collect();
    assert_eq!(kinds.len(), 2, "secrets and certificates: {kinds:?}");
    for _ in 0..3 {
        for tenant in &tenants {
            let token = setup.tokens.token(tenant).await.unwrap_or_else(|error| {
                panic!("{} ({}): {error}", tenant.id, tenant.credential.kind())
            });
            assert!(!token.secret().is_empty());
        }
    }
    let stats = setup.emulator.stats();
    assert_eq!(stats.total.tokens_issued, tenants.len() as u64, "{stats:?}");
    assert_eq!(stats.total.token_errors, 0, "{stats:?}");

    let first = &tenants[0];
    setup.tokens.renew(&first.id);
    setup.tokens.token(first).await.expect("a renewed token");
    assert_eq!(
        setup.emulator.stats().total.tokens_issued,
        tenants.len() as u64 + 1
    );
    setup.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_credentials_are_rejected_with_their_aadsts_codes() {
    let setup = setup(vec![assignment(CredentialKind::Certificate, 0.5)]).await;
    let tenants = setup.config.registry.all().to_vec();
    for tenant in &tenants {
        for (profile, secret_code, certificate_code) in [
            (FaultProfile::Revoked, "AADSTS7000215", "AADSTS700027"),
            (FaultProfile::ExpiredSecret, "AADSTS7000222", "AADSTS700027"),
        ] {
            setup
                .emulator
                .set_fault(tenant.id.as_str(), Some(profile))
                .expect("fault set");
            setup.tokens.renew(&tenant.id);
            let error = setup.tokens.token(tenant).await.expect_err("refused");
            let expected = match tenant.credential {
                Credential::Secret(_) => secret_code,
                Credential::Certificate(_) => certificate_code,
            };
            match &error {
                TokenError::Rejected {
                    status,
                    codes,
                    detail,
                } => {
                    assert!((400..500).contains(status), "{error}");
                    assert_eq!(codes, expected, "{} {profile:?}: {error}", tenant.id);
                    assert!(detail.starts_with(expected), "{detail}");
                    assert!(!detail.contains("Trace ID"), "{detail}");
                    // The expired secret's text names the app by id: it is removed.
                    assert!(!contains_guid(detail), "{detail}");
                }
                other => panic!(
                    "{} {profile:?}: expected Rejected, got {other:?}",
                    tenant.id
                ),
            }
            let shown = error.to_string();
            assert!(!shown.contains("https://"), "{shown}");
            if let Credential::Secret(secret) = &tenant.credential {
                assert!(!shown.contains(secret.expose_secret()), "{shown}");
            }
        }
    }
    setup.stop().await;
}

#[tokio::test]
async fn an_unreachable_authority_is_unavailable_and_a_wrong_ca_says_why() {
    let setup = setup(Vec::new()).await;
    let tenant = setup.config.registry.all()[0].clone();
    // A client that does not trust the emulator's CA.
    let untrusting = TokenSource::new(reqwest::Client::new());
    let error = untrusting.token(&tenant).await.expect_err("untrusted");
    assert!(
        matches!(&error, TokenError::Unavailable { detail } if detail.contains("certificate")),
        "{error:?}"
    );
    assert!(!error.to_string().contains("https://"), "{error}");
    setup.stop().await;
}

/// Whether `text` holds a GUID (8-4-4-4-12 hex digits) anywhere.
fn contains_guid(text: &str) -> bool {
    text.as_bytes()
        .windows(36)
        .filter_map(|window| std::str::from_utf8(window).ok())
        .any(|candidate| uuid::Uuid::parse_str(candidate).is_ok() && candidate.contains('-'))
}
