//! The channel to pipecd: ADD, DEL and CHECK over gRPC on its control socket, and the
//! deletions pipecd has not heard of because it was down, kept on disk and replayed (as
//! Cilium's plugin does), so that DEL succeeds whatever pipecd's state.

use crate::spec::{self, CniError};
use pipec_proto::v1::cni_client::CniClient;
use pipec_proto::v1::{AddRequest, Attachment, CheckRequest, DelRequest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long connecting to pipecd may take before it counts as down.
const CONNECT: Duration = Duration::from_secs(2);

/// A deletion pipecd must still hear of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDel {
    /// The container.
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
}

/// A client of pipecd's CNI service.
pub struct Pipecd {
    rt: tokio::runtime::Runtime,
    client: CniClient<tonic::transport::Channel>,
}

/// Whether an error means "pipecd is not there" (try again later) rather than a refusal.
fn unavailable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

impl Pipecd {
    /// Connects to pipecd as the configuration says; unreachable is code 11, a channel
    /// that does not authenticate too (the details say why).
    pub fn connect(config: &crate::spec::Config) -> Result<Pipecd, CniError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(spec::IO_FAILURE, e.to_string()))?;
        let address = config.pipecd.as_str();
        let unreachable = |e: String| {
            CniError::new(
                spec::TRY_AGAIN_LATER,
                format!("pipecd is not reachable at {address}"),
            )
            .details(e)
        };
        let channel = match &config.tls {
            Some((files, name)) if address.starts_with("https://") => rt
                .block_on(async {
                    tokio::time::timeout(
                        CONNECT,
                        pipec_proto::connect_tls(address, files, name.as_deref()),
                    )
                    .await
                })
                .map_err(|_| timeout_error(address))?
                .map_err(unreachable)?,
            _ => {
                let path = pipec_proto::socket_path(address)
                    .map_err(|e| CniError::new(spec::INVALID_CONFIG, format!("`pipecd`: {e}")))?
                    .to_path_buf();
                rt.block_on(async {
                    tokio::time::timeout(CONNECT, pipec_proto::connect(&path)).await
                })
                .map_err(|_| timeout_error(address))?
                .map_err(|e| unreachable(e.to_string()))?
            }
        };
        Ok(Pipecd {
            rt,
            client: CniClient::new(channel),
        })
    }

    /// ADD: returns once pipecd has the pod's policy in the datapath; after `timeout_ms`,
    /// code 11.
    pub fn add(&mut self, attachment: Attachment, timeout_ms: u32) -> Result<u64, CniError> {
        let pod = format!("{}/{}", attachment.pod_namespace, attachment.pod_name);
        let request = AddRequest {
            attachment: Some(attachment),
            timeout_ms,
        };
        let client = &mut self.client;
        // The gRPC deadline is a little longer than pipecd's own wait, so that pipecd's
        // answer (with its reason) normally arrives first.
        let deadline = Duration::from_millis(u64::from(timeout_ms) + 2_000);
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(deadline, client.add(request)).await });
        match answer {
            Err(_) => Err(CniError::new(
                spec::TRY_AGAIN_LATER,
                format!(
                    "pipecd did not put the policy of pod {pod} in place within {timeout_ms} ms"
                ),
            )),
            Ok(Ok(reply)) => Ok(reply.into_inner().generation),
            Ok(Err(s)) if unavailable(&s) => Err(CniError::new(
                spec::TRY_AGAIN_LATER,
                format!("pipecd cannot apply pod {pod} yet"),
            )
            .details(s.message().to_string())),
            Ok(Err(s)) => Err(
                CniError::new(spec::REFUSED, format!("pipecd refused pod {pod}"))
                    .details(s.message().to_string()),
            ),
        }
    }

    /// DEL.
    pub fn del(&mut self, d: &PendingDel) -> Result<(), CniError> {
        let request = DelRequest {
            container_id: d.container_id.clone(),
            ifname: d.ifname.clone(),
            pod_namespace: d.pod_namespace.clone(),
            pod_name: d.pod_name.clone(),
        };
        let client = &mut self.client;
        self.rt
            .block_on(async { client.del(request).await })
            .map(|_| ())
            .map_err(|s| {
                CniError::new(spec::TRY_AGAIN_LATER, "pipecd did not take the deletion")
                    .details(s.message().to_string())
            })
    }

    /// CHECK: the addresses pipecd applied for the attachment, `None` when it does not know
    /// it.
    pub fn check(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Vec<String>>, CniError> {
        let request = CheckRequest {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        let client = &mut self.client;
        let reply = self
            .rt
            .block_on(async { client.check(request).await })
            .map_err(|s| {
                CniError::new(spec::TRY_AGAIN_LATER, "pipecd did not answer CHECK")
                    .details(s.message().to_string())
            })?
            .into_inner();
        Ok(reply.known.then_some(reply.ips))
    }

    /// Tells pipecd the deletions it missed; those it takes leave the file.
    pub fn replay(&mut self, state_dir: &Path) -> Result<(), CniError> {
        let _guard = lock(state_dir)?;
        let pending = read_pending(state_dir);
        if pending.is_empty() {
            return Ok(());
        }
        let mut left = Vec::new();
        for d in pending {
            if self.del(&d).is_err() {
                left.push(d);
            }
        }
        write_pending(state_dir, &left)
    }
}

fn timeout_error(address: &str) -> CniError {
    CniError::new(
        spec::TRY_AGAIN_LATER,
        format!("pipecd did not answer at {address} within {CONNECT:?}"),
    )
}

fn pending_path(state_dir: &Path) -> PathBuf {
    state_dir.join("pending-del.json")
}

/// An exclusive lock on the state directory (the runtime may run plugins for different
/// containers at once).
fn lock(state_dir: &Path) -> Result<std::fs::File, CniError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let io = |e: std::io::Error| {
        CniError::new(
            spec::IO_FAILURE,
            format!("state directory {}", state_dir.display()),
        )
        .details(e.to_string())
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io)?;
    let f = std::fs::File::create(state_dir.join(".lock")).map_err(io)?;
    f.lock().map_err(io)?;
    Ok(f)
}

fn read_pending(state_dir: &Path) -> Vec<PendingDel> {
    std::fs::read_to_string(pending_path(state_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_pending(state_dir: &Path, list: &[PendingDel]) -> Result<(), CniError> {
    let io = |e: std::io::Error| {
        CniError::new(spec::IO_FAILURE, "writing the pending deletions").details(e.to_string())
    };
    let tmp = state_dir.join(".pending-del.json.tmp");
    let text = serde_json::to_vec(list).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, pending_path(state_dir)).map_err(io)
}

/// Keeps a deletion for pipecd to hear of later.
pub fn remember(state_dir: &Path, d: PendingDel) -> Result<(), CniError> {
    let _guard = lock(state_dir)?;
    let mut list = read_pending(state_dir);
    if !list.contains(&d) {
        list.push(d);
    }
    write_pending(state_dir, &list)
}

/// The deletions pipecd has not heard of yet.
pub fn pending(state_dir: &Path) -> Vec<PendingDel> {
    read_pending(state_dir)
}
