//! The HTTP side: `/metrics` and a landing page.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{
    kernel::KernelLayout,
    loader::{Attached, Counters},
    metrics::UserStats,
};

/// What a scrape needs.
pub struct Shared {
    pub counters: Mutex<Counters>,
    pub layout: KernelLayout,
    pub attached: Vec<Attached>,
    pub hooks: Vec<(String, bool)>,
    pub kernel_release: String,
    pub wire_received: AtomicU64,
    pub trace_received: AtomicU64,
    pub decode_errors: AtomicU64,
}

impl Shared {
    pub fn render(&self) -> String {
        let ifnames = self
            .attached
            .iter()
            .map(|a| (a.iface.ifindex, a.iface.name.clone()))
            .collect();
        let mut snap = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot(&self.layout, &ifnames);
        snap.interfaces = self
            .attached
            .iter()
            .map(|a| (a.iface.name.clone(), a.mode.to_string()))
            .collect();
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

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || s.render())
        .await
        .unwrap_or_else(|e| format!("# rstmon: scrape failed: {e}\n"));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn landing(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let ifaces: Vec<String> = s
        .attached
        .iter()
        .map(|a| format!("<li>{} ({} XDP)</li>", html_escape(&a.iface.name), a.mode))
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
