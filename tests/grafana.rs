//! contrib/grafana-dashboard.json against a running server's `/metrics`: every metric a
//! panel's query names is exported, and every exported metric is on some panel, so that
//! neither can drift from the other.

use std::collections::BTreeSet;

use testkit::{METRICS_REQUEST, TestServer, repository};

/// The words of PromQL the dashboard's queries use that are not metric names.
const PROMQL_WORDS: &[&str] = &["sum", "by", "rate", "increase"];

/// The metric names a PromQL query refers to: every name left once its label matchers
/// (`{…}`), ranges (`[…]`), grouping labels (`by (…)`), numbers and PromQL's own words
/// are taken out. A word the list above does not know counts as a metric, and fails the
/// test unless it is one: a new function is added above on purpose.
fn metrics_in(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    let mut word = String::new();
    let mut skip_group = false;
    let flush = |word: &mut String, names: &mut BTreeSet<String>| {
        let taken = std::mem::take(word);
        let is_number = taken.starts_with(|c: char| c.is_ascii_digit());
        if !taken.is_empty() && !is_number && !PROMQL_WORDS.contains(&taken.as_str()) {
            names.insert(taken);
        }
    };
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | ':' => word.push(c),
            '{' | '[' => {
                flush(&mut word, &mut names);
                let close = if c == '{' { '}' } else { ']' };
                let end = rest.find(close).expect("a closed matcher or range");
                rest = &rest[end + 1..];
            }
            '(' if skip_group || word == "by" => {
                flush(&mut word, &mut names);
                let end = rest.find(')').expect("a closed grouping");
                rest = &rest[end + 1..];
                skip_group = false;
            }
            _ => {
                skip_group = skip_group || word == "by";
                flush(&mut word, &mut names);
            }
        }
    }
    flush(&mut word, &mut names);
    names
}

#[test]
fn queries_are_read_for_their_metrics() {
    let query = "sum by(reason) (rate(chat_disconnects_total{reason!=\"x\"}[$__rate_interval])) \
                 / sum by (instance) (rate(chat_connections_total[5m])) > 0";
    assert_eq!(
        metrics_in(query),
        BTreeSet::from([
            "chat_connections_total".to_owned(),
            "chat_disconnects_total".to_owned()
        ])
    );
}

#[tokio::test]
async fn every_panel_queries_metrics_the_server_exports_and_shows_them_all() {
    let path = repository().join("contrib/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("contrib/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");

    let server = TestServer::start().await;
    let scraped = server.http(METRICS_REQUEST).await;
    assert_eq!(scraped.status, 200);
    let exported: BTreeSet<String> = scraped
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exported.len() > 10, "{exported:?}");

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut shown = BTreeSet::new();
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().expect("a panel title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let query = target["expr"].as_str().expect("a PromQL expr");
            let named = metrics_in(query);
            assert!(!named.is_empty(), "{title}: {query} names no metric");
            for metric in named {
                assert!(
                    exported.contains(&metric),
                    "{title}: {query} names {metric}, which /metrics does not export"
                );
                shown.insert(metric);
            }
        }
    }
    let missing: Vec<&String> = exported.difference(&shown).collect();
    assert!(missing.is_empty(), "on no panel: {missing:?}");
    server.stop().await;
}
