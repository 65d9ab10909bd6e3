//! A tenant's one credential (a client secret or a certificate), read at load, and the warnings
//! for credential files that others may read.

use super::TenantSettings;
use crate::config::secret::read_secret;
use crate::credential::{Certificate, Credential};
use std::path::Path;
use std::sync::Arc;

/// The tenant's one credential: a client secret or a certificate (with its password, if any).
pub(super) fn resolve_credential(
    settings: &TenantSettings,
    key: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Credential> {
    match (&settings.client_secret, &settings.certificate) {
        (Some(source), None) => read_secret(
            source,
            &format!("{key}.client_secret"),
            base_dir,
            env,
            problems,
        )
        .map(Credential::Secret),
        (None, Some(certificate)) => {
            let password = match &certificate.password {
                Some(source) => Some(read_secret(
                    source,
                    &format!("{key}.certificate.password"),
                    base_dir,
                    env,
                    problems,
                )?),
                None => None,
            };
            let file = base_dir.join(&certificate.file);
            match Certificate::from_file(&file, password.as_ref()) {
                Ok(certificate) => Some(Credential::Certificate(Arc::new(certificate))),
                Err(error) => {
                    problems.push(format!(
                        "{key}.certificate.file: {}: {error}",
                        file.display()
                    ));
                    None
                }
            }
        }
        (None, None) => {
            problems.push(format!(
                "{key}: needs a credential: client_secret or certificate"
            ));
            None
        }
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{key}: has both client_secret and certificate; keep one"
            ));
            None
        }
    }
}

/// Warnings for credential files that group or others may read or write (`mode & 0o077`): the
/// gateway still starts (the operator may have reasons), but says which key and file, never
/// what the file holds.
pub(in crate::config) fn loose_file_warnings(
    tenants: &[TenantSettings],
    base_dir: &Path,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, settings) in tenants.iter().enumerate() {
        let key = format!("tenants[{index}] (id {:?})", settings.id);
        let secret = settings
            .client_secret
            .as_ref()
            .and_then(|source| source.file.as_ref())
            .map(|file| (format!("{key}.client_secret.file"), file));
        let certificate = settings
            .certificate
            .as_ref()
            .map(|certificate| (format!("{key}.certificate.file"), &certificate.file));
        let password = settings
            .certificate
            .as_ref()
            .and_then(|certificate| certificate.password.as_ref())
            .and_then(|source| source.file.as_ref())
            .map(|file| (format!("{key}.certificate.password.file"), file));
        for (key, file) in [secret, certificate, password].into_iter().flatten() {
            let path = base_dir.join(file);
            if let Some(mode) = loose_mode(&path) {
                warnings.push(format!(
                    "{key}: {} may be read or written by group or others (mode {mode:04o}); make it readable by the gateway's user only (chmod 600)",
                    path.display()
                ));
            }
        }
    }
    warnings
}

/// The file's permission bits when group or others have any access; `None` when only the owner
/// has, when the file cannot be inspected (reading it reports that), or off Unix.
fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
