//! Fast checks of the Grafana dashboards in `grafana/dashboards/` against
//! what `/metrics` exposes, so a renamed metric breaks the build instead of
//! a panel: every metric name a panel or variable queries is exposed, every
//! tickrelay metric is on some dashboard and in docs/OBSERVABILITY.md, and
//! the dashboards load under file provisioning (stable uid, a `datasource`
//! variable used by every panel, no `${DS_…}` import placeholders).
//!
//! No network: the exposition is encoded in-process by the same
//! `Metrics::encode` that serves `/metrics`. tests/it/prometheus.rs runs every
//! expression through a real Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tickrelay::metrics::Metrics;

/// Series a panel may query that Prometheus makes itself, not /metrics.
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// tickrelay metric families deliberately on no dashboard (none yet).
const NOT_ON_DASHBOARDS: &[&str] = &[];

/// Grafana's own variables, substituted at query time.
const GRAFANA_VARIABLES: &[&str] = &["__rate_interval", "__interval", "__range"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard: (file stem, raw text, parsed JSON).
fn dashboards() -> Vec<(String, String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, text, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Panels, rows' nested panels included (rows themselves excluded).
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expression) of every query target.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// The PromQL of every query variable (`label_values(SELECTOR, label)`
/// reduced to its selector).
fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or("?").to_owned(),
                label_values_selector(q),
            )
        })
        .collect()
}

/// `label_values(SELECTOR, label)` -> `SELECTOR`; other queries unchanged.
fn label_values_selector(q: &str) -> String {
    q.trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.rsplit_once(','))
        .map_or(q, |(sel, _)| sel)
        .trim()
        .to_owned()
}

/// Metric family name -> type, from the `# TYPE` lines of the exposition.
fn families() -> BTreeMap<String, String> {
    let text = Metrics::new().encode();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut it = l.split_whitespace();
            (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
        })
        .collect()
}

