//! The two text formats `/metrics` can answer in, and the choice between them from `Accept`.
//!
//! The Prometheus text format (version 0.0.4) is the default: it is what `text/plain`, `*/*`,
//! no `Accept` at all, or anything unrecognised gets, and what `promtool check metrics` and most
//! scrapers other than Prometheus read. OpenMetrics is served only to a caller that names
//! `application/openmetrics-text` (Prometheus does, first). Both come from prometheus-client's own
//! encoders over the same registry, so the two answers cannot disagree on a value.

/// A text exposition format of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: counter families named with `_total`, no `# UNIT`, no
    /// `# EOF`.
    Prometheus,
    /// OpenMetrics 1.0 text: counter families named without `_total`, `# UNIT`, ends with `# EOF`.
    OpenMetrics,
}

/// The media type that asks for OpenMetrics.
const OPENMETRICS: &str = "application/openmetrics-text";

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format for a request's `Accept` values (each may list several ranges).
    ///
    /// OpenMetrics when an explicit `application/openmetrics-text` range has a quality above zero
    /// and at least that of the range governing `text/plain` (`text/plain` over `text/*` over
    /// `*/*`, as in RFC 9110); otherwise the Prometheus text format. Wildcards alone never
    /// choose OpenMetrics: it is the format a scraper opts into. Ranges that do not parse are
    /// ignored.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Self {
        let ranges: Vec<(String, f32)> = accept
            .into_iter()
            .flat_map(|value| value.split(','))
            .filter_map(parse_range)
            .collect();
        let best = |media: &str| {
            ranges
                .iter()
                .filter(|(range, _)| range == media)
                .map(|(_, quality)| *quality)
                .reduce(f32::max)
        };
        let Some(openmetrics) = best(OPENMETRICS) else {
            return Self::Prometheus;
        };
        let text = best("text/plain")
            .or_else(|| best("text/*"))
            .or_else(|| best("*/*"))
            .unwrap_or(0.0);
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }
}

/// One media range of `Accept`: its `type/subtype` in lower case and its quality (1 when not
/// given); `None` when it is not `type/subtype` or its `q` is not a number from 0 to 1.
fn parse_range(range: &str) -> Option<(String, f32)> {
    let mut parts = range.split(';');
    let media = parts.next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = media.split_once('/')?;
    if kind.is_empty() || subtype.is_empty() {
        return None;
    }
    let mut quality = 1.0;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            quality = value.trim().parse::<f32>().ok()?;
            if !(0.0..=1.0).contains(&quality) {
                return None;
            }
        }
    }
    Some((media, quality))
}

#[cfg(test)]
mod tests {
    use super::Format::{self, OpenMetrics, Prometheus};

    #[test]
    fn prometheus_text_is_the_default_and_openmetrics_only_when_named() {
        for (accept, expected) in [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("text/plain; version=0.0.4"), Prometheus),
            (Some("application/json"), Prometheus),
            (Some("application/*"), Prometheus),
            (Some("not a media type"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=1.0.0"),
                OpenMetrics,
            ),
            // Prometheus 2's scrape header.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,\
                     application/openmetrics-text;version=0.0.1;q=0.4,\
                     text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                OpenMetrics,
            ),
            // Named, but worth less than plain text, or refused.
            (
                Some("application/openmetrics-text;q=0.2, text/plain;q=0.5"),
                Prometheus,
            ),
            (
                Some("text/*;q=0.9, application/openmetrics-text;q=0.5"),
                Prometheus,
            ),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            // Equal: the caller named OpenMetrics, a wildcard does not outweigh it.
            (
                Some("text/plain, application/openmetrics-text"),
                OpenMetrics,
            ),
            (Some("application/openmetrics-text, */*"), OpenMetrics),
            // A quality that does not parse drops its range.
            (Some("application/openmetrics-text;q=high"), Prometheus),
            (Some("application/openmetrics-text;q=2"), Prometheus),
        ] {
            assert_eq!(Format::negotiate(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn several_accept_headers_are_read_together() {
        assert_eq!(
            Format::negotiate(["text/plain;q=0.1", "application/openmetrics-text;q=0.5"]),
            OpenMetrics
        );
    }

    #[test]
    fn each_format_names_its_own_content_type() {
        assert_eq!(
            Prometheus.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text; version=1.0.0"));
    }
}
