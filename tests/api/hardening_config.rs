//! Issue 9, configuration and credentials: values `check-config` accepted and `serve` crashed
//! on, credential files others may read, authentication off on a public address, and Entra's
//! ids echoed to callers.

use crate::helpers::{captured_logs, emulator_options, fault, spawn_app};
use scoregate::emulator::FaultProfile;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scoregate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoregate"))
}

/// A fresh directory for a test's files, removed on drop.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("scoregate-hardening-")
        .tempdir()
        .unwrap()
}

/// Whether `text` holds something shaped like a GUID (`8-4-4-4-12` hex digits).
fn has_guid(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(35)).any(|start| {
        bytes[start..start + 36]
            .iter()
            .enumerate()
            .all(|(index, byte)| match index {
                8 | 13 | 18 | 23 => *byte == b'-',
                _ => byte.is_ascii_hexdigit(),
            })
    })
}

#[test]
fn check_config_refuses_a_stale_window_that_would_crash_the_cache_and_names_the_key() {
    let dir = tempdir();
    let path = dir.path().join("scoregate.toml");
    std::fs::write(
        &path,
        "[auth]\nenabled = false\n[cache]\nstale_if_error_seconds = 100000000000\n",
    )
    .unwrap();
    let output = scoregate().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cache.stale_if_error_seconds: must be at most 31536000, not 100000000000"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_authentication_on_a_public_address() {
    let dir = tempdir();
    let path = dir.path().join("scoregate.toml");
    std::fs::write(
        &path,
        "[server]\nbind = \"0.0.0.0:0\"\n[auth]\nenabled = false\n[refresh]\nenabled = false\n",
    )
    .unwrap();
    let mut child = scoregate()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit at once; a gateway that started would run until killed.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve started without authentication on 0.0.0.0");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("auth.enabled: authentication is off but server.bind (0.0.0.0:0) is not a loopback address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("allow_unauthenticated_non_loopback = true"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn check_config_warns_about_a_secret_file_others_may_read_without_showing_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let secret = dir.path().join("contoso.secret");
    std::fs::write(&secret, "never-shown-secret\n").unwrap();
    let path = dir.path().join("scoregate.toml");
    std::fs::write(
        &path,
        "[auth]\nenabled = false\n[[tenants]]\nid = \"contoso\"\ntenant_id = \"8f2c4e1a-1b2c-4d5e-8f90-123456789abc\"\nclient_id = \"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\"\nclient_secret = { file = \"contoso.secret\" }\n",
    )
    .unwrap();
    let expected = format!(
        "warning: tenants[0] (id \"contoso\").client_secret.file: {} may be read or written by group or others (mode 0644)",
        secret.display()
    );
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = scoregate().arg("check-config").arg(&path).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert_eq!(stdout.contains(&expected), warned, "{mode:o}: {stdout}");
        assert_eq!(stdout.contains("warning:"), warned, "{mode:o}: {stdout}");
        // The log line at load says the same (standard error).
        assert_eq!(
            stderr.contains("may be read or written by group or others"),
            warned,
            "{mode:o}: {stderr}"
        );
        assert!(!stdout.contains("never-shown-secret") && !stderr.contains("never-shown-secret"));
    }
}

#[tokio::test]
async fn entra_refusals_reach_callers_with_the_aadsts_code_but_no_client_or_tenant_id() {
    let app = spawn_app(emulator_options(
        2,
        vec![
            fault(FaultProfile::Revoked, &["contoso"]),
            fault(FaultProfile::ExpiredSecret, &["fabrikam"]),
        ],
    ))
    .await;
    for (slug, code) in [("contoso", "AADSTS7000215"), ("fabrikam", "AADSTS7000222")] {
        let tenant = app
            .emulator
            .tenants()
            .into_iter()
            .find(|tenant| tenant.slug == slug)
            .unwrap();
        let response = app.get(&format!("/tenants/{slug}/score")).await;
        assert_eq!(response.status().as_u16(), 502);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "upstream_auth", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(code), "{detail}");
        let shown = body.to_string();
        for id in [tenant.client_id.to_string(), tenant.tenant_id.to_string()] {
            assert!(
                !shown.to_lowercase().contains(&id.to_lowercase()),
                "{shown}"
            );
        }
        // The request id is the gateway's own GUID; nothing else may be one.
        assert!(
            !has_guid(detail) && !has_guid(body["title"].as_str().unwrap()),
            "{shown}"
        );
        for noise in ["Trace ID", "Correlation ID", "Timestamp"] {
            assert!(!shown.contains(noise), "{shown}");
        }
        let stats = app.emulator.stats().tenant(slug);
        assert_eq!((stats.token_requests, stats.score_calls), (1, 0));
    }
    // The ids stay useful to the operator: the log has Entra's correlation id, at warn.
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("WARN")
            && line.contains("Entra ID answered a token request with an error")
            && line.contains("correlation_id=")
            && line.contains("tenant=fabrikam")),
        "{logs}"
    );
}
