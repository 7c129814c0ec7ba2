//! The HTTP side: the telemetry path (`/metrics` unless `--web.telemetry-path` says
//! otherwise), a landing page at `/`, readiness and health at `/-/ready` and
//! `/-/healthy`, 404 elsewhere, served by [`super::http`]
//! (timeouts, connection cap, graceful shutdown, TLS). Around every answer: basic
//! authentication and the extra headers of `--web.config.file` ([`WebConfig`]); a
//! scrape is gzip-compressed when the client accepts it, answered 500 when it cannot be
//! rendered, and counted by status code as promhttp does
//! (`promhttp_metric_handler_requests_total{code}`).

use std::{
    future::Future,
    io::Write as _,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{self, HeaderValue},
};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::{
    exposition::RenderError,
    family::{FamilyBuilder, Kind},
    http::{self, HttpStats, Limits},
    iftable::IfaceTable,
    info,
    process::ProcessStats,
    snapshot::{Counters, UserStats},
    webconfig::WebConfig,
};
use crate::{attach::controller::SharedInterfaces, kernel::KernelLayout};

/// What the exposition reads once the programs are loaded and attached.
pub struct Monitoring {
    pub counters: Arc<Mutex<Counters>>,
    pub layout: KernelLayout,
    /// The interface controller's view.
    pub interfaces: SharedInterfaces,
    /// Tracing hooks and whether rstmon holds their links.
    pub hooks: Vec<(String, bool)>,
    /// Workload names of the per-workload counters.
    pub labels: Arc<crate::sources::workload::Labels>,
    /// The monitored interfaces and the text of their series, rebuilt when they change.
    pub iftable: Mutex<Arc<IfaceTable>>,
}

/// What a scrape needs. The server runs from the start; [`Shared::monitoring`] is set
/// once the programs are verified and attached (until then a scrape answers with
/// `rstmon_ready 0` and rstmon's own process and server series, and `/-/ready` 503).
pub struct Shared {
    pub monitoring: OnceLock<Monitoring>,
    pub kernel_release: String,
    pub wire_received: AtomicU64,
    pub trace_received: AtomicU64,
    pub verdict_received: AtomicU64,
    pub decode_errors: AtomicU64,
    /// The HTTP server's own counters (connections open, rejected, closed), rendered
    /// after the exposition proper.
    pub http: Arc<HttpStats>,
    /// Where the exposition is served (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// Basic-auth users and extra headers (`--web.config.file`; TLS is the server's).
    pub web: WebConfig,
    /// Scrapes by outcome.
    pub scrapes: ScrapeStats,
    /// A testing aid: while this file exists, every render fails (see
    /// [`FAIL_RENDER_ENV`]).
    pub fail_render_file: Option<PathBuf>,
    /// The watch stream's counters (watchers, samples dropped for slow ones), rendered
    /// after the HTTP server's.
    pub watch: Arc<crate::stream::server::Stats>,
}

/// Names a file whose existence makes every scrape fail to render (answered 500): how
/// the tests reach the failure path. A testing aid, not a user setting.
pub const FAIL_RENDER_ENV: &str = "RSTMON_TEST_FAIL_RENDER_FILE";

/// Scrapes of the telemetry path, as promhttp counts them.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    pub in_flight: AtomicU64,
    /// Answered 200.
    pub ok: AtomicU64,
    /// Answered 500: the render failed.
    pub failed: AtomicU64,
}

impl ScrapeStats {
    /// `promhttp_metric_handler_requests_in_flight` and
    /// `promhttp_metric_handler_requests_total{code}` (200, 500).
    fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut flight = FamilyBuilder::new(
            "promhttp_metric_handler_requests_in_flight",
            "Current number of scrapes being served.",
            Kind::Gauge,
            &[],
        );
        flight.add(&[], load(&self.in_flight));
        flight.write(out);
        let mut total = FamilyBuilder::new(
            "promhttp_metric_handler_requests_total",
            "Total number of scrapes by HTTP status code.",
            Kind::Counter,
            &["code"],
        );
        total.add(&["200"], load(&self.ok));
        total.add(&["500"], load(&self.failed));
        total.write(out);
    }
}

