//! Writes the gateway configuration that matches a running emulator: the TOML file, the CA
//! certificate beside it (`emulator-ca.pem`) and the secrets in `secrets/` (0700, files 0600).
//!
//! Writes exactly the keys the gateway's configuration accepts (it denies unknown ones).
//! Secrets go to files only; the TOML names them by relative path, which the gateway resolves
//! against the configuration file's directory.

use super::options::CredentialKind;
use super::tenants::{EmulatedTenant, TenantCredential};
use super::EmulatorError;
use secrecy::ExposeSecret;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// File name of the CA certificate written beside the configuration.
pub const CA_FILE_NAME: &str = "emulator-ca.pem";
/// Directory of the secret files, beside the configuration.
pub const SECRETS_DIR_NAME: &str = "secrets";
/// File name of the shared MSP app's secret, inside the secrets directory.
pub const MSP_SECRET_FILE_NAME: &str = "msp-app.secret";

/// What goes into one configuration.
pub(crate) struct ConfigContents<'a> {
    /// The emulator's base URL (authority host and API base).
    pub base_url: &'a str,
    /// The CA certificate, PEM.
    pub ca_pem: &'a str,
    /// The tenants, with their credentials.
    pub tenants: &'a [EmulatedTenant],
    /// Seed, for the header comment.
    pub seed: u64,
    /// `[upstream] metrics` to write (`device`, `exposure`, `secure`); empty writes none, and the
    /// gateway's default (`device`) applies.
    pub metrics: &'a [String],
    /// The MSP tenant whose caller apps get tokens (`[auth.entra]`).
    pub msp_tenant_id: uuid::Uuid,
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> EmulatorError + '_ {
    move |source| EmulatorError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A TOML basic string (quoted and escaped).
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// Writes a file readable by its owner only (0600 on Unix), replacing any previous one.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), EmulatorError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(write_error(path))?;
        }
    }
    let mut file = options.open(path).map_err(write_error(path))?;
    file.write_all(contents).map_err(write_error(path))?;
    file.sync_all().map_err(write_error(path))
}

fn create_private_dir(path: &Path) -> Result<(), EmulatorError> {
    fs::create_dir_all(path).map_err(write_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(write_error(path))?;
    }
    Ok(())
}

/// `[auth.entra]` for the emulator's MSP tenant: its caller apps' tokens (see `GET
/// /_emulator/callers`) are accepted once authentication is turned on. The operator mapping
/// comes first: callers match in order, and `ops` carries `Scores.Read.All` too.
fn write_entra(toml: &mut String, contents: &ConfigContents<'_>) {
    let _ = writeln!(
        toml,
        "# Callers with Entra ID tokens from the emulator's MSP tenant (`GET /_emulator/callers`);"
    );
    let _ = writeln!(
        toml,
        "# accepted beside API keys once authentication is on (SCOREGATE__AUTH__ENABLED=true)."
    );
    let _ = writeln!(toml, "[auth.entra]");
    let _ = writeln!(
        toml,
        "tenant_id = {}",
        quoted(&contents.msp_tenant_id.to_string())
    );
    let _ = writeln!(
        toml,
        "audiences = [{}]",
        quoted(super::callers::SCOREGATE_AUDIENCE)
    );
    let _ = writeln!(toml, "cloud = \"custom\"");
    let _ = writeln!(toml, "authority_host = {}", quoted(contents.base_url));
    for (name, role, grant) in [
        (
            "operators",
            "Operator",
            "tenants = [\"*\"]\noperator = true",
        ),
        ("readers", "Scores.Read.All", "tenants = [\"*\"]"),
        ("gold", "Scores.Read.Gold", "tags = [\"gold\"]"),
    ] {
        let _ = writeln!(toml);
        let _ = writeln!(toml, "[[auth.entra.callers]]");
        let _ = writeln!(toml, "name = {}", quoted(name));
        let _ = writeln!(toml, "role = {}", quoted(role));
        let _ = writeln!(toml, "{grant}");
    }
    let _ = writeln!(toml);
}

