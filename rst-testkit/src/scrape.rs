//! Scraping: a plain HTTP/1.0 GET ([`get`] from the calling thread's network namespace,
//! [`http_get`] from inside a given one) and a parser of the Prometheus text exposition
//! ([`Metrics`], [`Series`]).

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use rst_user::netns::Ns;

/// Connect/read timeout of one HTTP request or one test connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A response to a plain HTTP/1.0 GET.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header lines, as sent (without the status line).
    pub headers: Vec<String>,
    pub body: String,
    /// From before the connect to the last byte read (parsing not included).
    pub elapsed: Duration,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body, parsed as an exposition ([`Metrics::parse`], which panics on a
    /// malformed one).
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.body)
    }
}

/// `GET path` over HTTP/1.0 to `addr`, on a fresh connection from the calling thread's
/// network namespace (see [`http_get`] to scrape inside another one).
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let elapsed = t0.elapsed();
    let text = String::from_utf8(raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response is not UTF-8: {e}"),
        )
    })?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{m}: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    Ok(Response {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
        elapsed,
    })
}

/// [`get`] from a socket created inside `ns`.
pub fn http_get(ns: &Ns, addr: SocketAddr, path: &str) -> io::Result<Response> {
    ns.run(|| get(addr, path))?
}

/// One series: metric name and its labels (sorted by name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Series {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Whether this series has `name` and (at least) `labels`.
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let l: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", l.join(","))?;
        }
        Ok(())
    }
}

/// A parsed text exposition: series → value.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub BTreeMap<Series, f64>);

/// Parses `k="v",k2="v2"` (the text between the braces).
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("label without `=`")?;
        let after = after.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if out.insert(key.trim().to_string(), value).is_some() {
            return Err(format!("duplicate label {key}"));
        }
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

impl Metrics {
    /// Parses the Prometheus text format; panics on a malformed line or duplicate series.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| -> ! { panic!("bad exposition line ({why}): {line:?}") };
            let (series, rest) = match line.find(['{', ' ']) {
                Some(i) if line.as_bytes()[i] == b'{' => {
                    let close = line.rfind('}').unwrap_or_else(|| bad("no closing brace"));
                    let labels = parse_labels(&line[i + 1..close]).unwrap_or_else(|e| bad(&e));
                    (
                        Series {
                            name: line[..i].to_string(),
                            labels,
                        },
                        &line[close + 1..],
                    )
                }
                Some(i) => (Series::new(&line[..i], &[]), &line[i..]),
                None => bad("no value"),
            };
            let value: f64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| bad("value is not a number"));
            if m.insert(series.clone(), value).is_some() {
                bad(&format!("duplicate series {series}"));
            }
        }
        Self(m)
    }

    /// The value of exactly this series, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&Series::new(name, labels)).copied()
    }

    /// The value of exactly this series; panics if it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "series {} missing from the exposition",
                Series::new(name, labels)
            )
        })
    }

    /// Every series named `name` having (at least) `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(&Series, f64)> {
        self.0
            .iter()
            .filter(|(s, _)| s.matches(name, labels))
            .map(|(s, v)| (s, *v))
            .collect()
    }

    /// `self - before` for one series, which must be in both scrapes.
    pub fn delta(&self, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> i64 {
        (self.value(name, labels) - before.value(name, labels)) as i64
    }
}
