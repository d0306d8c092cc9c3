//! The local HTTP endpoints: `/healthz`, `/readyz` (200 once the first full state is
//! applied), `/metrics` (Prometheus text), `/status` (JSON) and `/debug/state` (the device's
//! content, one line per entry, for tests and debugging). HTTP/1.1, GET only, one request
//! per connection; it is meant for a local scraper, not the internet.
//!
//! No endpoint waits for an apply: the daemon holds its lock for as long as an apply takes
//! (seconds for a large first load), and a probe or a scrape that waited would time out and
//! make a busy daemon look dead. `/healthz` needs no state, `/readyz` reads a flag the daemon
//! sets without the lock, and `/metrics` and `/status` answer with what they last answered
//! while the lock is held, saying how old it is (`# served from N ms ago` in the metrics
//! text, the `X-Pipecd-Stale-Ms` header on both). Only `/debug/state`, which tests compare
//! with the device exactly, waits for the apply to end.

use crate::daemon::Daemon;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Instant;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the endpoints read: the daemon, its readiness flag ([`Daemon::ready_flag`]), and the
/// last answers of the endpoints that need the daemon's state.
#[derive(Clone)]
pub struct State {
    daemon: Arc<Mutex<Daemon>>,
    ready: Arc<AtomicBool>,
    last: Arc<Mutex<BTreeMap<String, (Answer, Instant)>>>,
}

/// An HTTP answer: status line, content type, body.
type Answer = (&'static str, &'static str, String);

