//! How `check-tenants` prints its findings: a text report for people, JSON for scripts.

use super::Finding;
use std::fmt::Write as _;

/// One line per finding (`ok` or `FAIL`, the tenant and metric, the code and detail), the advice
/// and consent URL indented below a failure, and a last line that counts the failures.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    for finding in findings {
        let place = format!("{}/{}", finding.tenant, finding.metric);
        if finding.ok {
            let _ = writeln!(out, "ok    {place}: {}", finding.detail);
            continue;
        }
        let _ = writeln!(out, "FAIL  {place}: {}: {}", finding.code, finding.detail);
        let _ = writeln!(out, "      what to do: {}", finding.advice);
        if let Some(url) = &finding.consent_url {
            let _ = writeln!(out, "      consent URL: {url}");
        }
    }
    let failed = findings.iter().filter(|finding| !finding.ok).count();
    let _ = match failed {
        0 => writeln!(out, "all {} check(s) ok", findings.len()),
        _ => writeln!(out, "{failed} of {} check(s) failed", findings.len()),
    };
    out
}

/// The findings as a JSON array (`[{"tenant", "metric", "ok", "code", "detail", "advice",
/// "consent_url"?}]`), pretty-printed, with a final newline.
pub fn render_json(findings: &[Finding]) -> String {
    // Plain strings, booleans and an enum of names: serialising cannot fail.
    let mut out = serde_json::to_string_pretty(findings).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}
