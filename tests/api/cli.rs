//! The command line as an operator uses it: `check-config`, `openapi`.

use crate::helpers::{emulator_options, spawn_app};
use std::process::Command;

fn scoregate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoregate"))
}

#[tokio::test]
async fn check_config_accepts_the_emulators_configuration_and_prints_no_secret() {
    let app = spawn_app(emulator_options(4, vec![])).await;
    let output = scoregate()
        .arg("check-config")
        .arg(&app.config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("OK, 4 tenant(s)"), "{stdout}");
    assert!(stdout.contains("cloud custom: 4"), "{stdout}");
    for secret in app.secrets() {
        assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    }
}

#[test]
fn check_config_names_every_bad_key_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("scoregate-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[tenants]]\nid = \"a b\"\ntenant_id = \"x\"\nclient_id = \"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\"\nclient_secret = { env = \"SCOREGATE_TEST_UNSET_VARIABLE\" }\n",
    )
    .unwrap();
    let output = scoregate().arg("check-config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tenants[0] (id \"a b\").id"), "{stderr}");
    assert!(
        stderr.contains("tenants[0] (id \"a b\").tenant_id: \"x\" is not a GUID"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SCOREGATE_TEST_UNSET_VARIABLE is not set"),
        "{stderr}"
    );
}

#[test]
fn openapi_prints_the_committed_document() {
    let output = scoregate().arg("openapi").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        scoregate::api::openapi_json()
    );
}
