//! The operator's kit in `deploy/` against the gateway itself: every metric the Grafana dashboard
//! and the Prometheus rules name is one a running gateway exports, counters and histograms are
//! only read through `rate()`/`increase()`, and every panel has a unit and the `datasource`
//! variable. (scripts/check-deploy.sh has promtool parse the same queries.)

use crate::helpers::{emulator_options, spawn_app};
use std::collections::BTreeSet;
use std::path::Path;

/// Series only a gateway with `[cluster]` exports (the test gateway has none).
const CLUSTER_ONLY: [&str; 2] = [
    "scoregate_cluster_redis_up",
    "scoregate_cluster_fallbacks_total",
];

/// What a scrape of a running gateway exports.
struct Exported {
    /// Every sample name.
    samples: BTreeSet<String>,
    /// Sample names that only make sense as a rate: counters, and histograms' series.
    cumulative: BTreeSet<String>,
}

/// Scrapes a gateway that answered a `/scores`, so that every family has its samples (the
/// per-tenant series and the histograms appear with the first fetch).
async fn exported() -> Exported {
    let app = spawn_app(emulator_options(2, vec![])).await;
    let (status, _, _) = app.get_json("/scores").await;
    assert_eq!(status, 200);
    let text = app.get("/metrics").await.text().await.unwrap();
    let mut samples = BTreeSet::new();
    let mut cumulative = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => {
                    cumulative.insert(name.to_owned());
                }
                Some((name, "histogram")) => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        cumulative.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {}
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or(line);
            samples.insert(name.to_owned());
        }
    }
    Exported {
        samples,
        cumulative,
    }
}

/// The start of every `scoregate_…` metric name in `text`.
fn metric_names(text: &str) -> Vec<(usize, &str)> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.match_indices("scoregate_")
        .filter(|(start, _)| !text[..*start].ends_with(is_name_char))
        .map(|(start, _)| {
            let end = text[start..]
                .find(|c: char| !is_name_char(c))
                .map_or(text.len(), |length| start + length);
            (start, &text[start..end])
        })
        .collect()
}

/// For each byte of `expr`, whether it is inside a quoted string (a label value may hold
/// parentheses and braces).
fn quoted(expr: &str) -> Vec<bool> {
    let (mut inside, mut escaped) = (None, false);
    expr.chars()
        .flat_map(|c| {
            let was = inside.is_some();
            match (inside, c) {
                (Some(_), _) if escaped => escaped = false,
                (Some(_), '\\') => escaped = true,
                (Some(quote), c) if c == quote => inside = None,
                (None, '"' | '\'' | '`') => inside = Some(c),
                _ => {}
            }
            std::iter::repeat_n(was || inside.is_some(), c.len_utf8())
        })
        .collect()
}

/// Whether the selector at `start` is the range argument of `rate`, `irate` or `increase`: the
/// innermost call around it is one of them, and a `[range]` follows it (after its labels).
fn is_rated(expr: &str, start: usize, name: &str) -> bool {
    let quoted = quoted(expr);
    let mut depth = 0;
    let mut open = None;
    for (index, c) in expr[..start].char_indices().rev() {
        match c {
            _ if quoted[index] => {}
            ')' => depth += 1,
            '(' if depth == 0 => {
                open = Some(index);
                break;
            }
            '(' => depth -= 1,
            _ => {}
        }
    }
    let Some(open) = open else {
        return false;
    };
    let function = expr[..open]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default();
    let mut after = start + name.len();
    if expr[after..].starts_with('{') {
        match expr[after..]
            .char_indices()
            .find(|(offset, c)| *c == '}' && !quoted[after + offset])
        {
            Some((offset, _)) => after += offset + 1,
            None => return false,
        }
    }
    ["rate", "irate", "increase"].contains(&function) && expr[after..].starts_with('[')
}

/// Checks `expr`'s metric names against `exported`, with `place` in the messages.
fn check_expr(expr: &str, place: &str, exported: &Exported, problems: &mut Vec<String>) {
    let names = metric_names(expr);
    if names.is_empty() {
        problems.push(format!("{place}: names no scoregate metric: {expr}"));
    }
    for (start, name) in names {
        if CLUSTER_ONLY.contains(&name) {
            continue;
        }
        if !exported.samples.contains(name) {
            problems.push(format!("{place}: {name} is not exported by the gateway"));
        } else if exported.cumulative.contains(name) && !is_rated(expr, start, name) {
            problems.push(format!(
                "{place}: {name} is a counter or histogram series: wrap it in rate() or increase()"
            ));
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_name_and_rate_checks_tell_good_queries_from_bad_ones() {
    let exported = Exported {
        samples: ["scoregate_a_total", "scoregate_g", "scoregate_h_bucket"]
            .map(str::to_owned)
            .into(),
        cumulative: ["scoregate_a_total", "scoregate_h_bucket"]
            .map(str::to_owned)
            .into(),
    };
    let problems = |expr: &str| {
        let mut problems = Vec::new();
        check_expr(expr, "test", &exported, &mut problems);
        problems.len()
    };
    assert_eq!(problems("sum(rate(scoregate_a_total{x=\"(\"}[5m]))"), 0);
    assert_eq!(
        problems("rate(scoregate_a_total{x=\"/a/{id}\",y=\")\"}[5m])"),
        0
    );
    assert_eq!(
        problems("sum(scoregate_g{x=\"rate(\"}) + sum(scoregate_a_total{x=\"}[\"})"),
        1
    );
    assert_eq!(problems("increase(scoregate_a_total[1h]) > 0"), 0);
    assert_eq!(
        problems("histogram_quantile(0.9, sum by (le) (rate(scoregate_h_bucket[5m])))"),
        0
    );
    assert_eq!(problems("max(scoregate_g) / scoregate_g"), 0);
    assert_eq!(problems("sum(scoregate_a_total)"), 1);
    assert_eq!(problems("rate(scoregate_a_total)"), 1);
    assert_eq!(problems("sum(rate(scoregate_missing_total[5m]))"), 1);
    assert_eq!(problems("up"), 1);
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric_and_rates_counters() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/scoregate.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|variable| variable["name"] == "datasource"
                && variable["type"] == "datasource"
                && variable["query"] == "prometheus"),
        "the dashboard needs a `datasource` variable of Prometheus data sources"
    );
    let exported = exported().await;
    let mut problems = Vec::new();
    let mut queries = 0;
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default();
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{title}: its data source is not ${{datasource}}"));
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
        if unit.is_none_or(str::is_empty) {
            problems.push(format!("{title}: no unit"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for target in targets {
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{title}: a query's data source is not ${{datasource}}"
                ));
            }
            let expr = target["expr"].as_str().unwrap_or_default();
            check_expr(expr, title, &exported, &mut problems);
            queries += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(queries >= 20, "{queries} queries");
}

#[tokio::test]
async fn every_alerting_rule_names_an_exported_metric_and_rates_counters() {
    let rules = read("deploy/prometheus/scoregate-rules.yml");
    let exported = exported().await;
    let mut problems = Vec::new();
    // Each rule's `expr:`, one line or a `|` block of more indented lines.
    let mut alerts = 0;
    let lines: Vec<&str> = rules.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let expr = if expr.trim() == "|" {
            lines[index + 1..]
                .iter()
                .take_while(|next| next.len() - next.trim_start().len() > indent)
                .map(|next| next.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            expr.trim().to_owned()
        };
        check_expr(
            &expr,
            &format!("line {}", index + 1),
            &exported,
            &mut problems,
        );
        alerts += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(alerts, rules.matches("- alert: ").count());
    assert!(alerts >= 11, "{alerts} rules");
}
