use super::diagnosis::{fetch_failed, token_refused, token_timed_out};
use super::*;
use crate::code::Code;
use crate::policy::testing::{registration, DEFENDER_LIMITS};
use crate::policy::FetchError;
use crate::tenants::Cloud;
use crate::token::TokenError;
use crate::upstream::{UpstreamError, UpstreamService};

fn rejected(codes: &str, detail: &str) -> TokenError {
    TokenError::Rejected {
        status: 401,
        codes: codes.to_owned(),
        detail: detail.to_owned(),
    }
}

fn denied(status: u16, detail: &str) -> FetchError {
    FetchError::Upstream(UpstreamError::Denied {
        status,
        detail: detail.to_owned(),
    })
}

#[test]
fn each_aadsts_code_maps_to_its_finer_code() {
    let tenant = registration("contoso", DEFENDER_LIMITS);
    let cases = [
        ("AADSTS7000222", CheckCode::SecretExpired),
        ("AADSTS7000215", CheckCode::SecretInvalid),
        ("AADSTS700016", CheckCode::ConsentMissing),
        ("AADSTS65001", CheckCode::ConsentMissing),
        ("AADSTS90002", CheckCode::TenantNotFound),
        ("AADSTS500011", CheckCode::LicenceMissing),
        ("AADSTS7000218", CheckCode::Gateway(Code::UpstreamAuth)),
    ];
    for (codes, expected) in cases {
        let diagnosis = token_refused(&tenant, Metric::Device, &rejected(codes, "refused."));
        assert_eq!(diagnosis.code, expected, "{codes}");
        assert!(!diagnosis.advice.is_empty(), "{codes}");
    }
}

#[test]
fn codes_are_read_from_the_description_when_entra_sent_none() {
    let tenant = registration("contoso", DEFENDER_LIMITS);
    let error = rejected(
        "invalid_client",
        "AADSTS7000222: The provided client secret keys for app '(id removed)' are expired.",
    );
    let diagnosis = token_refused(&tenant, Metric::Secure, &error);
    assert_eq!(diagnosis.code, CheckCode::SecretExpired);
    assert!(diagnosis.advice.contains("Client secrets"), "{diagnosis:?}");
}

#[test]
fn consent_and_permission_findings_carry_the_consent_url() {
    let tenant = Arc::new(registration("contoso", DEFENDER_LIMITS));
    let finding = Finding::from_diagnosis(
        &tenant,
        Metric::Device,
        token_refused(&tenant, Metric::Device, &rejected("AADSTS700016", "x")),
    );
    assert_eq!(finding.code, "consent_missing");
    assert_eq!(
        finding.consent_url.as_deref(),
        Some(
            "https://login.example.test/8f2c4e1a-1b2c-4d5e-8f90-123456789abc/adminconsent\
             ?client_id=11111111-2222-3333-4444-555555555555"
        )
    );
    let finding = Finding::from_diagnosis(
        &tenant,
        Metric::Device,
        token_refused(&tenant, Metric::Device, &rejected("AADSTS7000222", "x")),
    );
    assert_eq!(finding.consent_url, None);
}

#[test]
fn a_403_names_the_permission_and_the_api_of_the_metric() {
    let tenant = registration("contoso", DEFENDER_LIMITS);
    let defender = fetch_failed(&tenant, Metric::Exposure, &denied(403, "Forbidden"));
    assert_eq!(defender.code, CheckCode::PermissionMissing);
    assert!(defender
        .advice
        .contains("Score.Read.All on WindowsDefenderATP"));
    assert!(defender.needs_consent);
    let graph = fetch_failed(&tenant, Metric::Secure, &denied(403, "Forbidden"));
    assert_eq!(graph.code, CheckCode::PermissionMissing);
    assert!(graph
        .advice
        .contains("SecurityEvents.Read.All on Microsoft Graph"));
}

#[test]
fn no_tvm_licence_is_a_missing_licence_and_other_refusals_are_upstream_auth() {
    let tenant = registration("contoso", DEFENDER_LIMITS);
    let unlicensed = fetch_failed(
        &tenant,
        Metric::Device,
        &denied(401, "Defender answered 401 Unauthorized: No Tvm license"),
    );
    assert_eq!(unlicensed.code, CheckCode::LicenceMissing);
    let other = fetch_failed(&tenant, Metric::Device, &denied(401, "Unauthorized"));
    assert_eq!(other.code, CheckCode::Gateway(Code::UpstreamAuth));
    let audience = fetch_failed(
        &tenant,
        Metric::Device,
        &denied(
            403,
            "Defender answered 403 Forbidden: The access token audience is invalid.",
        ),
    );
    assert_eq!(audience.code, CheckCode::Gateway(Code::UpstreamAuth));
    assert!(audience.advice.contains("`scope`"), "{audience:?}");
}

