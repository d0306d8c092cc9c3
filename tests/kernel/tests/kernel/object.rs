//! The committed objects are what `bpf/build.sh` makes of the sources, and every map
//! layout of `pipec-ebpf-common` matches the object's BTF member by member.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use object::{Object, ObjectSection};
use pipec_ebpf::btf;
use pipec_ebpf_common as c;

fn sections(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let file = object::File::parse(bytes).expect("parse ELF");
    file.sections()
        .map(|s| {
            (
                s.name().unwrap_or("?").to_string(),
                s.data().unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

/// Rebuilds both objects with clang and compares every section with the committed ones.
/// A machine without clang fails here unless `PIPEC_NO_CLANG=1` says so on purpose.
#[test]
fn committed_objects_are_current() {
    let has_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_clang {
        assert!(
            std::env::var("PIPEC_NO_CLANG").as_deref() == Ok("1"),
            "clang is needed to check that bpf/*.o are current (apt-get install clang llvm \
             libbpf-dev linux-libc-dev); set PIPEC_NO_CLANG=1 to skip this check on purpose"
        );
        eprintln!("PIPEC_NO_CLANG=1: not checking that the committed objects are current");
        return;
    }
    let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../targets/ebpf/bpf");
    let out = std::env::temp_dir().join(format!("pipec-bpf-build-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let st = Command::new("sh")
        .arg(bpf.join("build.sh"))
        .arg(&out)
        .status()
        .expect("run build.sh");
    assert!(st.success(), "bpf/build.sh failed");
    for obj in ["pipec.bpf.o", "bench.bpf.o"] {
        let fresh = sections(&std::fs::read(out.join(obj)).unwrap());
        let committed = sections(&std::fs::read(bpf.join(obj)).unwrap());
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&fresh),
            names(&committed),
            "{obj}: sections differ; run targets/ebpf/bpf/build.sh"
        );
        for (name, data) in &fresh {
            assert!(
                committed[name] == *data,
                "{obj}: section {name} is stale; run targets/ebpf/bpf/build.sh and commit the object"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! layout {
    ($btf:expr, $cname:literal, $t:ty, [$($f:ident),* $(,)?]) => {{
        let s = $btf.get($cname).unwrap_or_else(|| panic!("struct {} not in BTF", $cname));
        assert_eq!(s.size as usize, size_of::<$t>(), "size of struct {}", $cname);
        let rust: Vec<(String, u32, u32)> = vec![$(
            (stringify!($f).to_string(), offset_of!($t, $f) as u32, field_size(|x: &$t| &x.$f) as u32),
        )*];
        assert_eq!(s.members, rust, "members (name, offset, size) of struct {}", $cname);
    }};
}

#[test]
fn layouts_match_btf() {
    let btf = btf::structs(pipec_ebpf::datapath::OBJECT).expect("parse BTF");
    layout!(btf, "endpoint_key", c::EndpointKey, [addr, family, pad]);
    layout!(
        btf,
        "endpoint_value",
        c::EndpointValue,
        [endpoint_id, ifindex, identity, flags]
    );
    layout!(
        btf,
        "ipcache_key",
        c::IpcacheKey,
        [prefixlen, family, pad, addr]
    );
    layout!(
        btf,
        "ipcache_host_key",
        c::IpcacheHostKey,
        [family, pad, addr]
    );
    layout!(btf, "ipcache_value", c::IpcacheValue, [identity, flags]);
    layout!(btf, "ipsec_value", c::IpsecValue, [peer, flags]);
    layout!(
        btf,
        "policy_key",
        c::PolicyKey,
        [prefixlen, endpoint_id, identity, direction, protocol, dport]
    );
    layout!(
        btf,
        "policy_value",
        c::PolicyValue,
        [cookie, action, pad, proxy_port, pad2]
    );
    layout!(
        btf,
        "service_key",
        c::ServiceKey,
        [addr, family, protocol, port]
    );
    layout!(
        btf,
        "service_value",
        c::ServiceValue,
        [service_id, maglev_size, flags, affinity_timeout]
    );
    layout!(btf, "maglev_key", c::MaglevKey, [service_id, slot]);
    layout!(
        btf,
        "backend_value",
        c::BackendValue,
        [addr, family, flags, port]
    );
    layout!(
        btf,
        "affinity_key",
        c::AffinityKey,
        [service_id, family, pad, addr]
    );
    layout!(
        btf,
        "affinity_value",
        c::AffinityValue,
        [last_used, backend_id, pad]
    );
    layout!(
        btf,
        "revnat_value",
        c::RevnatValue,
        [addr, family, pad, port]
    );
    layout!(
        btf,
        "ct_key",
        c::CtKey,
        [saddr, daddr, sport, dport, protocol, family, direction, pad]
    );
    layout!(
        btf,
        "ct_value",
        c::CtValue,
        [
            created,
            expires,
            packets,
            bytes,
            cookie,
            rev_nat,
            backend_id,
            remote_identity,
            proxy_port,
            state,
            flags
        ]
    );
    layout!(btf, "counter_value", c::CounterValue, [packets, bytes]);
    layout!(
        btf,
        "flow_event",
        c::FlowEvent,
        [
            timestamp,
            cookie,
            saddr,
            daddr,
            sport,
            dport,
            protocol,
            family,
            direction,
            verdict,
            endpoint_id,
            remote_identity,
            reason,
            pad
        ]
    );
    layout!(
        btf,
        "config",
        c::Config,
        [
            ct_tcp_syn,
            ct_tcp_established,
            ct_tcp_closing,
            ct_udp,
            ct_sctp,
            ct_icmp,
            ct_other,
            flags
        ]
    );
}
