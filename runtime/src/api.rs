//! The Kubernetes API source: one kube-rs watcher per kind pipec reads, folded into the
//! objects the session should hold.
//!
//! Each watcher lists its kind, then watches from the list's resource version; kube-rs
//! follows bookmarks, resumes a dropped stream from the last version it saw, and relists
//! after a `410 Gone`. This module turns the watchers' events into *pending* changes, one per
//! object, latest state wins: a burst of events about one object is one change, and the
//! pending set is bounded by the number of objects, never by the number of events. A relist
//! can only say who exists, so the objects of that kind the session holds but the relist did
//! not name are deleted when it completes.
//!
//! A change the daemon has taken is *in flight* until the daemon says it applied or refused
//! it. While it is in flight the session does not hold it yet, so it is in neither the held
//! set nor the pending one; the fold still counts it as known, so that a relist that
//! completes during an apply deletes it when the relist does not name it, and a deletion
//! that arrives during the apply is kept rather than dropped as a deletion of an unknown
//! object.
//!
//! The first apply waits until every kind has finished its initial list (kube-proxy's "wait
//! for sync"). A kind the API server does not serve (a 404: its CRD is not installed, say
//! Cilium's on a cluster without Cilium) counts as listed and empty, and its watcher keeps
//! retrying with back-off, so objects arrive if the CRD is installed later.
//!
//! Only one Secret is read, `kube-system/cilium-ipsec-keys`, through a field selector, so that
//! pipecd needs no right to read any other Secret.

use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use pipec::session::{Event, ObjectKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One kind pipecd watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The kind (`Pod`).
    pub kind: &'static str,
    /// The API group, empty for the core group.
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The resource (`pods`), as RBAC names it.
    pub plural: &'static str,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        kind,
        group,
        version,
        plural,
        namespaced,
    }
}

/// Every kind pipecd watches cluster-wide. `deploy/pipecd.yaml`'s ClusterRole grants list and
/// watch of exactly these (a test holds the two together).
pub const KINDS: &[Kind] = &[
    kind("Namespace", "", "v1", "namespaces", false),
    kind("Pod", "", "v1", "pods", true),
    kind("Node", "", "v1", "nodes", false),
    kind("Service", "", "v1", "services", true),
    kind(
        "EndpointSlice",
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        true,
    ),
    kind(
        "NetworkPolicy",
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        true,
    ),
    kind(
        "CiliumNetworkPolicy",
        "cilium.io",
        "v2",
        "ciliumnetworkpolicies",
        true,
    ),
    kind(
        "CiliumClusterwideNetworkPolicy",
        "cilium.io",
        "v2",
        "ciliumclusterwidenetworkpolicies",
        false,
    ),
    kind(
        "CiliumIdentity",
        "cilium.io",
        "v2",
        "ciliumidentities",
        false,
    ),
    kind("CiliumEndpoint", "cilium.io", "v2", "ciliumendpoints", true),
    kind(
        "AdminNetworkPolicy",
        "policy.networking.k8s.io",
        "v1alpha1",
        "adminnetworkpolicies",
        false,
    ),
    kind(
        "BaselineAdminNetworkPolicy",
        "policy.networking.k8s.io",
        "v1alpha1",
        "baselineadminnetworkpolicies",
        false,
    ),
    kind(
        "ClusterNetworkPolicy",
        "policy.networking.k8s.io",
        "v1alpha2",
        "clusternetworkpolicies",
        false,
    ),
];

/// The one Secret pipecd reads: the IPsec keys, in Cilium's format and place.
pub const IPSEC_SECRET: (&str, &str) = ("kube-system", "cilium-ipsec-keys");

const SECRET: Kind = kind("Secret", "", "v1", "secrets", true);

impl Kind {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// Where the API server is and how to authenticate, as kube-rs reads it.
#[derive(Clone, Debug)]
pub enum ApiConfig {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The service account of the pod pipecd runs in.
    InCluster,
}

/// One object's change, ready to apply: its new JSON, or `None` when it is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiChange {
    /// The object.
    pub key: ObjectKey,
    /// Its JSON text, `None` for a deletion.
    pub text: Option<String>,
}

impl ApiChange {
    /// The name diagnostics and status use for the object (`watch:Pod/ns/name`).
    pub fn label(&self) -> String {
        label(&self.key)
    }

    /// The session events of the change.
    pub fn events(&self) -> Vec<Event> {
        match &self.text {
            Some(text) => vec![Event::Upsert {
                source: self.label(),
                text: text.clone(),
            }],
            None => vec![Event::Delete(self.key.clone())],
        }
    }
}