impl State {
    /// The endpoints' view of `daemon`, whose readiness flag is `ready`.
    pub fn new(daemon: Arc<Mutex<Daemon>>, ready: Arc<AtomicBool>) -> State {
        State {
            daemon,
            ready,
            last: Arc::default(),
        }
    }
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, daemon: Arc<Mutex<Daemon>>, ready: Arc<AtomicBool>) {
    let state = State::new(daemon, ready);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, state).await {
                tracing::debug!("http: {e}");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: State) -> std::io::Result<()> {
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
    let ((status, ctype, body), stale) = if method != "GET" {
        (
            (
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n".to_string(),
            ),
            None,
        )
    } else {
        // Rendering the metrics of a large state takes a while: it runs on the blocking
        // pool, not on the current-thread runtime that serves every endpoint and the CNI.
        let path = path.to_string();
        tokio::task::spawn_blocking(move || answer(&path, &state))
            .await
            .unwrap_or((
                (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "the request failed\n".to_string(),
                ),
                None,
            ))
    };
    let stale = stale.map_or_else(String::new, |ms| format!("X-Pipecd-Stale-Ms: {ms}\r\n"));
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{stale}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

const OK: &str = "200 OK";
const TEXT: &str = "text/plain; charset=utf-8";

/// The answer for `path`, and how old it is in milliseconds when it is an earlier answer
/// served again because an apply holds the daemon's lock. Never waits for the lock.
pub fn answer(path: &str, state: &State) -> (Answer, Option<u128>) {
    match path {
        // Liveness needs no state: answering shows the process and its runtime are alive,
        // and the kubelet must not kill a daemon that is only busy.
        "/healthz" => return ((OK, TEXT, "ok\n".into()), None),
        "/readyz" if state.ready.load(Ordering::Acquire) => {
            return ((OK, TEXT, "ready\n".into()), None)
        }
        "/readyz" => {
            let why = "the first full state is not applied yet\n";
            return (("503 Service Unavailable", TEXT, why.into()), None);
        }
        _ => {}
    }
    // `/debug/state` is the device's content after the last apply, which tests compare
    // exactly: it waits for the lock (on the blocking pool), as a debugging aid may.
    let locked = if path == "/debug/state" {
        state.daemon.lock().map_err(TryLockError::from)
    } else {
        state.daemon.try_lock()
    };
    let d = match locked {
        Ok(d) => d,
        Err(TryLockError::WouldBlock) => return earlier(path, state),
        Err(TryLockError::Poisoned(_)) => {
            let why = "daemon state poisoned\n";
            return (("500 Internal Server Error", TEXT, why.into()), None);
        }
    };
    let fresh = route(path, &d);
    drop(d);
    if matches!(path, "/metrics" | "/status") && fresh.0 == OK {
        if let Ok(mut last) = state.last.lock() {
            last.insert(path.to_string(), (fresh.clone(), Instant::now()));
        }
    }
    (fresh, None)
}

/// What `path` last answered, while an apply holds the daemon's lock; 503 when it has not
/// answered yet (a scrape during the first load).
fn earlier(path: &str, state: &State) -> (Answer, Option<u128>) {
    let last = state.last.lock().ok().and_then(|l| l.get(path).cloned());
    let Some(((status, ctype, mut body), at)) = last else {
        let why = "an apply holds the daemon's state and nothing was served before; retry\n";
        return (("503 Service Unavailable", TEXT, why.into()), None);
    };
    let ms = at.elapsed().as_millis();
    if path == "/metrics" {
        body.push_str(&format!(
            "# served from {ms} ms ago: an apply holds the daemon's state\n"
        ));
    }
    ((status, ctype, body), Some(ms))
}

fn route(path: &str, d: &Daemon) -> Answer {
    match path {
        "/metrics" => (OK, "text/plain; version=0.0.4", d.metrics_text()),
        "/status" => (OK, "application/json", d.status().to_string() + "\n"),
        "/debug/state" => match d.device().dump(&crate::device::cookie_names(d.session())) {
            Ok(t) => (OK, TEXT, t),
            Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Sources;
    use crate::device::Device;
    use crate::source::ManifestDir;
    use std::path::Path;

    /// A daemon over the traffic-policy example for its node `n1`, not loaded yet.
    fn daemon() -> Daemon {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/traffic-policy");
        let sources = Sources {
            dir: Some(ManifestDir::new(&dir)),
            api: None,
        };
        Daemon::new("n1", sources, Device::model(), None).expect("daemon")
    }

    /// While something holds the daemon's lock (as an apply does), every endpoint answers
    /// at once: readiness from the flag, metrics and status from their last answers.
    #[test]
    fn no_endpoint_waits_for_the_daemons_lock() {
        let d = daemon();
        let ready = d.ready_flag();
        let state = State::new(Arc::new(Mutex::new(d)), ready);

        // Busy before anything was served: 503, not a wait.
        let held = state.daemon.lock().expect("lock");
        assert_eq!(answer("/readyz", &state).0 .0, "503 Service Unavailable");
        assert_eq!(answer("/status", &state).0 .0, "503 Service Unavailable");
        assert_eq!(answer("/healthz", &state).0 .0, OK);
        drop(held);

        state
            .daemon
            .lock()
            .expect("lock")
            .step(Instant::now())
            .expect("the first load");
        assert_eq!(answer("/readyz", &state).0 .0, OK);
        let (fresh, stale) = answer("/metrics", &state);
        assert_eq!((fresh.0, stale), (OK, None));
        let (status, _) = answer("/status", &state);
        assert_eq!(status.0, OK);

        // Busy again: the last answers, marked with their age; readiness from the flag.
        let held = state.daemon.lock().expect("lock");
        assert_eq!(answer("/readyz", &state).0 .0, OK);
        let (metrics, stale) = answer("/metrics", &state);
        assert!(stale.is_some(), "a served-again answer says so");
        assert!(metrics.2.starts_with(&fresh.2), "the same text as before");
        assert!(metrics.2.contains("# served from "), "{}", metrics.2);
        let (again, stale) = answer("/status", &state);
        assert_eq!(
            (again.2.as_str(), stale.is_some()),
            (status.2.as_str(), true)
        );
        drop(held);
        assert_eq!(
            answer("/metrics", &state).1,
            None,
            "fresh once the lock is free"
        );
    }
}
