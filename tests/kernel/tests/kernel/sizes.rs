//! The maps are created with the sizes asked for, a map holds what its size allows and no
//! more, and a pinned map keeps its size when the datapath is loaded again.

use crate::common::TestDatapath;
use pipec_ebpf::artifact::{Backend, MapName};
use pipec_ebpf::{Datapath, EbpfArtifact, MapSizes};

fn with_backends(n: u32) -> EbpfArtifact {
    let mut a = EbpfArtifact::default();
    for id in 1..=n {
        let addr = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + id));
        a.backends.insert(id, Backend { addr, port: 80 });
    }
    a
}

fn backends_held(dp: &Datapath) -> usize {
    let entries = dp.read_entries().expect("read the maps");
    entries
        .keys()
        .filter(|(m, _)| *m == MapName::Backends)
        .count()
}

/// One backend more than the header's size: the default map refuses it (which is why the
/// eBPF backend refuses such a state before an apply), a map sized for it takes it, and
/// loading again over the pins keeps the map, its size and its entries.
#[test]
fn a_map_sized_by_the_setting_holds_more_than_the_default() {
    let room = MapName::Backends.capacity() as u32;
    let artifact = with_backends(room + 1);
    {
        let mut dp = TestDatapath::load("size_default");
        assert_eq!(dp.sizes().expect("sizes"), MapSizes::default());
        let e = dp
            .write(&artifact)
            .expect_err("the default map is one too small");
        assert!(e.to_string().contains("backends"), "{e}");
    }
    let sizes = MapSizes::parse("backends=131072").expect("sizes");
    let mut dp = TestDatapath::load_sized("size_backends", &sizes);
    assert_eq!(dp.sizes().expect("sizes"), sizes);
    dp.write(&artifact)
        .expect("the sized map holds every backend");
    assert_eq!(backends_held(&dp), room as usize + 1);

    // Loaded again over the same pins with other sizes: the pinned map stays as it was.
    let dir = dp.pin_dir().expect("pinned").to_path_buf();
    let bigger = MapSizes::parse("backends=262144").expect("sizes");
    let again = Datapath::load_sized(Some(&dir), &bigger).expect("load over the pins");
    assert_eq!(again.sizes().expect("sizes"), sizes);
    assert_eq!(backends_held(&again), room as usize + 1);
}