fn label(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("watch:{}/{}", key.kind, key.name)
    } else {
        format!("watch:{}/{}/{}", key.kind, key.namespace, key.name)
    }
}

/// What the watchers have seen, folded; see the module documentation.
#[derive(Debug, Default)]
pub struct Fold {
    /// The kinds whose initial list is complete (or that the server does not serve).
    synced: BTreeSet<&'static str>,
    /// The kinds the server does not serve (404 on list).
    absent: BTreeSet<&'static str>,
    /// Kinds in the middle of a list, with the objects it named so far.
    listing: BTreeMap<&'static str, BTreeSet<ObjectKey>>,
    /// Changes not yet taken by the daemon.
    pending: BTreeMap<ObjectKey, Option<String>>,
    /// A digest of the text of every object the session holds: enough to tell an
    /// unchanged object, without a second copy of every object (and of the key Secret).
    held: BTreeMap<ObjectKey, u64>,
    /// Changes the daemon has taken and not yet applied or refused: the digest of the new
    /// text, `None` for a deletion. See the module documentation for why they are kept.
    in_flight: BTreeMap<ObjectKey, Option<u64>>,
    /// Watch errors per kind.
    errors: BTreeMap<&'static str, u64>,
    /// The last watch error, for the status.
    last_error: Option<String>,
}

impl Fold {
    /// A (re)list of `kind` starts.
    pub fn init(&mut self, kind: &'static str) {
        self.listing.insert(kind, BTreeSet::new());
    }

    /// `key` exists with `text` (from a list or a watch event).
    pub fn upsert(&mut self, key: ObjectKey, text: String) {
        if let Some(seen) = self.listing.get_mut(kind_of(&key)) {
            seen.insert(key.clone());
        }
        // An object whose change is in flight is never taken as unchanged: the in-flight
        // change may still be refused, and then this one must be applied.
        if !self.in_flight.contains_key(&key) && self.held.get(&key) == Some(&digest(&text)) {
            self.pending.remove(&key);
        } else {
            self.pending.insert(key, Some(text));
        }
    }

    /// `key` is gone.
    pub fn delete(&mut self, key: ObjectKey) {
        // An object whose upsert is in flight will be held once the apply ends, so its
        // deletion must stay pending, or the object would outlive its deletion.
        if self.held.contains_key(&key) || self.in_flight.contains_key(&key) {
            self.pending.insert(key, None);
        } else {
            self.pending.remove(&key);
        }
    }

    /// The (re)list of `kind` is complete: what it did not name is gone.
    pub fn init_done(&mut self, kind: &'static str) {
        let seen = self.listing.remove(kind).unwrap_or_default();
        let known: BTreeSet<ObjectKey> = self
            .held
            .keys()
            .chain(self.pending.keys())
            .chain(self.in_flight.keys())
            .filter(|k| k.kind == kind)
            .cloned()
            .collect();
        for key in known.into_iter().filter(|k| !seen.contains(k)) {
            self.delete(key);
        }
        self.synced.insert(kind);
    }

    /// A watch error; a 404 on a kind not yet listed means the server does not serve it.
    pub fn error(&mut self, kind: &'static str, message: String, not_served: bool) {
        *self.errors.entry(kind).or_default() += 1;
        self.last_error = Some(format!("{kind}: {message}"));
        if not_served && !self.synced.contains(kind) {
            self.absent.insert(kind);
            self.synced.insert(kind);
        }
    }

    /// Whether every one of `kinds` has finished its initial list.
    pub fn synced(&self, kinds: usize) -> bool {
        self.synced.len() >= kinds
    }

    /// The pending changes, in key order; they are no longer pending but in flight until
    /// [`Fold::applied`] or [`Fold::refused`] is called for each of them.
    pub fn take(&mut self) -> Vec<ApiChange> {
        let taken: Vec<ApiChange> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(key, text)| ApiChange { key, text })
            .collect();
        for c in &taken {
            self.in_flight
                .insert(c.key.clone(), c.text.as_deref().map(digest));
        }
        taken
    }

    /// Records that the session holds `change`.
    pub fn applied(&mut self, change: ApiChange) {
        self.in_flight.remove(&change.key);
        match change.text {
            Some(t) => {
                self.held.insert(change.key, digest(&t));
            }
            None => {
                self.held.remove(&change.key);
            }
        }
    }

    /// Records that the session refused `change`: it holds what it held before.
    pub fn refused(&mut self, change: &ApiChange) {
        self.in_flight.remove(&change.key);
    }

    /// The source's status (for `/status`).
    pub fn status(&self, kinds: usize) -> serde_json::Value {
        serde_json::json!({
            "synced": self.synced(kinds),
            "kinds_synced": self.synced.iter().collect::<Vec<_>>(),
            "kinds_not_served": self.absent.iter().collect::<Vec<_>>(),
            "objects": self.held.len(),
            "pending": self.pending.len(),
            "watch_errors": self.errors,
            "last_error": self.last_error,
        })
    }

    /// Watch errors so far, all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The digest [`Fold`] keeps of an object's text (only compared within one process).
