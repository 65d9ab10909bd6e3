//! What the configuration's unit tests share: a temporary directory, a file writer, a tenant
//! entry and the error's problem list.

use super::{Config, ConfigError};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub(super) const TENANT: &str = "8f2c4e1a-1b2c-4d5e-8f90-123456789abc";
pub(super) const CLIENT: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

/// Writes a test file; authentication is turned off unless the text configures it.
pub(super) fn write(dir: impl AsRef<Path>, name: &str, text: &str) -> PathBuf {
    let path = dir.as_ref().join(name);
    let main_file = name.ends_with(".toml") && !name.starts_with("tenants");
    let text = if text.contains("[auth]") || !main_file {
        text.to_owned()
    } else {
        // Appended, not prepended: keys before the first table header stay top-level.
        format!("{text}\n[auth]\nenabled = false\n")
    };
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh directory for a test's files, removed when dropped.
pub(super) fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("scoregate-config-")
        .tempdir()
        .unwrap()
}

/// One `[[tenants]]` entry; `extra` adds lines (a credential, overrides).
pub(super) fn tenant(id: &str, tenant_id: &str, client_id: &str, extra: &str) -> String {
    format!(
        "[[tenants]]\nid = \"{id}\"\ntenant_id = \"{tenant_id}\"\nclient_id = \"{client_id}\"\n{extra}\n"
    )
}

/// An environment of `(name, value)` pairs for [`Config::load_with_env`].
pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The problem lines of an `Invalid` error; panics on anything else.
pub(super) fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

pub(super) const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Problems of a file with authentication on and one key, plus `text`.
pub(super) fn with_key(text: &str) -> String {
    format!(
        "{text}\n[auth]\nenabled = true\n[[api_keys]]\nname = \"k\"\nsha256 = \"{DIGEST}\"\ntenants = [\"*\"]\n"
    )
}