#[test]
fn gone_throttled_timeout_and_failed_keep_the_gateways_codes() {
    let tenant = registration("contoso", DEFENDER_LIMITS);
    let cases = [
        (
            UpstreamError::Gone {
                detail: "gone".into(),
            },
            Code::UpstreamGone,
        ),
        (
            UpstreamError::Throttled {
                service: UpstreamService::Defender,
                retry_after: std::time::Duration::from_secs(30),
            },
            Code::UpstreamThrottled,
        ),
        (
            UpstreamError::Timeout {
                service: UpstreamService::Defender,
            },
            Code::UpstreamTimeout,
        ),
        (
            UpstreamError::Failed {
                service: UpstreamService::Defender,
                detail: "500".into(),
            },
            Code::UpstreamError,
        ),
    ];
    for (error, code) in cases {
        let diagnosis = fetch_failed(&tenant, Metric::Device, &FetchError::Upstream(error));
        assert_eq!(diagnosis.code, CheckCode::Gateway(code));
    }
    let entra = token_timed_out(&tenant);
    assert_eq!(entra.code, CheckCode::Gateway(Code::UpstreamTimeout));
    assert!(entra.advice.contains("login.example.test"), "{entra:?}");
    let gone = fetch_failed(
        &tenant,
        Metric::Device,
        &FetchError::Upstream(UpstreamError::Gone {
            detail: "gone".into(),
        }),
    );
    assert!(gone.advice.contains("enable `secure`"), "{gone:?}");
}

#[test]
fn the_consent_url_follows_the_tenants_authority_host() {
    for (cloud, host) in [
        (Cloud::Commercial, "https://login.microsoftonline.com"),
        (Cloud::GccHigh, "https://login.microsoftonline.us/"),
        (Cloud::Custom, "https://127.0.0.1:8443/base/"),
    ] {
        let mut tenant = registration("contoso", DEFENDER_LIMITS);
        tenant.cloud = cloud;
        tenant.authority_host = url::Url::parse(host).unwrap().into();
        let url = admin_consent_url(&tenant, Some("https://localhost/done"));
        let prefix = host.trim_end_matches('/');
        assert_eq!(
            url,
            format!(
                "{prefix}/8f2c4e1a-1b2c-4d5e-8f90-123456789abc/adminconsent?client_id=\
                 11111111-2222-3333-4444-555555555555&redirect_uri=https%3A%2F%2Flocalhost%2Fdone"
            )
        );
    }
}

#[test]
fn the_plan_selects_tenants_by_either_id_and_metrics_they_have() {
    let mut both = registration("contoso", DEFENDER_LIMITS);
    both.metrics = vec![Metric::Device, Metric::Secure];
    let mut other = registration("fabrikam", DEFENDER_LIMITS);
    other.tenant_id = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into();
    let registry = Registry::new(vec![both, other]);
    let names = |plan: Vec<(Arc<Tenant>, Metric)>| -> Vec<String> {
        plan.iter()
            .map(|(tenant, metric)| format!("{}/{metric}", tenant.id))
            .collect()
    };
    let all = plan(&registry, &Selection::default()).unwrap();
    assert_eq!(
        names(all),
        ["contoso/device", "contoso/secure", "fabrikam/device"]
    );
    let selection = Selection {
        tenants: vec!["0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0".into()],
        metrics: vec![],
    };
    assert_eq!(
        names(plan(&registry, &selection).unwrap()),
        ["fabrikam/device"]
    );
    let selection = Selection {
        tenants: vec![],
        metrics: vec![Metric::Secure],
    };
    assert_eq!(
        names(plan(&registry, &selection).unwrap()),
        ["contoso/secure"]
    );
    let selection = Selection {
        tenants: vec!["fabrikam".into()],
        metrics: vec![Metric::Secure],
    };
    assert_eq!(
        plan(&registry, &selection).unwrap_err(),
        SelectionError::MetricNotEnabled(Metric::Secure)
    );
    let selection = Selection {
        tenants: vec!["nobody".into()],
        metrics: vec![],
    };
    assert_eq!(
        plan(&registry, &selection).unwrap_err(),
        SelectionError::UnknownTenant("nobody".into())
    );
}

#[test]
fn the_text_report_counts_failures_and_shows_advice_and_consent() {
    let findings = vec![
        Finding {
            tenant: "contoso".into(),
            metric: Metric::Device,
            ok: true,
            code: "ok",
            detail: "score 1".into(),
            advice: String::new(),
            consent_url: None,
        },
        Finding {
            tenant: "fabrikam".into(),
            metric: Metric::Secure,
            ok: false,
            code: "consent_missing",
            detail: "refused".into(),
            advice: "consent".into(),
            consent_url: Some("https://login.example.test/x/adminconsent".into()),
        },
    ];
    let text = render_text(&findings);
    assert_eq!(
        text,
        "ok    contoso/device: score 1\n\
         FAIL  fabrikam/secure: consent_missing: refused\n      what to do: consent\n      \
         consent URL: https://login.example.test/x/adminconsent\n\
         1 of 2 check(s) failed\n"
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&findings)).unwrap();
    assert_eq!(json[0]["metric"], "device");
    assert!(json[0].get("consent_url").is_none());
    assert_eq!(
        json[1]["consent_url"],
        "https://login.example.test/x/adminconsent"
    );
}