fn digest(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The kind of a key as the `'static` name the fold uses for lists.
fn kind_of(key: &ObjectKey) -> &'static str {
    KINDS
        .iter()
        .chain([&SECRET])
        .find(|k| k.kind == key.kind)
        .map_or("", |k| k.kind)
}

/// The running watchers and their fold.
pub struct ApiSource {
    fold: Arc<Mutex<Fold>>,
    kinds: usize,
}

impl ApiSource {
    /// Connects to the API server and starts one watcher per kind; each event wakes the
    /// daemon through `wake` (a full channel means a wake-up is already due).
    pub async fn start(config: &ApiConfig, wake: mpsc::Sender<()>) -> anyhow::Result<ApiSource> {
        let client = client(config).await?;
        let fold = Arc::new(Mutex::new(Fold::default()));
        for k in KINDS {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.resource());
            spawn_watcher(*k, api, watcher::Config::default(), &fold, &wake);
        }
        let (ns, name) = IPSEC_SECRET;
        let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &SECRET.resource());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        spawn_watcher(SECRET, api, config, &fold, &wake);
        Ok(ApiSource {
            fold,
            kinds: KINDS.len() + 1,
        })
    }

    /// Runs `f` on the fold.
    pub fn with<T>(&self, f: impl FnOnce(&mut Fold) -> T) -> T {
        let mut fold = self.fold.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut fold)
    }

    /// Whether every kind has finished its initial list.
    pub fn synced(&self) -> bool {
        self.with(|f| f.synced(self.kinds))
    }

    /// The source's status.
    pub fn status(&self) -> serde_json::Value {
        self.with(|f| f.status(self.kinds))
    }
}

async fn client(config: &ApiConfig) -> anyhow::Result<kube::Client> {
    let config = match config {
        ApiConfig::Kubeconfig(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?
        }
        ApiConfig::InCluster => {
            kube::Config::incluster().map_err(|e| anyhow::anyhow!("--in-cluster: {e}"))?
        }
    };
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}

fn spawn_watcher(
    kind: Kind,
    api: Api<DynamicObject>,
    config: watcher::Config,
    fold: &Arc<Mutex<Fold>>,
    wake: &mpsc::Sender<()>,
) {
    let fold = fold.clone();
    let wake = wake.clone();
    tokio::spawn(async move {
        // The back-off keeps the stream alive through errors: a failed list or watch is
        // retried, never the end of the source.
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            {
                let mut f = fold.lock().unwrap_or_else(|p| p.into_inner());
                fold_event(&mut f, kind, event);
            }
            let _ = wake.try_send(());
        }
    });
}

fn fold_event(
    fold: &mut Fold,
    kind: Kind,
    event: Result<watcher::Event<DynamicObject>, watcher::Error>,
) {
    match event {
        Ok(watcher::Event::Init) => fold.init(kind.kind),
        Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
            let (key, text) = object(kind, o);
            fold.upsert(key, text);
        }
        Ok(watcher::Event::Delete(o)) => fold.delete(object(kind, o).0),
        Ok(watcher::Event::InitDone) => fold.init_done(kind.kind),
        Err(e) => {
            let not_served = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
            tracing::warn!(kind = kind.kind, not_served, "watch: {e}");
            fold.error(kind.kind, e.to_string(), not_served);
        }
    }
}