/// The series names a family exposes, as PromQL sees them.
fn sample_names(families: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, kind) in families {
        match kind.as_str() {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["bucket", "sum", "count"] {
                    out.insert(format!("{name}_{s}"));
                }
            }
            "info" => {
                out.insert(format!("{name}_info"));
            }
            _ => {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// The family a series name belongs to.
fn family_of<'a>(series: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((k, _)) = families.get_key_value(series) {
        return Some(k);
    }
    ["_total", "_bucket", "_sum", "_count", "_info"]
        .iter()
        .filter_map(|s| series.strip_suffix(s))
        .find_map(|base| families.get_key_value(base).map(|(k, _)| k.as_str()))
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "start", "end", "inf", "nan",
];

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, strings, ranges and label lists that are not functions,
/// aggregations or keywords. A small scanner, enough for dashboards.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    // Skips from an opening bracket to its match, strings included.
    let skip_group = |mut i: usize, open: u8, close: u8| -> usize {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                q @ (b'"' | b'\'' | b'`') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => i = skip_group(i, b'{', b'}'),
            b'[' => i = skip_group(i, b'[', b']'),
            b'$' => {
                i += 1;
                while i < b.len() && (ident_char(b[i]) || b[i] == b'{' || b[i] == b'}') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let next = b.get(j).copied();
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if next == Some(b'(') {
                        i = skip_group(j, b'(', b')');
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                    || next == Some(b'(')
                {
                    // keyword, aggregation or function call
                } else {
                    out.push(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn the_scanner_finds_metric_names_only() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, transport) (rate(tickrelay_tick_to_write_seconds_bucket{job=~"$job",le="0.1"}[$__rate_interval])))"#
        ),
        ["tickrelay_tick_to_write_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            r#"(sum(rate(a_total{status=~"5.."}[5m])) or vector(0)) / on (x) group_left (y) b{c="}{"} offset 1m"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        metric_names("time() - max by (instance) (process_start_time_seconds)"),
        ["process_start_time_seconds"]
    );
    assert_eq!(metric_names("2 * up + 1e3"), ["up"]);
}

#[test]
fn every_metric_a_dashboard_queries_is_exposed() {
    let families = families();
    let exposed = sample_names(&families);
    let mut missing = Vec::new();
    let mut used_families = BTreeSet::new();
    for (file, _, d) in dashboards() {
        let queries = expressions(&d).into_iter().chain(
            variable_queries(&d)
                .into_iter()
                .map(|(n, q)| (format!("${n}"), q)),
        );
        for (title, expr) in queries {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{file} / {title}: no metric in `{expr}`");
            for name in names {
                if PROMETHEUS_SERIES.contains(&name.as_str()) {
                    continue;
                }
                if exposed.contains(&name) {
                    used_families.insert(family_of(&name, &families).unwrap().to_owned());
                } else {
                    missing.push(format!("{file} / {title}: {name}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboards query metrics that /metrics does not expose:\n  {}\nexposed: {exposed:#?}",
        missing.join("\n  ")
    );
    let unused: Vec<_> = families
        .keys()
        .filter(|f| f.starts_with("tickrelay_"))
        .filter(|f| !used_families.contains(*f) && !NOT_ON_DASHBOARDS.contains(&f.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "metrics on no dashboard (add a panel, or list them in NOT_ON_DASHBOARDS): {unused:?}"
    );
}

#[test]
fn dashboards_load_under_file_provisioning() {
    let mut uids = BTreeSet::new();
    for (file, text, d) in dashboards() {
        // Stable uid: the file name, so links and bookmarks survive re-imports.
        let uid = d["uid"].as_str().unwrap_or_default();
        assert_eq!(uid, file, "{file}: uid must equal the file name");
        assert!(uid.len() <= 40, "{file}: uid longer than Grafana allows");
        assert!(uids.insert(uid.to_owned()), "{file}: duplicate uid");
        assert!(
            d["id"].is_null(),
            "{file}: id must be null (Grafana assigns it)"
        );
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("tickrelay")),
            "{file}: title"
        );
        // File provisioning does not resolve the import placeholders.
        assert!(!text.contains("${DS_"), "{file}: ${{DS_…}} placeholder");
        assert!(d.get("__inputs").is_none(), "{file}: __inputs");
        assert!(d.get("__requires").is_none(), "{file}: __requires");

        let vars = d["templating"]["list"].as_array().expect("templating");
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no `datasource` variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        let want = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"], want, "{file}: variable {}", v["name"]);
        }
        let defined: BTreeSet<&str> = vars
            .iter()
            .filter_map(|v| v["name"].as_str())
            .chain(GRAFANA_VARIABLES.iter().copied())
            .collect();

        let mut ids = BTreeSet::new();
        let all = d["panels"].as_array().unwrap();
        for p in all {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{file}: id"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && g["h"].as_u64().unwrap() > 0,
                "{file}: gridPos"
            );
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"], want, "{file} / {title}: panel datasource");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file} / {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"], want, "{file} / {title}: target datasource");
                let expr = t["expr"].as_str().expect("expr");
                for var in variables_in(expr) {
                    assert!(
                        defined.contains(var.as_str()),
                        "{file} / {title}: ${var} is not a dashboard variable"
                    );
                }
            }
        }
    }
}

/// Names of the `$var` / `${var}` / `${var:fmt}` references in `expr`.
fn variables_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = rest.trim_start_matches('{');
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
        if braced {
            rest = body;
        }
    }
    out
}

#[test]
fn every_metric_is_documented() {
    let doc_path = root().join("docs/OBSERVABILITY.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let undocumented: Vec<String> = families()
        .into_iter()
        .map(|(name, kind)| match kind.as_str() {
            "counter" => format!("{name}_total"),
            _ => name,
        })
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{} does not list: {undocumented:?}",
        Path::new("docs/OBSERVABILITY.md").display()
    );
}

#[test]
fn provisioning_files_name_the_fixed_datasource_uid() {
    let ds =
        std::fs::read_to_string(root().join("grafana/provisioning/datasources/tickrelay.yaml"))
            .unwrap();
    assert!(ds.contains("uid: tickrelay-prometheus"));
    assert!(ds.contains("type: prometheus"));
    let dash =
        std::fs::read_to_string(root().join("grafana/provisioning/dashboards/tickrelay.yaml"))
            .unwrap();
    assert!(dash.contains("type: file"));
    // The datasource variable's default points at the provisioned one.
    for (file, _, d) in dashboards() {
        let ds_var = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap();
        assert_eq!(
            ds_var["current"]["value"], "tickrelay-prometheus",
            "{file}: default data source"
        );
    }
    let prom = std::fs::read_to_string(root().join("grafana/prometheus.yml")).unwrap();
    assert!(prom.contains("job_name: tickrelay"));
}
