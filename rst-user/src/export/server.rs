//! The HTTP side: `/metrics` and a landing page.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tracing::warn;

use super::{
    exposition::RenderError,
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
        snap.version = env!("CARGO_PKG_VERSION").to_string();
        snap.kernel_release = self.kernel_release.clone();
        snap.render()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || s.render())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match rendered {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            warn!("scrape failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rstmon: scrape failed: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn landing(State(s): State<Arc<Shared>>) -> impl IntoResponse {
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
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(landing))
        .with_state(shared)
}