/// The object's key and its JSON, with `apiVersion` and `kind` (list items lack them) and
/// without the fields that change on every write and mean nothing to pipec
/// (`resourceVersion`, `managedFields`), so that an unchanged object is recognised.
fn object(kind: Kind, mut o: DynamicObject) -> (ObjectKey, String) {
    let api_version = if kind.group.is_empty() {
        kind.version.to_string()
    } else {
        format!("{}/{}", kind.group, kind.version)
    };
    o.types = Some(kube::api::TypeMeta {
        api_version,
        kind: kind.kind.to_string(),
    });
    o.metadata.resource_version = None;
    o.metadata.managed_fields = None;
    let key = ObjectKey::new(
        kind.kind,
        o.metadata.namespace.as_deref().unwrap_or("default"),
        o.metadata.name.as_deref().unwrap_or(""),
    );
    let text = serde_json::to_string(&o).unwrap_or_default();
    (key, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ObjectKey {
        ObjectKey::new("Pod", "default", name)
    }

    fn apply_all(f: &mut Fold) -> Vec<ApiChange> {
        let out = f.take();
        for c in &out {
            f.applied(c.clone());
        }
        out
    }

    #[test]
    fn a_burst_about_one_object_is_one_change() {
        let mut f = Fold::default();
        f.upsert(pod("a"), "1".into());
        f.upsert(pod("a"), "2".into());
        f.upsert(pod("a"), "3".into());
        assert_eq!(
            f.take(),
            [ApiChange {
                key: pod("a"),
                text: Some("3".into())
            }]
        );
    }

    #[test]
    fn an_object_added_and_deleted_before_the_apply_is_nothing() {
        let mut f = Fold::default();
        f.upsert(pod("a"), "1".into());
        f.delete(pod("a"));
        assert!(f.take().is_empty());
    }

    #[test]
    fn an_unchanged_object_is_no_change() {
        let mut f = Fold::default();
        f.upsert(pod("a"), "1".into());
        apply_all(&mut f);
        f.upsert(pod("a"), "2".into());
        f.upsert(pod("a"), "1".into());
        assert!(f.take().is_empty());
    }

    #[test]
    fn a_relist_deletes_what_it_does_not_name() {
        let mut f = Fold::default();
        f.init("Pod");
        f.upsert(pod("a"), "1".into());
        f.upsert(pod("b"), "1".into());
        f.init_done("Pod");
        apply_all(&mut f);
        // A pending add that the relist does not name goes too.
        f.upsert(pod("c"), "1".into());
        f.init("Pod");
        f.upsert(pod("a"), "1".into());
        f.init_done("Pod");
        assert_eq!(
            f.take(),
            [ApiChange {
                key: pod("b"),
                text: None
            }]
        );
    }

    #[test]
    fn a_relist_that_completes_during_an_apply_deletes_what_the_apply_adds() {
        let mut f = Fold::default();
        f.init("Pod");
        f.upsert(pod("a"), "1".into());
        f.upsert(pod("b"), "1".into());
        f.init_done("Pod");
        // The daemon takes a and b; the relist runs while it applies them.
        let taken = f.take();
        f.init("Pod");
        f.upsert(pod("a"), "1".into());
        f.init_done("Pod");
        for c in taken {
            f.applied(c);
        }
        let after = f.take();
        assert!(
            after.contains(&ApiChange {
                key: pod("b"),
                text: None
            }),
            "{after:?}"
        );
    }

    #[test]
    fn a_deletion_during_an_apply_is_not_lost() {
        let mut f = Fold::default();
        f.upsert(pod("a"), "1".into());
        let taken = f.take();
        f.delete(pod("a"));
        for c in taken {
            f.applied(c);
        }
        assert_eq!(
            f.take(),
            [ApiChange {
                key: pod("a"),
                text: None
            }]
        );
    }

    #[test]
    fn a_refused_change_is_no_longer_in_flight() {
        let mut f = Fold::default();
        f.upsert(pod("a"), "1".into());
        for c in f.take() {
            f.refused(&c);
        }
        f.delete(pod("a"));
        assert!(f.take().is_empty());
    }

    #[test]
    fn a_relist_leaves_other_kinds_alone() {
        let mut f = Fold::default();
        f.upsert(ObjectKey::new("Service", "default", "s"), "1".into());
        apply_all(&mut f);
        f.init("Pod");
        f.init_done("Pod");
        assert!(f.take().is_empty());
    }

    #[test]
    fn sync_waits_for_every_kind_and_a_kind_not_served_counts_as_listed() {
        let mut f = Fold::default();
        f.init("Pod");
        f.init_done("Pod");
        assert!(!f.synced(2));
        f.error("CiliumIdentity", "404".into(), false);
        assert!(!f.synced(2), "an error that is not a 404 is not a sync");
        f.error("CiliumIdentity", "404".into(), true);
        assert!(f.synced(2));
    }

    #[test]
    fn every_kind_reads_as_the_session_keys_it() {
        for k in KINDS.iter().chain([&SECRET]) {
            let key = ObjectKey::new(k.kind, "ns", "n");
            assert_eq!(kind_of(&key), k.kind);
            assert_eq!(key.namespace.is_empty(), !k.namespaced, "{}", k.kind);
        }
    }
}
