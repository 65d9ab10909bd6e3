//! The checks several sections share: a number within its bounds, an `https://` host, a token
//! scope, a metric list. Each reports one problem line that starts with the key it is given.

use url::Url;

/// Reports `key` unless `min <= value <= max`.
pub(super) fn check_range(key: &str, value: u64, min: u64, max: u64, problems: &mut Vec<String>) {
    if value < min {
        if min == 1 {
            problems.push(format!("{key}: must be greater than 0"));
        } else {
            problems.push(format!("{key}: must be at least {min}, not {value}"));
        }
    } else if value > max {
        problems.push(format!("{key}: must be at most {max}, not {value}"));
    }
}

/// `usize` settings as `u64` for [`check_range`] (saturating: a `usize` over `u64::MAX` cannot
/// exist on the platforms Rust supports, and would be out of range anyway).
pub(super) fn wide(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Reports `key` unless `metrics` names at least one metric, each once. Unknown names are
/// refused earlier, by deserialization, with the key and the accepted names.
pub(super) fn check_metrics(
    key: &str,
    metrics: &[crate::upstream::Metric],
    problems: &mut Vec<String>,
) {
    if metrics.is_empty() {
        problems.push(format!(
            "{key}: must name at least one metric ({})",
            crate::upstream::Metric::names()
        ));
    }
    for (position, metric) in metrics.iter().enumerate() {
        if metrics[..position].contains(metric) {
            problems.push(format!("{key}[{position}]: {metric} is listed twice"));
        }
    }
}

/// Reports `key` unless `url` (when set) is an `https://` URL with a host.
pub(super) fn check_https(key: &str, url: Option<&Url>, problems: &mut Vec<String>) {
    if let Some(url) = url {
        if url.scheme() != "https" {
            problems.push(format!(
                "{key}: must be an https:// URL (Entra and Defender are HTTPS only)"
            ));
        } else if url.host().is_none() {
            problems.push(format!("{key}: has no host"));
        }
    }
}

/// Reports `key` unless `scope` is an https resource followed by `/.default`.
pub(super) fn check_scope(key: &str, scope: &str, problems: &mut Vec<String>) {
    let valid = scope
        .strip_suffix("/.default")
        .and_then(|resource| Url::parse(resource).ok())
        .is_some_and(|resource| resource.scheme() == "https");
    if !valid {
        problems.push(format!(
            "{key}: must be an https resource followed by /.default, e.g. https://api.securitycenter.microsoft.com/.default"
        ));
    }
}
