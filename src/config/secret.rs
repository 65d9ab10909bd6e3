//! Secrets named by the file (`{ env = "…" }` or `{ file = "…" }`): the serde type every section
//! that takes a secret uses, and the one function that reads it. A secret is wrapped as soon as
//! it is read and never quoted in a problem.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a secret comes from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newlines ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Reads a secret from exactly one of the environment or a file; trailing newlines are dropped.
pub(super) fn read_secret(
    source: &SecretSource,
    key: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    let value = match (&source.env, &source.file) {
        (Some(name), None) => match env(name) {
            Some(value) => value,
            None => {
                problems.push(format!("{key}.env: environment variable {name} is not set"));
                return None;
            }
        },
        (None, Some(file)) => {
            let path = base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
                Err(error) => {
                    problems.push(format!(
                        "{key}.file: cannot read {}: {error}",
                        path.display()
                    ));
                    return None;
                }
            }
        }
        _ => {
            problems.push(format!("{key}: give exactly one of env or file"));
            return None;
        }
    };
    if value.trim().is_empty() {
        problems.push(format!("{key}: the secret is empty"));
        return None;
    }
    Some(SecretString::from(value))
}
