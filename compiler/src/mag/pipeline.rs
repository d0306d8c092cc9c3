//! The contract of the default node pipeline: the names of its tables, named once.
//!
//! Lowering builds these tables ([`crate::lower::skeleton`]); the partitioner and the
//! targets' codegens read them. They meet only through the names here, and
//! [`crate::mag::validate`] resolves the names into table ids ([`Pipeline`], in
//! [`MagInfo::pipeline`](super::MagInfo::pipeline)), so a consumer asks for
//! `info.pipeline.ingress_policy` instead of spelling a string that could drift.
//!
//! Keys and actions of each table are documented on the skeleton; what a codegen must not
//! invent (such as a Service's affinity timeout) is carried in the entries' action
//! arguments, never in a codegen constant.

use super::{Mag, TableId};

/// Table names of the default node pipeline, in pipeline order.
pub mod table {
    /// Which port the packet came in on: the local endpoint or the wire.
    pub const CLASSIFY: &str = "classify";
    /// A pod may send only from its own addresses.
    pub const ANTI_SPOOF: &str = "anti_spoof";
    /// Service frontends: choose a backend (Maglev, ClientIP affinity).
    pub const SERVICE_LB: &str = "service_lb";
    /// The chosen backend: DNAT.
    pub const LB_BACKEND: &str = "lb_backend";
    /// Connection tracking, with reverse NAT of replies.
    pub const CONNTRACK: &str = "conntrack";
    /// The source address's identity.
    pub const SRC_IPCACHE: &str = "src_ipcache";
    /// The destination address's identity.
    pub const DST_IPCACHE: &str = "dst_ipcache";
    /// The sending pod's resolved egress policy.
    pub const EGRESS_POLICY: &str = "egress_policy";
    /// Where the packet goes: a local endpoint, another node, the host or the wire.
    pub const ROUTE: &str = "route";
    /// The receiving pod's resolved ingress policy.
    pub const INGRESS_POLICY: &str = "ingress_policy";

    /// Every table of the default pipeline.
    pub const ALL: [&str; 10] = [
        CLASSIFY,
        ANTI_SPOOF,
        SERVICE_LB,
        LB_BACKEND,
        CONNTRACK,
        SRC_IPCACHE,
        DST_IPCACHE,
        EGRESS_POLICY,
        ROUTE,
        INGRESS_POLICY,
    ];
}

/// The default pipeline's tables in one graph (`None` for a table the graph lacks: a graph
/// read from text may be any graph).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each field is the table of the same name in `table`"
)]
pub struct Pipeline {
    pub classify: Option<TableId>,
    pub anti_spoof: Option<TableId>,
    pub service_lb: Option<TableId>,
    pub lb_backend: Option<TableId>,
    pub conntrack: Option<TableId>,
    pub src_ipcache: Option<TableId>,
    pub dst_ipcache: Option<TableId>,
    pub egress_policy: Option<TableId>,
    pub route: Option<TableId>,
    pub ingress_policy: Option<TableId>,
}

impl Pipeline {
    /// Finds the default pipeline's tables in `mag` by name.
    pub fn resolve(mag: &Mag) -> Pipeline {
        let find = |name| mag.table_by_name(name);
        Pipeline {
            classify: find(table::CLASSIFY),
            anti_spoof: find(table::ANTI_SPOOF),
            service_lb: find(table::SERVICE_LB),
            lb_backend: find(table::LB_BACKEND),
            conntrack: find(table::CONNTRACK),
            src_ipcache: find(table::SRC_IPCACHE),
            dst_ipcache: find(table::DST_IPCACHE),
            egress_policy: find(table::EGRESS_POLICY),
            route: find(table::ROUTE),
            ingress_policy: find(table::INGRESS_POLICY),
        }
    }

    /// True when every table of the default pipeline is there.
    pub fn is_complete(&self) -> bool {
        [
            self.classify,
            self.anti_spoof,
            self.service_lb,
            self.lb_backend,
            self.conntrack,
            self.src_ipcache,
            self.dst_ipcache,
            self.egress_policy,
            self.route,
            self.ingress_policy,
        ]
        .iter()
        .all(Option::is_some)
    }
}