/// Writes the configuration to `config_path` and its companions beside it; returns the path.
pub(crate) fn write(
    config_path: &Path,
    contents: &ConfigContents<'_>,
) -> Result<PathBuf, EmulatorError> {
    let dir = match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let ca_path = dir.join(CA_FILE_NAME);
    fs::write(&ca_path, contents.ca_pem).map_err(write_error(&ca_path))?;
    let secrets = dir.join(SECRETS_DIR_NAME);
    create_private_dir(&secrets)?;

    let mut toml = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        toml,
        "# Written by `scoregate emulate` (seed {}, {} tenants) for the emulator at {}.",
        contents.seed,
        contents.tenants.len(),
        contents.base_url
    );
    let _ = writeln!(
        toml,
        "# The emulator generates a new CA certificate at every start: rewrite this file when you restart it."
    );
    let _ = writeln!(
        toml,
        "# Secrets are in {SECRETS_DIR_NAME}/ beside this file; paths are relative to this file's directory."
    );
    let _ = writeln!(toml);
    let _ = writeln!(toml, "[server]");
    let _ = writeln!(toml, "bind = \"127.0.0.1:8080\"");
    let _ = writeln!(toml);
    let _ = writeln!(toml, "[auth]");
    let _ = writeln!(
        toml,
        "# The emulator's tenants are test data; authentication is off so the gateway can run on loopback."
    );
    let _ = writeln!(toml, "enabled = false");
    let _ = writeln!(toml);
    write_entra(&mut toml, contents);
    let _ = writeln!(toml, "[upstream]");
    let _ = writeln!(toml, "cloud = \"custom\"");
    let _ = writeln!(toml, "authority_host = {}", quoted(contents.base_url));
    let _ = writeln!(toml, "api_base = {}", quoted(contents.base_url));
    // Graph is served from the same origin; writing it always lets `secure` be enabled by the
    // environment alone (SCOREGATE__UPSTREAM__METRICS).
    let _ = writeln!(toml, "graph_base = {}", quoted(contents.base_url));
    if !contents.metrics.is_empty() {
        let metrics: Vec<String> = contents.metrics.iter().map(|m| quoted(m)).collect();
        let _ = writeln!(toml, "metrics = [{}]", metrics.join(", "));
    }
    let _ = writeln!(toml, "extra_ca_file = {}", quoted(CA_FILE_NAME));

    let mut msp_secret_written = false;
    for tenant in contents.tenants {
        let credential_line = match &tenant.credential {
            TenantCredential::Secret(secret) => {
                let file = format!("{SECRETS_DIR_NAME}/{}.secret", tenant.slug);
                write_private(&dir.join(&file), secret.expose_secret().as_bytes())?;
                format!("client_secret = {{ file = {} }}", quoted(&file))
            }
            TenantCredential::SharedSecret(secret) => {
                let file = format!("{SECRETS_DIR_NAME}/{MSP_SECRET_FILE_NAME}");
                if !msp_secret_written {
                    write_private(&dir.join(&file), secret.expose_secret().as_bytes())?;
                    msp_secret_written = true;
                }
                format!("client_secret = {{ file = {} }}", quoted(&file))
            }
            TenantCredential::Certificate(certificate) => {
                let file = format!("{SECRETS_DIR_NAME}/{}.pem", tenant.slug);
                let bundle = certificate.pem_bundle();
                write_private(&dir.join(&file), bundle.expose_secret().as_bytes())?;
                format!("certificate = {{ file = {} }}", quoted(&file))
            }
        };
        let tags: Vec<String> = tenant.tags.iter().map(|tag| quoted(tag)).collect();
        let _ = writeln!(toml);
        let _ = writeln!(toml, "[[tenants]]");
        let _ = writeln!(toml, "id = {}", quoted(&tenant.slug));
        let _ = writeln!(toml, "name = {}", quoted(&tenant.name));
        let _ = writeln!(
            toml,
            "tenant_id = {}",
            quoted(&tenant.tenant_id.to_string())
        );
        let _ = writeln!(
            toml,
            "client_id = {}",
            quoted(&tenant.client_id.to_string())
        );
        let _ = writeln!(toml, "{credential_line}");
        let _ = writeln!(toml, "tags = [{}]", tags.join(", "));
        if tenant.credential.kind() == CredentialKind::Shared {
            // Keeps the file self-explanatory for readers; TOML comments are ignored by the gateway.
            let _ = writeln!(toml, "# consented MSP app (shared client id and secret)");
        }
    }

    fs::write(config_path, toml).map_err(write_error(config_path))?;
    Ok(config_path.to_path_buf())
}
