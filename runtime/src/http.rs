//! The local HTTP endpoints: `/healthz`, `/readyz` (200 once the first full state is
//! applied), `/metrics` (Prometheus text), `/status` (JSON) and `/debug/state` (the device's
//! content, one line per entry, for tests and debugging). HTTP/1.1, GET only, one request
//! per connection; it is meant for a local scraper, not the internet.

use crate::daemon::Daemon;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, daemon: Arc<Mutex<Daemon>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, daemon).await {
                tracing::debug!("http: {e}");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, daemon: Arc<Mutex<Daemon>>) -> std::io::Result<()> {
    // A request line and headers fit in 8 KiB; a longer one is refused, not buffered.
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await??;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if path == "/healthz" {
        // Liveness needs no state: answering shows the process and its runtime are alive.
        // It must not wait for the daemon's lock, which an apply holds for as long as it
        // takes (seconds for a large first load), or the kubelet would kill a daemon that
        // is only busy.
        ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string())
    } else {
        // The daemon's lock is taken on the blocking pool: waiting for it here would hold
        // the current-thread runtime, and with it every other endpoint and the CNI channel.
        let path = path.to_string();
        tokio::task::spawn_blocking(move || route(&path, &daemon))
            .await
            .unwrap_or((
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                "the request failed\n".to_string(),
            ))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn route(path: &str, daemon: &Mutex<Daemon>) -> (&'static str, &'static str, String) {
    const OK: &str = "200 OK";
    const TEXT: &str = "text/plain; charset=utf-8";
    let Ok(d) = daemon.lock() else {
        return (
            "500 Internal Server Error",
            TEXT,
            "daemon state poisoned\n".into(),
        );
    };
    match path {
        "/readyz" if d.metrics.ready => (OK, TEXT, "ready\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "the first full state is not applied yet\n".into(),
        ),
        "/metrics" => (OK, "text/plain; version=0.0.4", d.metrics_text()),
        "/status" => (OK, "application/json", d.status().to_string() + "\n"),
        "/debug/state" => match d.device().dump(&crate::device::cookie_names(d.session())) {
            Ok(t) => (OK, TEXT, t),
            Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
