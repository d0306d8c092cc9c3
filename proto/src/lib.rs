//! The wire protocol of pipecd's control API: gRPC over a local unix socket.
//!
//! `pipec.v1.rs` is generated from `proto/pipec.proto` by `tonic-prost-build` and committed,
//! so that building pipec needs no `protoc`; `tests/current.rs` regenerates it and fails when
//! the committed file is stale (regenerate with `PIPEC_BLESS=1 cargo test -p pipec-proto`).
//!
//! [`bind_private`] and [`connect`] are the two ends of the local socket; [`server_tls`]
//! and [`connect_tls`] the two ends of the mutually authenticated TCP channel between the
//! host and the DPU (rustls; each side presents a certificate of one CA and accepts only
//! the other's).

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use tonic_prost_build as _;

use std::path::Path;

/// The generated messages, client and server.
#[allow(
    missing_docs,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod v1 {
    include!("pipec.v1.rs");
}

/// The default control socket of pipecd.
pub const DEFAULT_SOCKET: &str = "/run/pipec/pipecd.sock";

/// [`DEFAULT_SOCKET`] as an address (`unix:PATH`), the default of every client.
pub const DEFAULT_ADDRESS: &str = "unix:/run/pipec/pipecd.sock";

/// The path of a `unix:PATH` address (a bare path is taken as is).
pub fn socket_path(address: &str) -> Result<&Path, String> {
    let path = address.strip_prefix("unix:").unwrap_or(address);
    if path.is_empty() {
        return Err(format!("{address}: no socket path (expected unix:PATH)"));
    }
    if address.contains("://") {
        return Err(format!(
            "{address}: the control API is served on a local socket only (expected unix:PATH)"
        ));
    }
    Ok(Path::new(path))
}

/// Binds a unix socket at `path` that only its owner can use (mode 0600). The socket is made
/// in a fresh private directory beside `path`, narrowed, then renamed into place, so that it
/// is never reachable with a wider mode, not even for an instant. A stale socket at `path`
/// is replaced.
pub fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let staging = parent.join(format!(".pipecd-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let result = (|| {
        let tmp = staging.join("s");
        let listener = tokio::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// A channel to the control socket at `path`.
pub async fn connect(path: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API and never dialled: the connector opens the socket.
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// The stream of connections a server reads from a bound TCP listener.
pub fn incoming_tcp(
    listener: tokio::net::TcpListener,
) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// The stream of connections a server reads from a bound socket.
pub fn incoming(listener: tokio::net::UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}

/// The files of one side of the mutually authenticated channel (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA whose certificates the other side must present.
    pub ca: std::path::PathBuf,
    /// This side's certificate.
    pub cert: std::path::PathBuf,
    /// This side's key.
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    fn read(&self) -> Result<(tonic::transport::Certificate, tonic::transport::Identity), String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let ca = tonic::transport::Certificate::from_pem(read(&self.ca)?);
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok((ca, identity))
    }
}

/// The server side: its certificate, and a client certificate of the CA required.
pub fn server_tls(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig, String> {
    let (ca, identity) = files.read()?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca)
        .client_auth_optional(false))
}

/// A channel to `url` (`https://HOST:PORT`) that presents the client certificate and
/// accepts only a server certificate of the CA, for `server_name` (default: the URL's host).
pub async fn connect_tls(
    url: &str,
    files: &TlsFiles,
    server_name: Option<&str>,
) -> Result<tonic::transport::Channel, String> {
    let (ca, identity) = files.read()?;
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity);
    if let Some(name) = server_name {
        tls = tls.domain_name(name);
    }
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("{url}: {e}"))?
        .connect()
        .await
        .map_err(|e| {
            let mut msg = format!("{url}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })
}

/// One line of `pipec observe` for a flow event, as `hubble observe` prints flows: time,
/// direction, verdict, protocol, source -> destination, the reason and the deciding rule.
pub fn flow_line(e: &v1::FlowEvent) -> String {
    let at = |addr: &str, port: u32| match (port, addr.contains(':')) {
        (0, _) => addr.to_string(),
        (_, true) => format!("[{addr}]:{port}"),
        (_, false) => format!("{addr}:{port}"),
    };
    let mut out = format!(
        "{:>16.6} {:7} {:10} {:4} {} -> {}",
        e.time_ns as f64 / 1e9,
        e.direction,
        e.verdict.to_uppercase(),
        e.protocol,
        at(&e.source, e.source_port),
        at(&e.destination, e.destination_port),
    );
    if !e.reason.is_empty() {
        out.push_str(&format!(" ({})", e.reason));
    }
    if !e.rule.is_empty() {
        out.push_str(&format!(" by {}", e.rule));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_address_names_the_default_socket() {
        assert_eq!(
            super::socket_path(super::DEFAULT_ADDRESS),
            Ok(std::path::Path::new(super::DEFAULT_SOCKET))
        );
    }
}
