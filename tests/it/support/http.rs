//! The tests' HTTP/1.1 GET client over `std::net`, and `/metrics` parsed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

// ---------------------------------------------------------------- HTTP

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    /// Status code.
    pub(crate) status: u16,
    /// Headers, names lower-cased, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, panicking with the body when it is not.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not the expected JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// GET `path` from `addr`; panics on a transport error.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, &[])
}

/// GET `path` from `addr` with extra headers; panics on a transport error.
pub(crate) fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(addr, path, headers).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// GET `path` from the relay at `base` (`http://ADDR`) with extra headers;
/// panics on a transport error.
pub(crate) fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("base URL {base:?}: {e}"));
    get_with(addr, path, headers)
}

/// `GET path` from `base`: the status and the body as JSON (`Null` when it
/// is not JSON).
pub(crate) fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let r = http_get(base, path, &[]);
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

/// A snapshot's quotes by symbol.
pub(crate) fn by_symbol(
    snapshot: &serde_json::Value,
) -> std::collections::HashMap<String, serde_json::Value> {
    snapshot["quotes"]
        .as_array()
        .expect("quotes")
        .iter()
        .map(|q| (q["symbol"].as_str().unwrap().to_owned(), q.clone()))
        .collect()
}

/// GET `path` from `addr` over a fresh connection (`Connection: close`).
pub(crate) fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    try_request(addr, "GET", path, headers)
}

/// A request with any method and no body over a fresh connection
/// (`Connection: close`), read to the end; a chunked body is de-chunked.
pub(crate) fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk size line"))?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| bad("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// An incremental `Transfer-Encoding: chunked` decoder, for a body read as
/// it arrives (a stream): each [`Dechunker::feed`] returns the body bytes
/// its data completes.
#[derive(Default)]
pub(crate) struct Dechunker {
    pending: Vec<u8>,
    left: usize,
}

impl Dechunker {
    /// Takes the next bytes off the wire; returns the body bytes they hold.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if self.left > 0 {
                let n = self.left.min(self.pending.len());
                out.extend(self.pending.drain(..n));
                self.left -= n;
                if self.left > 0 {
                    return out;
                }
                continue;
            }
            // A size line (after the previous chunk's CRLF).
            let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let line: Vec<u8> = self.pending.drain(..pos + 2).collect();
            let text = String::from_utf8_lossy(&line[..pos]).trim().to_owned();
            if text.is_empty() {
                continue;
            }
            self.left =
                usize::from_str_radix(text.split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if self.left == 0 {
                return out;
            }
        }
    }
}

// ---------------------------------------------------------------- metrics

/// A parsed Prometheus text exposition: `name{labels}` → value.
#[derive(Debug, Default)]
pub(crate) struct Metrics(pub(crate) BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text format; comments and unparsable lines are skipped.
    pub(crate) fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.trim().parse::<f64>()
            {
                map.insert(key.trim().to_string(), v);
            }
        }
        Metrics(map)
    }

    /// The series named exactly `name`, labels included as exposed (0 when
    /// absent).
    pub(crate) fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// The sum of every series of metric `name` (0 when absent).
    pub(crate) fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// The series of `name` whose label `label` is `value` (0 when absent).
    pub(crate) fn labeled(&self, name: &str, label: &str, value: &str) -> f64 {
        let want = format!("{label}=\"{value}\"");
        self.0
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{name}{{"))
                    && k[name.len() + 1..k.len().saturating_sub(1)]
                        .split(',')
                        .any(|l| l == want)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The sum of the series of metric `name` whose labels (the text
    /// between the braces, empty for none) satisfy `pred`.
    pub(crate) fn sum_where(&self, name: &str, pred: impl Fn(&str) -> bool) -> f64 {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(name)?;
                let labels = if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('{')?.strip_suffix('}')?
                };
                pred(labels).then_some(v)
            })
            .sum()
    }

    /// The `tickrelay_feed_*` series, one per line, for failure messages.
    pub(crate) fn feed_lines(&self) -> String {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with("tickrelay_feed_") && !k.contains("_bucket"))
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }
}
