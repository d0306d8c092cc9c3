//! The wire protocol of pipecd's control API: gRPC over a local unix socket.
//!
//! `pipec.v1.rs` is generated from `proto/pipec.proto` by `tonic-prost-build` and committed,
//! so that building pipec needs no `protoc`; `tests/current.rs` regenerates it and fails when
//! the committed file is stale (regenerate with `PIPEC_BLESS=1 cargo test -p pipec-proto`).
//!
//! [`bind_private`] and [`connect`] are the two ends of the socket.

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

/// The stream of connections a server reads from a bound socket.
pub fn incoming(listener: tokio::net::UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}
