//! `/metrics` in the format the scraper asks for: OpenMetrics when its `Accept` header
//! prefers it (as Prometheus' own scraper does), otherwise the Prometheus text format 0.0.4,
//! which every other tool reads (`promtool check metrics`, older agents, `curl`).
//!
//! The registry encodes OpenMetrics only; the text format is derived from it line by line.
//! They differ in three ways that matter here: a counter's family is named with its `_total`
//! suffix in the text format (in OpenMetrics the family is `foo` and its sample `foo_total`,
//! which a text-format reader sees as a sample with no help or type); `# UNIT` lines do not
//! exist there; and there is no `# EOF`.

use std::fmt::Write as _;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// The format an `Accept` header prefers (RFC 9110 §12.5.1 quality values; on a tie, the
/// text format). No header, or nothing acceptable named: the text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics > text {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

/// The Prometheus text format of an OpenMetrics exposition (see the module's comment).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Metadata lines come before their family's samples; a counter's are held until its
    // TYPE line says that it is one.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" | "gaugehistogram" | "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((help_name, text)) = help.take()
                && name.starts_with(help_name)
            {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if let Some((name, text)) = help.take() {
            let _ = writeln!(out, "# HELP {name} {text}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::PrometheusText),
            (Some("*/*"), Format::PrometheusText),
            (Some("text/plain"), Format::PrometheusText),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            // Prometheus 2.x and 3.x scrapers.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                Format::OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
                Format::PrometheusText,
            ),
            (
                Some("application/openmetrics-text;q=0"),
                Format::PrometheusText,
            ),
            (Some("application/json"), Format::PrometheusText),
            (
                Some("APPLICATION/OpenMetrics-Text;Q=0.7, */*;q=0.1"),
                Format::OpenMetrics,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(*accept), *want, "{accept:?}");
        }
    }

    #[test]
    fn the_text_format_names_counters_with_their_suffix() {
        let openmetrics = "\
# HELP portcullis_token_issued Token endpoint requests.
# TYPE portcullis_token_issued counter
portcullis_token_issued_total{grant=\"password\"} 3
# HELP portcullis_cache_entries Tokens in the cache.
# TYPE portcullis_cache_entries gauge
portcullis_cache_entries 2
# HELP portcullis_upstream_duration_seconds Upstream time.
# TYPE portcullis_upstream_duration_seconds histogram
# UNIT portcullis_upstream_duration_seconds seconds
portcullis_upstream_duration_seconds_sum 0.5
portcullis_upstream_duration_seconds_count 1
portcullis_upstream_duration_seconds_bucket{le=\"+Inf\"} 1
# EOF
";
        let want = "\
# HELP portcullis_token_issued_total Token endpoint requests.
# TYPE portcullis_token_issued_total counter
portcullis_token_issued_total{grant=\"password\"} 3
# HELP portcullis_cache_entries Tokens in the cache.
# TYPE portcullis_cache_entries gauge
portcullis_cache_entries 2
# HELP portcullis_upstream_duration_seconds Upstream time.
# TYPE portcullis_upstream_duration_seconds histogram
portcullis_upstream_duration_seconds_sum 0.5
portcullis_upstream_duration_seconds_count 1
portcullis_upstream_duration_seconds_bucket{le=\"+Inf\"} 1
";
        assert_eq!(to_prometheus_text(openmetrics), want);
    }
}
