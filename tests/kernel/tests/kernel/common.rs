//! Test helpers: the root check and a datapath on its own pin directory.

use std::ops::{Deref, DerefMut};
use std::os::unix::fs::MetadataExt;

use pipec_ebpf::datapath::scratch_pin_dir;
use pipec_ebpf::{Datapath, MapSizes};

/// Fails the test unless it runs as root: loading programs and creating namespaces need it.
pub(crate) fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "this kernel test needs root (BPF, BPF_PROG_TEST_RUN, netns); run the tests as root"
    );
}

/// A loaded datapath whose pinned maps are removed when the test ends, pass or fail.
pub(crate) struct TestDatapath(pub Datapath);

impl TestDatapath {
    pub(crate) fn load(tag: &str) -> Self {
        Self::load_sized(tag, &MapSizes::default())
    }

    /// A datapath whose maps are created with `sizes`.
    pub(crate) fn load_sized(tag: &str, sizes: &MapSizes) -> Self {
        require_root();
        let dir = scratch_pin_dir(tag);
        match Datapath::load_sized(Some(&dir), sizes) {
            Ok(dp) => TestDatapath(dp),
            Err(e) => {
                // Maps pinned before the failure would outlive the test.
                let _ = std::fs::remove_dir_all(&dir);
                panic!("loading the datapath: {e}")
            }
        }
    }
}

impl Drop for TestDatapath {
    fn drop(&mut self) {
        let _ = self.0.unpin();
    }
}

impl Deref for TestDatapath {
    type Target = Datapath;
    fn deref(&self) -> &Datapath {
        &self.0
    }
}

impl DerefMut for TestDatapath {
    fn deref_mut(&mut self) -> &mut Datapath {
        &mut self.0
    }
}

/// `manifest` (a file named `name`) compiled through a session to its eBPF artifact, every
/// endpoint bound to the loopback device (ifindex 1), where test runs happen.
pub(crate) fn loopback_artifact(name: &str, manifest: &str) -> pipec_ebpf::EbpfArtifact {
    loopback_artifact_of(&[(name, manifest)])
}

/// [`loopback_artifact`] of several files (manifests and `.pipe` programs, by name).
pub(crate) fn loopback_artifact_of(files: &[(&str, &str)]) -> pipec_ebpf::EbpfArtifact {
    use pipec::backend::Backend;
    let backends = |_: Option<&_>| -> Vec<Box<dyn Backend>> {
        vec![Box::new(pipec_ebpf::EbpfBackend::default())]
    };
    let session = pipec::session::Session::load_texts(
        files,
        pipec::session::SessionOptions::default(),
        &backends,
    )
    .expect("the manifest loads");
    let art = session
        .artifact("ebpf")
        .expect("an ebpf target")
        .expect("compiles");
    let mut art = art
        .as_any()
        .downcast_ref::<pipec_ebpf::EbpfArtifact>()
        .expect("eBPF")
        .clone();
    art.bind_interfaces(|_| Some(1));
    art
}
