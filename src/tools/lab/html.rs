//! The lab's table as a self-contained HTML page: the table, then one bar
//! chart per measure as inline SVG (no script, no external files).

use std::fmt::Write as _;

use super::{LabReport, Row};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One measure to plot: title, unit, value of a row.
type Measure = (&'static str, &'static str, fn(&Row) -> Option<f64>);

const MEASURES: [Measure; 7] = [
    ("Updates delivered per client", "/s", |r| {
        Some(r.deliveries_per_s)
    }),
    ("Staleness p50", "ms", |r| Some(r.staleness_p50_ms)),
    ("Staleness p99", "ms", |r| Some(r.staleness_p99_ms)),
    ("Wire bytes per update", "B", |r| r.bytes_per_update),
    ("Requests per minute per client", "", |r| {
        Some(r.requests_per_min)
    }),
    ("Server CPU per update", "µs", |r| r.cpu_us_per_update),
    ("Server memory per client", "KiB", |r| {
        r.memory_per_client_bytes.map(|b| b / 1024.0)
    }),
];

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A horizontal bar chart of one measure over the rows.
fn chart(rows: &[Row], (title, unit, value): &Measure) -> String {
    let (label_w, bar_w, row_h) = (190.0, 360.0, 24.0);
    let height = 30.0 + row_h * rows.len() as f64;
    let max = rows
        .iter()
        .filter_map(value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img" aria-label="{t}">
<text x="0" y="16" class="t">{t}{u}</text>
"#,
        w = label_w + bar_w + 90.0,
        t = esc(title),
        u = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", esc(unit))
        },
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" class="l">{label}</text>"#,
            lx = label_w - 8.0,
            ty = y + 15.0,
            label = esc(&r.label)
        );
        match value(r) {
            Some(v) => {
                let w = (v / max * bar_w).max(1.0);
                let _ = writeln!(
                    s,
                    r#"<rect x="{label_w}" y="{y}" width="{w:.1}" height="{h}" class="b{i}"/><text x="{vx:.1}" y="{ty}" class="v">{v}</text>"#,
                    h = row_h - 6.0,
                    vx = label_w + w + 6.0,
                    ty = y + 14.0,
                    v = fmt(v)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    r#"<text x="{label_w}" y="{ty}" class="v">not measured</text>"#,
                    ty = y + 14.0
                );
            }
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

/// The whole page.
pub(super) fn page(r: &LabReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickrelay lab</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0 2em 2em 0; }}
.t {{ font-weight: 600; font-size: 14px; }}
.l {{ text-anchor: end; font-size: 12px; }}
.v {{ font-size: 12px; }}
.b0 {{ fill: #8c8c8c; }} .b1 {{ fill: #b07aa1; }} .b2 {{ fill: #f28e2b; }}
.b3 {{ fill: #4e79a7; }} .b4 {{ fill: #59a14f; }} .b5 {{ fill: #76b7b2; }}
</style></head><body>
<h1>tickrelay lab</h1>
<p>{clients} clients × {k} symbols, {d} s per transport, against {url}.</p>
<table><thead><tr><th>transport</th><th>updates/s per client</th><th>staleness p50 (ms)</th><th>staleness p99 (ms)</th><th>bytes per update</th><th>requests/min per client</th><th>server CPU µs per update</th><th>server memory per client (KiB)</th></tr></thead><tbody>
"#,
        clients = r.clients,
        k = r.symbols_per_client,
        d = r.duration_s,
        url = esc(&r.url)
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt);
    for row in &r.rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row.label),
            fmt(row.deliveries_per_s),
            fmt(row.staleness_p50_ms),
            fmt(row.staleness_p99_ms),
            cell(row.bytes_per_update),
            fmt(row.requests_per_min),
            cell(row.cpu_us_per_update),
            cell(row.memory_per_client_bytes.map(|b| b / 1024.0)),
        );
    }
    s.push_str("</tbody></table>\n");
    for m in &MEASURES {
        s.push_str(&chart(&r.rows, m));
    }
    s.push_str("<p>Staleness: how old a client's view of a symbol is, sampled every 10 ms (0 when it shows the newest change). Bytes: counted on the clients' sockets, both ways, HTTP headers and WebSocket/SSE framing included. CPU: the relay's, above its rate before the rows ran.</p>\n</body></html>\n");
    s
}
