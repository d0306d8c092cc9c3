//! Build script: with the `dpdk` feature, finds the system DPDK with pkg-config, generates
//! bindings with bindgen and compiles the small C shim; without it, does nothing, so a
//! machine without DPDK builds the workspace.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;

    pub(super) fn build() {
        println!("cargo:rerun-if-changed=wrapper.h");
        println!("cargo:rerun-if-changed=shim.c");
        let lib = pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!("the `dpdk` feature needs the system DPDK (Debian: libdpdk-dev): {e}")
            });
        // pkg-config's cflags carry `-include rte_config.h` and `-march`, which the headers need.
        let cflags = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let args: Vec<String> = cflags.split_whitespace().map(str::to_string).collect();
        let mut shim = cc::Build::new();
        shim.file("shim.c");
        for a in &args {
            shim.flag(a);
        }
        for p in &lib.include_paths {
            shim.include(p);
        }
        shim.compile("pipec_dpdk_shim");
        let bindings = bindgen::Builder::default()
            .header("wrapper.h")
            .clang_args(&args)
            .allowlist_function("rte_flow_(validate|create|destroy|flush|conv)")
            .allowlist_function("rte_eal_(init|cleanup)")
            .allowlist_function("rte_eth_dev_(count_avail|get_port_by_name|is_valid_port)")
            .allowlist_function("rte_strerror")
            .allowlist_function("pipec_rte_errno")
            .allowlist_type(
                "rte_flow_(attr|item|action|error|conv_rule|conv_op|item_type|action_type)",
            )
            .allowlist_type("rte_flow_item_(eth|vlan|ipv4|ipv6|tcp|udp|sctp|icmp|esp|vxlan|mark)")
            .allowlist_type(
                "rte_flow_action_(count|mark|queue|rss|jump|of_push_vlan|of_set_vlan_vid|vf|port_id)",
            )
            .allowlist_var("RTE_FLOW_.*")
            // targets/cpt: the IPsec session configuration and its AEAD transform.
            .allowlist_type(
                "rte_security_(session_conf|ipsec_xform|ipsec_sa_options|ipsec_tunnel_param)",
            )
            .allowlist_type("rte_crypto_(sym_xform|aead_xform)")
            .derive_debug(false)
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .prepend_enum_name(false)
            .generate()
            .expect("bindgen could not bind the DPDK headers");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
        bindings
            .write_to_file(out.join("bindings.rs"))
            .expect("writing bindings.rs");
    }
}
