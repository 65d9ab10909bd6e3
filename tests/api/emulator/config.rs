//! The gateway configuration the emulator writes, and secrets kept out of stdout.

use super::{secret_of, start};
use scoregate::emulator::{EmulatorOptions, TenantCredential};
use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A fresh empty directory under the system temp dir, removed on drop.
fn tempdir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("scoregate-{name}-"))
        .tempdir()
        .expect("a temp dir")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn write_config_writes_the_gateway_configuration_with_matching_secrets() {
    let app = start(EmulatorOptions {
        tenants: 5,
        faults: vec!["flaky=northwind".parse().unwrap()],
        credentials: vec![
            "certificate=fabrikam".parse().unwrap(),
            "shared=litware,adatum".parse().unwrap(),
        ],
        ..EmulatorOptions::default()
    })
    .await;
    let dir = tempdir("config");
    let path = app.emu.write_config(dir.path()).expect("written");
    assert_eq!(path, dir.path().join("scoregate.toml"));

    let text = std::fs::read_to_string(&path).unwrap();
    let config: toml::Value = toml::from_str(&text).expect("valid TOML");
    let table = config.as_table().unwrap();
    let mut top: Vec<&str> = table.keys().map(String::as_str).collect();
    top.sort();
    assert_eq!(top, ["auth", "server", "tenants", "upstream"]);
    assert_eq!(config["server"]["bind"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(config["auth"]["enabled"].as_bool(), Some(false));
    let upstream = &config["upstream"];
    assert_eq!(upstream["cloud"].as_str(), Some("custom"));
    assert_eq!(
        upstream["authority_host"].as_str(),
        Some(app.emu.base_url().as_str())
    );
    assert_eq!(
        upstream["api_base"].as_str(),
        Some(app.emu.base_url().as_str())
    );
    assert_eq!(upstream["extra_ca_file"].as_str(), Some("emulator-ca.pem"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("emulator-ca.pem")).unwrap(),
        app.emu.ca_cert_pem()
    );

    let written = config["tenants"].as_array().unwrap();
    let tenants = app.emu.tenants();
    assert_eq!(written.len(), tenants.len());
    for (entry, tenant) in written.iter().zip(&tenants) {
        let keys: Vec<&str> = entry
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert_eq!(entry["id"].as_str(), Some(tenant.slug.as_str()));
        assert_eq!(entry["name"].as_str(), Some(tenant.name.as_str()));
        assert_eq!(
            entry["tenant_id"].as_str(),
            Some(tenant.tenant_id.to_string().as_str())
        );
        assert_eq!(
            entry["client_id"].as_str(),
            Some(tenant.client_id.to_string().as_str())
        );
        let tags: Vec<&str> = entry["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(tags, tenant.tags);
        match &tenant.credential {
            TenantCredential::Secret(secret) => {
                let file = entry["client_secret"]["file"].as_str().unwrap();
                assert_eq!(file, format!("secrets/{}.secret", tenant.slug));
                let on_disk = std::fs::read_to_string(dir.path().join(file)).unwrap();
                assert_eq!(on_disk, secret.expose_secret(), "no trailing newline");
            }
            TenantCredential::SharedSecret(secret) => {
                assert_eq!(tenant.client_id, app.emu.msp_client_id());
                let file = entry["client_secret"]["file"].as_str().unwrap();
                assert_eq!(file, "secrets/msp-app.secret");
                assert_eq!(
                    std::fs::read_to_string(dir.path().join(file)).unwrap(),
                    secret.expose_secret()
                );
            }
            TenantCredential::Certificate(certificate) => {
                let file = entry["certificate"]["file"].as_str().unwrap();
                assert_eq!(file, format!("secrets/{}.pem", tenant.slug));
                let pem = std::fs::read_to_string(dir.path().join(file)).unwrap();
                assert_eq!(pem, certificate.pem_bundle().expose_secret());
            }
        }
        // Secrets are referenced, never inlined.
        if let Some(secret) = tenant.credential.secret() {
            assert!(!text.contains(secret.expose_secret()));
        }
    }
    assert_eq!(
        written[2]["tags"].as_array().unwrap().len(),
        2,
        "tier and fault"
    );

    #[cfg(unix)]
    {
        let secrets = dir.path().join("secrets");
        assert_eq!(mode(&secrets), 0o700);
        for file in std::fs::read_dir(&secrets).unwrap() {
            assert_eq!(mode(&file.unwrap().path()), 0o600);
        }
    }

    // The gateway's own loader accepts it unchanged.
    let loaded = scoregate::config::Config::load_with_env(&path, Vec::<(String, String)>::new());
    assert!(
        loaded.is_ok(),
        "{}",
        loaded.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

/// Reads a child's stdout until `marker`, with a deadline.
async fn read_until(reader: &mut BufReader<tokio::process::ChildStdout>, marker: &str) -> String {
    let mut seen = String::new();
    let read = async {
        let mut line = String::new();
        while reader.read_line(&mut line).await.expect("stdout") > 0 {
            seen.push_str(&line);
            if line.contains(marker) {
                return;
            }
            line.clear();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no {marker:?} in: {seen}"));
    seen
}

#[tokio::test]
async fn the_emulate_command_prints_where_it_listens_and_never_a_secret() {
    let dir = tempdir("cli");
    let config = dir.path().join("gateway.toml");
    let ca = dir.path().join("ca.pem");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scoregate"))
        .args([
            "emulate",
            "--bind",
            "127.0.0.1:0",
            "--tenants",
            "6",
            "--seed",
            "3",
        ])
        .args([
            "--credential",
            "certificate=contoso",
            "--credential",
            "shared=fabrikam",
        ])
        .args(["--fault", "slow=0.2", "--fault", "revoked=litware"])
        .arg("--write-config")
        .arg(&config)
        .arg("--cert-out")
        .arg(&ca)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let printed = read_until(&mut stdout, "Press Ctrl-C").await;
    let port: u16 = printed
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|port| port.parse().ok())
        .expect("the real port is printed");
    assert_ne!(port, 0);
    assert!(printed.contains(&ca.display().to_string()), "{printed}");
    assert!(printed.contains("litware"), "{printed}");

    // Exercise it so that logs are written, then stop it.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let stats = client
        .get(format!("https://127.0.0.1:{port}/_emulator/stats"))
        .send()
        .await
        .expect("the emulator answers");
    assert_eq!(stats.status(), 200);
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest).await;
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await;

    // The same seed in-process gives the same secrets the command wrote.
    let twin = start(EmulatorOptions {
        tenants: 6,
        seed: 3,
        credentials: vec![
            "certificate=contoso".parse().unwrap(),
            "shared=fabrikam".parse().unwrap(),
        ],
        ..EmulatorOptions::default()
    })
    .await;
    let mut secrets: Vec<String> = twin
        .emu
        .tenants()
        .iter()
        .filter(|tenant| tenant.credential.secret().is_some())
        .map(secret_of)
        .collect();
    let key = std::fs::read_to_string(dir.path().join("secrets/contoso.pem")).unwrap();
    let key_body = key
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .expect("a key")
        .lines()
        .nth(1)
        .expect("a key line")
        .to_owned();
    secrets.push(key_body);
    for secret in &secrets {
        assert_eq!(
            std::fs::read_dir(dir.path().join("secrets"))
                .unwrap()
                .filter_map(|file| std::fs::read_to_string(file.unwrap().path()).ok())
                .filter(|content| content.contains(secret.as_str()))
                .count(),
            1,
            "each secret is written once"
        );
        for (name, output) in [("stdout", &printed), ("stdout", &rest), ("stderr", &stderr)] {
            assert!(
                !output.contains(secret.as_str()),
                "a secret leaked to {name}"
            );
        }
    }
}