impl Shared {
    /// Reads the maps and renders the exposition.
    pub fn render(&self) -> Result<String, RenderError> {
        if let Some(f) = &self.fail_render_file
            && f.exists()
        {
            return Err(RenderError::Failed(format!(
                "forced: {} exists ({FAIL_RENDER_ENV})",
                f.display()
            )));
        }
        let Some(m) = self.monitoring.get() else {
            return Ok(self.render_starting());
        };
        let (ifaces, skipped) = {
            let st = m.interfaces.read().unwrap_or_else(|p| p.into_inner());
            let mut table = m.iftable.lock().unwrap_or_else(|p| p.into_inner());
            if !table.matches(&st) {
                *table = Arc::new(IfaceTable::of(&st));
            }
            (table.clone(), st.skipped.clone())
        };
        let mut snap = m
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot(&m.layout, &ifaces);
        snap.skipped = skipped;
        snap.hooks = m.hooks.clone();
        snap.user = UserStats {
            wire_received: self.wire_received.load(Ordering::Relaxed),
            trace_received: self.trace_received.load(Ordering::Relaxed),
            verdict_received: self.verdict_received.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        };
        snap.workloads = m.labels.count(&snap.workload_raw, &m.layout.reasons);
        snap.version = info::VERSION.to_string();
        snap.revision = info::REVISION.to_string();
        snap.rustc = info::RUSTC.to_string();
        snap.kernel_release = self.kernel_release.clone();
        snap.kernel_version = info::kernel_version();
        let mut text = snap.render()?;
        self.render_own(&mut text);
        Ok(text)
    }

    /// The exposition while the programs are loaded: whether rstmon is ready (not
    /// yet), what it is and runs on, and its own process and server series. No
    /// `rstmon_*` family of resets, interfaces or hooks: nothing is attached yet.
    fn render_starting(&self) -> String {
        let mut text = String::with_capacity(8192);
        let kernel_version = info::kernel_version();
        for f in [
            info::build_family(info::VERSION, info::REVISION, info::RUSTC),
            info::kernel_family(&self.kernel_release, &kernel_version),
            info::ready_family(false),
        ] {
            f.write(&mut text);
        }
        self.render_own(&mut text);
        text
    }

    /// The HTTP server's, the process's, the scrapes' and the watch stream's series,
    /// after the exposition proper.
    fn render_own(&self, text: &mut String) {
        text.push_str(&self.http.render());
        match ProcessStats::read() {
            Ok(p) => p.render(text),
            Err(e) => debug!("process metrics: {e}"),
        }
        self.scrapes.render(text);
        text.push_str(&self.watch.render());
    }

    /// Whether the programs are loaded and attached.
    pub fn ready(&self) -> bool {
        self.monitoring.get().is_some()
    }
}

/// Serves `shared` on `listeners` (over TLS with `tls`) under `limits` until
/// `shutdown` resolves.
pub async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let stats = shared.http.clone();
    http::serve(
        listeners,
        limits,
        stats,
        tls.map(tokio_rustls::TlsAcceptor::from),
        move |req| respond(shared.clone(), req),
        shutdown,
    )
    .await;
}

