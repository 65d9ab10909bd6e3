//! `scoregate check-tenants` and `scoregate consent-url` as an operator runs them: the real
//! binary against the real emulator, each fault profile named with its code and its fix, the
//! exit codes, the filters, and the consent URL in every cloud.

use crate::helpers::{capture_logs, credential, emulator_options, fault, start_emulator};
use scoregate::emulator::{CredentialKind, Emulator, EmulatorOptions, FaultProfile};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::collections::BTreeMap;

/// What one run of the binary printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `scoregate` with `args` and the given environment, without blocking the runtime the
/// emulator answers on.
async fn scoregate(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SCOREGATE_CONFIG")
        .output()
        .await
        .expect("the binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The emulator's configuration with `metrics`, written to a fresh directory (kept alive by the
/// returned guard).
fn write_config(emulator: &Emulator, metrics: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("scoregate-check-")
        .tempdir()
        .expect("a temporary directory");
    let metrics: Vec<String> = metrics.iter().map(|m| m.to_string()).collect();
    let path = emulator
        .write_config_with_metrics(&dir.path().join("scoregate.toml"), &metrics)
        .expect("the emulator writes a configuration");
    (dir, path.display().to_string())
}

/// Every client secret and private key of the emulator's tenants.
fn secrets(emulator: &Emulator) -> Vec<String> {
    emulator
        .tenants()
        .iter()
        .flat_map(|tenant| {
            let mut secrets = Vec::new();
            if let Some(secret) = tenant.credential.secret() {
                secrets.push(secret.expose_secret().to_owned());
            }
            if let Some(certificate) = tenant.credential.certificate() {
                secrets.push(certificate.private_key_pem.expose_secret().to_owned());
            }
            secrets
        })
        .collect()
}

/// The JSON findings by "tenant/metric".
fn by_place(stdout: &str) -> BTreeMap<String, Value> {
    let findings: Vec<Value> = serde_json::from_str(stdout).expect("a JSON array");
    findings
        .into_iter()
        .map(|finding| {
            let place = format!(
                "{}/{}",
                finding["tenant"].as_str().unwrap(),
                finding["metric"].as_str().unwrap()
            );
            (place, finding)
        })
        .collect()
}

/// The consent URL the emulator's tenant `slug` should get.
fn expected_consent_url(emulator: &Emulator, slug: &str) -> String {
    let tenant = emulator.tenant(slug).expect("the tenant exists");
    format!(
        "{}/{}/adminconsent?client_id={}",
        emulator.base_url().trim_end_matches('/'),
        tenant.tenant_id,
        tenant.client_id
    )
}

#[tokio::test]
async fn each_fault_profile_is_named_with_its_code_and_fix_and_the_run_exits_1() {
    capture_logs();
    let emulator = start_emulator(EmulatorOptions {
        credentials: vec![credential(CredentialKind::Certificate, &["relecloud"])],
        ..emulator_options(
            10,
            vec![
                fault(FaultProfile::ExpiredSecret, &["fabrikam", "relecloud"]),
                fault(FaultProfile::NotConsented, &["northwind"]),
                fault(FaultProfile::Forbidden, &["litware"]),
                fault(FaultProfile::GraphForbidden, &["adatum"]),
                fault(FaultProfile::Unlicensed, &["tailspin"]),
                fault(FaultProfile::Retired, &["wingtip"]),
                fault(FaultProfile::Throttled, &["woodgrove"]),
                fault(FaultProfile::Revoked, &["proseware"]),
            ],
        )
    })
    .await;
    let (_dir, config) = write_config(&emulator, &["device", "secure"]);
    let run = scoregate(
        &["check-tenants", "--config", &config, "--format", "json"],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let findings = by_place(&run.stdout);
    let expected = [
        ("contoso/device", "ok"),
        ("contoso/secure", "ok"),
        ("fabrikam/device", "secret_expired"),
        ("fabrikam/secure", "secret_expired"),
        ("northwind/device", "consent_missing"),
        ("northwind/secure", "consent_missing"),
        ("litware/device", "permission_missing"),
        ("litware/secure", "ok"),
        ("adatum/device", "ok"),
        ("adatum/secure", "permission_missing"),
        ("tailspin/device", "licence_missing"),
        ("tailspin/secure", "ok"),
        ("wingtip/device", "upstream_gone"),
        ("wingtip/secure", "ok"),
        ("woodgrove/device", "upstream_throttled"),
        ("woodgrove/secure", "upstream_throttled"),
        ("proseware/device", "secret_invalid"),
        ("proseware/secure", "secret_invalid"),
        ("relecloud/device", "secret_expired"),
        ("relecloud/secure", "secret_expired"),
    ];
    assert_eq!(
        findings.keys().collect::<Vec<_>>().len(),
        expected.len(),
        "{}",
        run.stdout
    );
    for (place, code) in expected {
        let finding = &findings[place];
        assert_eq!(finding["code"], code, "{place}: {finding}");
        assert_eq!(finding["ok"], code == "ok", "{place}: {finding}");
        let advice = finding["advice"].as_str().unwrap();
        assert_eq!(advice.is_empty(), code == "ok", "{place}: {finding}");
    }
    let advice = |place: &str| findings[place]["advice"].as_str().unwrap().to_owned();
    assert!(advice("fabrikam/device").contains("Client secrets"));
    assert!(advice("relecloud/device").contains("certificate registered on the app has expired"));
    assert!(advice("litware/device").contains("Score.Read.All on WindowsDefenderATP"));
    assert!(advice("adatum/secure").contains("SecurityEvents.Read.All on Microsoft Graph"));
    assert!(advice("wingtip/device").contains("enable `secure`"));
    assert!(advice("woodgrove/device").contains("Wait 30 s"));
    assert!(findings["fabrikam/device"]["detail"]
        .as_str()
        .unwrap()
        .contains("AADSTS7000222"));
    assert!(findings["northwind/secure"]["detail"]
        .as_str()
        .unwrap()
        .contains("AADSTS700016"));
    assert!(findings["tailspin/device"]["detail"]
        .as_str()
        .unwrap()
        .contains("No Tvm license"));
    // The consent URL comes with what consent fixes, and only then.
    for place in ["northwind/device", "litware/device", "adatum/secure"] {
        let tenant = place.split('/').next().unwrap();
        assert_eq!(
            findings[place]["consent_url"],
            expected_consent_url(&emulator, tenant),
            "{place}"
        );
    }
    for place in ["contoso/device", "fabrikam/device", "wingtip/device"] {
        assert!(findings[place].get("consent_url").is_none(), "{place}");
    }
    // One token per API and one call per metric: a check costs no more than that.
    let stats = emulator.stats();
    let contoso = stats.tenant("contoso");
    assert_eq!(contoso.token_requests, 2);
    assert_eq!(contoso.defender_calls, 1);
    assert_eq!(contoso.graph_calls, 1);
    let throttled = stats.tenant("woodgrove");
    assert_eq!(throttled.defender_calls, 1, "a 429 is not retried");
    assert_eq!(stats.tenant("fabrikam").defender_calls, 0);
    for secret in secrets(&emulator) {
        assert!(!run.stdout.contains(&secret) && !run.stderr.contains(&secret));
    }
}

#[tokio::test]
async fn the_text_report_gives_the_fix_and_the_consent_url_under_each_failure() {
    capture_logs();
    let emulator = start_emulator(emulator_options(
        3,
        vec![
            fault(FaultProfile::ExpiredSecret, &["fabrikam"]),
            fault(FaultProfile::NotConsented, &["northwind"]),
        ],
    ))
    .await;
    let (_dir, config) = write_config(&emulator, &["device"]);
    let run = scoregate(&["check-tenants", "--config", &config], &[]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ok    contoso/device: score "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("FAIL  fabrikam/device: secret_expired: "),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("      what to do: The client secret has expired"));
    assert!(lines[3].starts_with("FAIL  northwind/device: consent_missing: "));
    assert!(lines[4].starts_with("      what to do: The app is not consented"));
    assert_eq!(
        lines[5],
        format!(
            "      consent URL: {}",
            expected_consent_url(&emulator, "northwind")
        )
    );
    assert_eq!(lines[6], "2 of 3 check(s) failed");
    assert_eq!(lines.len(), 7);
}

#[tokio::test]
async fn filters_pick_tenants_and_metrics_and_all_ok_exits_0() {
    capture_logs();
    let emulator = start_emulator(emulator_options(3, vec![])).await;
    let (_dir, config) = write_config(&emulator, &["device", "exposure", "secure"]);
    let northwind = emulator.tenant("northwind").unwrap().tenant_id.to_string();
    let run = scoregate(
        &[
            "check-tenants",
            "--config",
            &config,
            "--tenant",
            "fabrikam",
            "--tenant",
            &northwind,
            "--metric",
            "secure",
            "--metric",
            "exposure",
            "--format",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let findings = by_place(&run.stdout);
    assert_eq!(
        findings.keys().cloned().collect::<Vec<_>>(),
        [
            "fabrikam/exposure",
            "fabrikam/secure",
            "northwind/exposure",
            "northwind/secure"
        ]
    );
    assert!(findings.values().all(|finding| finding["ok"] == true));
    let stats = emulator.stats();
    assert_eq!(stats.tenant("contoso").token_requests, 0);
    let fabrikam = stats.tenant("fabrikam");
    assert_eq!(
        (
            fabrikam.score_calls,
            fabrikam.exposure_calls,
            fabrikam.graph_calls
        ),
        (0, 1, 1)
    );
}

#[tokio::test]
async fn a_bad_selection_or_configuration_exits_2_without_calling_anyone() {
    capture_logs();
    let emulator = start_emulator(emulator_options(2, vec![])).await;
    let (dir, config) = write_config(&emulator, &["device"]);
    let unknown = scoregate(
        &["check-tenants", "--config", &config, "--tenant", "nobody"],
        &[],
    )
    .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no tenant \"nobody\""),
        "{}",
        unknown.stderr
    );
    let not_enabled = scoregate(
        &["check-tenants", "--config", &config, "--metric", "secure"],
        &[],
    )
    .await;
    assert_eq!(not_enabled.code, 2, "{}", not_enabled.stderr);
    assert!(not_enabled.stderr.contains("metric secure"));
    let misspelt = scoregate(
        &["check-tenants", "--config", &config, "--metric", "devices"],
        &[],
    )
    .await;
    assert_eq!(misspelt.code, 2, "{}", misspelt.stderr);
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[upstream]\nnot_a_key = 1\n").unwrap();
    let broken = scoregate(
        &["check-tenants", "--config", &broken.display().to_string()],
        &[],
    )
    .await;
    assert_eq!(broken.code, 2, "{}", broken.stderr);
    assert!(broken.stderr.contains("not_a_key"), "{}", broken.stderr);
    assert_eq!(emulator.stats().total.token_requests, 0);
}

#[tokio::test]
async fn consent_url_names_the_login_host_of_each_cloud() {
    let dir = tempfile::Builder::new()
        .prefix("scoregate-consent-")
        .tempdir()
        .unwrap();
    let client_id = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    let clouds = [
        ("commercial", "https://login.microsoftonline.com"),
        ("gcc", "https://login.microsoftonline.com"),
        ("gcc-high", "https://login.microsoftonline.us"),
        ("dod", "https://login.microsoftonline.us"),
        ("custom", "https://login.example.test"),
    ];
    let mut toml = String::from("[auth]\nenabled = false\n");
    for (index, (cloud, _)) in clouds.iter().enumerate() {
        toml.push_str(&format!(
            "\n[[tenants]]\nid = \"{cloud}\"\ntenant_id = \"8f2c4e1a-1b2c-4d5e-8f90-12345678900{index}\"\n\
             client_id = \"{client_id}\"\nclient_secret = {{ env = \"SCOREGATE_TEST_SECRET\" }}\n\
             cloud = \"{cloud}\"\n"
        ));
        if *cloud == "custom" {
            toml.push_str(
                "authority_host = \"https://login.example.test\"\n\
                 api_base = \"https://api.example.test\"\n",
            );
        }
    }
    let path = dir.path().join("clouds.toml");
    std::fs::write(&path, toml).unwrap();
    let config = path.display().to_string();
    let env = [("SCOREGATE_TEST_SECRET", "not-a-real-secret")];
    for (index, (cloud, host)) in clouds.iter().enumerate() {
        let run = scoregate(
            &["consent-url", "--config", &config, "--tenant", cloud],
            &env,
        )
        .await;
        assert_eq!(run.code, 0, "{cloud}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            format!(
                "{host}/8f2c4e1a-1b2c-4d5e-8f90-12345678900{index}/adminconsent?client_id={client_id}\n"
            ),
            "{cloud}"
        );
    }
    // By Entra tenant id too, with the redirect URI the app registered.
    let run = scoregate(
        &[
            "consent-url",
            "--config",
            &config,
            "--tenant",
            "8f2c4e1a-1b2c-4d5e-8f90-123456789002",
            "--redirect-uri",
            "https://localhost/",
        ],
        &env,
    )
    .await;
    assert_eq!(
        run.stdout,
        format!(
            "https://login.microsoftonline.us/8f2c4e1a-1b2c-4d5e-8f90-123456789002/adminconsent\
             ?client_id={client_id}&redirect_uri=https%3A%2F%2Flocalhost%2F\n"
        )
    );
    let unknown = scoregate(
        &["consent-url", "--config", &config, "--tenant", "nobody"],
        &env,
    )
    .await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no tenant \"nobody\""));
}
