//! The text form of identities and the ipcache (`pipec compile --emit identities`).

use super::{Identities, IdentityKind};
use crate::model::Cluster;
use crate::util::{labels_text, Table};

/// Renders identities (with the pods that have each) and the ipcache.
pub fn identities_to_text(cluster: &Cluster, ids: &Identities) -> String {
    let mut pods_of: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for (i, id) in ids.pods.iter().enumerate() {
        pods_of.entry(id.0).or_default().push(cluster.pods[i].key());
    }
    let mut t = Table::new(&["IDENTITY", "KIND", "SOURCE", "PODS", "LABELS"]);
    for (id, ident) in &ids.by_id {
        let kind = match ident.kind {
            IdentityKind::Reserved => "reserved",
            IdentityKind::Cluster => "cluster",
            IdentityKind::Cidr => "cidr",
        };
        let source = if ident.from_object {
            "CiliumIdentity"
        } else {
            "pipec"
        };
        let pods = pods_of
            .get(&id.0)
            .map(|p| summarize(p))
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            id.to_string(),
            kind.into(),
            source.into(),
            pods,
            labels_text(&ident.labels),
        ]);
    }
    let mut c = Table::new(&["PREFIX", "IDENTITY"]);
    for (net, id) in &ids.ipcache.entries {
        c.row(vec![net.to_string(), id.to_string()]);
    }
    format!(
        "# identities\n{}\n# ipcache (longest prefix wins)\n{}",
        t.render(),
        c.render()
    )
}

/// Lists up to three pods and counts the rest, so a table row stays readable at scale.
fn summarize(pods: &[String]) -> String {
    if pods.len() <= 3 {
        pods.join(",")
    } else {
        format!("{},... ({} pods)", pods[..3].join(","), pods.len())
    }
}