/// Answers one request, with the configured extra headers (see [`route`]).
pub async fn respond<B>(shared: Arc<Shared>, req: Request<B>) -> Response<Full<Bytes>> {
    let mut r = route(&shared, req).await;
    for (name, value) in &shared.web.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

/// 401 unless the request carries a configured user's credentials (only when basic-auth
/// users are configured); then the telemetry path, `GET /`, `/-/ready`, `/-/healthy`,
/// 404 for any other path, 405
/// for a method other than GET and HEAD on a known one. The request body is not read.
async fn route<B>(shared: &Arc<Shared>, req: Request<B>) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    drop(body);
    if shared.web.auth.is_some() {
        let given = head
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let s = shared.clone();
        // bcrypt takes tens of milliseconds: off the runtime's thread.
        let ok = tokio::task::spawn_blocking(move || {
            s.web
                .auth
                .as_ref()
                .is_some_and(|a| a.check(given.as_deref()))
        })
        .await
        .unwrap_or(false);
        if !ok {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            return r;
        }
    }
    let path = head.uri.path();
    let page = if path == shared.telemetry_path {
        Page::Metrics
    } else if path == "/" {
        Page::Landing
    } else if path == READY_PATH {
        Page::Ready
    } else if path == HEALTHY_PATH {
        Page::Healthy
    } else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    };
    if head.method != Method::GET && head.method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match page {
        Page::Metrics => scrape(shared.clone(), accepts_gzip(&head.headers)).await,
        Page::Landing => landing(shared),
        Page::Ready if shared.ready() => text(StatusCode::OK, "rstmon is ready.\n".into()),
        Page::Ready => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "rstmon is starting: loading and attaching its programs.\n".into(),
        ),
        Page::Healthy => text(StatusCode::OK, "rstmon is healthy.\n".into()),
    }
}

/// Answers 200 once the programs are loaded and attached (every `rstmon_*` family is
/// exported), 503 while rstmon starts: what a readiness probe or a start-up script
/// waits for. The telemetry path answers from the start.
pub const READY_PATH: &str = "/-/ready";
/// Answers 200 while the server runs (a liveness probe).
pub const HEALTHY_PATH: &str = "/-/healthy";

/// The paths the server answers.
enum Page {
    Metrics,
    Landing,
    Ready,
    Healthy,
}

/// Whether `Accept-Encoding` offers gzip (with a weight above 0).
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            name.eq_ignore_ascii_case("gzip") && q > 0.0
        })
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

/// Renders (and compresses, with `gzip`) off the runtime's thread.
async fn scrape(s: Arc<Shared>, gzip_it: bool) -> Response<Full<Bytes>> {
    s.scrapes.in_flight.fetch_add(1, Ordering::Relaxed);
    let shared = s.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let text = shared.render().map_err(|e| e.to_string())?;
        if gzip_it {
            gzip(text.as_bytes())
                .map(|z| (Bytes::from(z), true))
                .map_err(|e| format!("compressing: {e}"))
        } else {
            Ok((Bytes::from(text), false))
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    s.scrapes.in_flight.fetch_sub(1, Ordering::Relaxed);
    match rendered {
        Ok((body, gzipped)) => {
            s.scrapes.ok.fetch_add(1, Ordering::Relaxed);
            let mut r = response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            );
            let h = r.headers_mut();
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            if gzipped {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        Err(e) => {
            s.scrapes.failed.fetch_add(1, Ordering::Relaxed);
            warn!("scrape failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rstmon: scrape failed: {e}\n"),
            )
        }
    }
}

fn landing(s: &Shared) -> Response<Full<Bytes>> {
    let ifaces: Vec<String> = s.monitoring.get().map_or_else(
        || vec!["<li>none yet: starting</li>".to_string()],
        |m| {
            m.interfaces
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .attached()
                .iter()
                .map(|(name, mode)| format!("<li>{} ({mode} XDP)</li>", html_escape(name)))
                .collect()
        },
    );
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rstmon</title></head>\
         <body><h1>rstmon {}</h1><p>TCP reset monitor on Linux {}.</p>\
         <p><a href=\"{}\">Metrics</a></p><h2>Monitored interfaces</h2><ul>{}</ul></body></html>\n",
        info::VERSION,
        html_escape(&s.kernel_release),
        html_escape(&s.telemetry_path),
        if ifaces.is_empty() {
            "<li>none (tracepoints only)</li>".to_string()
        } else {
            ifaces.join("")
        }
    );
    response(StatusCode::OK, "text/html; charset=utf-8", body)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
