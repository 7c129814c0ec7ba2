//! The HTTP side: `/metrics`, a landing page at `/`, 404 elsewhere, served by
//! [`super::http`] (timeouts, connection cap, graceful shutdown).

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
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
use tracing::warn;

use super::{
    exposition::RenderError,
    http::{self, HttpStats, Limits},
    snapshot::{Counters, UserStats},
};
use crate::{attach::controller::SharedInterfaces, kernel::KernelLayout};

/// What a scrape needs.
pub struct Shared {
    pub counters: Arc<Mutex<Counters>>,
    pub layout: KernelLayout,
    /// The interface controller's view.
    pub interfaces: SharedInterfaces,
    /// Tracing hooks and whether rstmon holds their links.
    pub hooks: Vec<(String, bool)>,
    pub kernel_release: String,
    pub wire_received: AtomicU64,
    pub trace_received: AtomicU64,
    pub decode_errors: AtomicU64,
    /// The HTTP server's own counters (connections open, rejected, closed), rendered
    /// after the exposition proper.
    pub http: Arc<HttpStats>,
    /// Workload names of the per-workload counters.
    pub labels: Arc<crate::sources::workload::Labels>,
}

impl Shared {
    /// Reads the maps and renders the exposition.
    pub fn render(&self) -> Result<String, RenderError> {
        let (ifnames, attached, skipped) = {
            let st = self.interfaces.read().unwrap_or_else(|p| p.into_inner());
            (st.ifnames(), st.attached(), st.skipped.clone())
        };
        let mut snap = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot(&self.layout, &ifnames);
        snap.interfaces = attached;
        snap.skipped = skipped;
        snap.hooks = self.hooks.clone();
        snap.user = UserStats {
            wire_received: self.wire_received.load(Ordering::Relaxed),
            trace_received: self.trace_received.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        };
        snap.workloads = self.labels.count(&snap.workload_raw, &self.layout.reasons);
        snap.version = env!("CARGO_PKG_VERSION").to_string();
        snap.kernel_release = self.kernel_release.clone();
        let mut text = snap.render()?;
        text.push_str(&self.http.render());
        Ok(text)
    }
}

/// Serves `shared` on `listener` under `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let stats = shared.http.clone();
    http::serve(
        listener,
        limits,
        stats,
        move |req| respond(shared.clone(), req),
        shutdown,
    )
    .await;
}

/// Answers one request: `GET /metrics`, `GET /`, 404 for any other path, 405 for a
/// method other than GET and HEAD on a known one. The request body is not read.
pub async fn respond<B>(shared: Arc<Shared>, req: Request<B>) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    drop(body);
    let metrics = match head.uri.path() {
        "/metrics" => true,
        "/" => false,
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
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
    if metrics {
        scrape(shared).await
    } else {
        landing(&shared)
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

async fn scrape(s: Arc<Shared>) -> Response<Full<Bytes>> {
    let rendered = tokio::task::spawn_blocking(move || s.render())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match rendered {
        Ok(body) => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            body,
        ),
        Err(e) => {
            warn!("scrape failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rstmon: scrape failed: {e}\n"),
            )
        }
    }
}

fn landing(s: &Shared) -> Response<Full<Bytes>> {
    let ifaces: Vec<String> = s
        .interfaces
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .attached()
        .iter()
        .map(|(name, mode)| format!("<li>{} ({mode} XDP)</li>", html_escape(name)))
        .collect();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rstmon</title></head>\
         <body><h1>rstmon {}</h1><p>TCP reset monitor on Linux {}.</p>\
         <p><a href=\"/metrics\">Metrics</a></p><h2>Monitored interfaces</h2><ul>{}</ul></body></html>\n",
        env!("CARGO_PKG_VERSION"),
        html_escape(&s.kernel_release),
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
}
