//! Real rte_flow structures from typed rules, and the apply path (feature `dpdk`).
//!
//! [`CRule`] owns a `struct rte_flow_attr`, an `rte_flow_item` array and an
//! `rte_flow_action` array (each ending in `END`), plus the spec, mask and conf buffers
//! they point at. Item specs are written at their protocol header offsets: every item
//! struct pipec uses begins with the header as it is on the wire (`struct rte_ipv4_hdr` in
//! `rte_flow_item_ipv4`, and so on), so the byte offsets are the protocol's. The `MARK`
//! item's id is the one host-order field. [`CRule::round_trip`] copies a rule with
//! `rte_flow_conv(RTE_FLOW_CONV_OP_RULE)`, DPDK's own deep copy, and decodes the copy back
//! to a [`FlowRule`], which proves the layout and the sizes against DPDK's own tables.
//!
//! The apply path ([`Eal`], [`Port`]) validates and creates rules on an ethdev port;
//! a refusal (ENOSYS, ENOSPC, EINVAL, ...) becomes an [`Unsupported`] with
//! [`Reason::Device`], which puts the rule back on the eBPF pipeline.

#![allow(
    unsafe_code,
    reason = "this module is the FFI boundary to DPDK; every unsafe block states its contract"
)]

use crate::rule::{ones, Action, Attr, FieldValue, FlowRule, Item, Mac, Masked};
use crate::{EmittedRule, RteFlowArtifact};
use pipec::backend::{Reason, Unsupported};
use pipec_dpdk_sys::sys;
use std::ffi::{c_void, CStr, CString};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// A zeroed, 8-byte-aligned buffer of at least `len` bytes.
fn buffer(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8).max(1)]
}

fn bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: a u64 slice is valid as bytes of 8 times its length, with no padding.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8) }
}

/// Writes `width` bits of `v` big-endian at `offset` (bits of the last byte past `width`
/// stay, for fields such as the 24-bit VNI that fill whole bytes).
fn put(buf: &mut [u8], offset: usize, width: u32, v: u128) {
    let n = width.div_ceil(8) as usize;
    for i in 0..n {
        buf[offset + i] = (v >> (8 * (n - 1 - i))) as u8;
    }
}

fn get(buf: &[u8], offset: usize, width: u32) -> u128 {
    let n = width.div_ceil(8) as usize;
    (0..n).fold(0u128, |acc, i| acc << 8 | u128::from(buf[offset + i]))
}

/// One item field's place in the item struct: offset and width.
type Place = (usize, u32);

/// An item's C type, its struct size, and each field's place with its (spec, mask).
type ItemLayout = (
    sys::rte_flow_item_type,
    usize,
    Vec<(Place, Option<(u128, u128)>)>,
);

/// The layout of an item and the values of its fields.
fn item_fields(item: &Item) -> ItemLayout {
    fn mk<T: FieldValue>(m: &Option<Masked<T>>) -> Option<(u128, u128)> {
        m.as_ref().map(|m| (m.spec.to_bits(), m.mask.to_bits()))
    }
    use std::mem::size_of;
    match item {
        Item::Eth { dst, ether_type } => (
            sys::RTE_FLOW_ITEM_TYPE_ETH,
            size_of::<sys::rte_flow_item_eth>(),
            vec![((0, 48), mk(dst)), ((12, 16), mk(ether_type))],
        ),
        Item::Vlan { tci } => (
            sys::RTE_FLOW_ITEM_TYPE_VLAN,
            size_of::<sys::rte_flow_item_vlan>(),
            vec![((0, 16), mk(tci))],
        ),
        Item::Ipv4 {
            src,
            dst,
            tos,
            proto,
        } => (
            sys::RTE_FLOW_ITEM_TYPE_IPV4,
            size_of::<sys::rte_flow_item_ipv4>(),
            vec![
                ((12, 32), mk(src)),
                ((16, 32), mk(dst)),
                ((1, 8), mk(tos)),
                ((9, 8), mk(proto)),
            ],
        ),
        Item::Ipv6 { src, dst, proto } => (
            sys::RTE_FLOW_ITEM_TYPE_IPV6,
            size_of::<sys::rte_flow_item_ipv6>(),
            vec![
                ((8, 128), mk(src)),
                ((24, 128), mk(dst)),
                ((6, 8), mk(proto)),
            ],
        ),
        Item::Tcp { src, dst, flags } => (
            sys::RTE_FLOW_ITEM_TYPE_TCP,
            size_of::<sys::rte_flow_item_tcp>(),
            vec![((0, 16), mk(src)), ((2, 16), mk(dst)), ((13, 8), mk(flags))],
        ),
        Item::Udp { src, dst } => (
            sys::RTE_FLOW_ITEM_TYPE_UDP,
            size_of::<sys::rte_flow_item_udp>(),
            vec![((0, 16), mk(src)), ((2, 16), mk(dst))],
        ),
        Item::Sctp { src, dst } => (
            sys::RTE_FLOW_ITEM_TYPE_SCTP,
            size_of::<sys::rte_flow_item_sctp>(),
            vec![((0, 16), mk(src)), ((2, 16), mk(dst))],
        ),
        Item::Icmp { icmp_type, code } => (
            sys::RTE_FLOW_ITEM_TYPE_ICMP,
            size_of::<sys::rte_flow_item_icmp>(),
            vec![((0, 8), mk(icmp_type)), ((1, 8), mk(code))],
        ),
        Item::Esp { spi } => (
            sys::RTE_FLOW_ITEM_TYPE_ESP,
            size_of::<sys::rte_flow_item_esp>(),
            vec![((0, 32), mk(spi))],
        ),
        Item::Vxlan { vni } => (
            sys::RTE_FLOW_ITEM_TYPE_VXLAN,
            size_of::<sys::rte_flow_item_vxlan>(),
            vec![((4, 24), mk(vni))],
        ),
        Item::Mark { id } => (
            sys::RTE_FLOW_ITEM_TYPE_MARK,
            size_of::<sys::rte_flow_item_mark>(),
            // The mark id is host order; it is written separately.
            vec![((0, 32), mk(id))],
        ),
    }
}

/// A rule as DPDK's C structures, owning everything its pointers point at.
pub struct CRule {
    attr: sys::rte_flow_attr,
    items: Vec<sys::rte_flow_item>,
    actions: Vec<sys::rte_flow_action>,
    _buffers: Vec<Vec<u64>>,
    _queues: Vec<Vec<u16>>,
}

impl CRule {
    /// Builds the C structures of a typed rule.
    pub fn new(rule: &FlowRule) -> CRule {
        let mut attr = sys::rte_flow_attr {
            group: rule.attr.group,
            priority: rule.attr.priority,
            ..Default::default()
        };
        attr.set_ingress(u32::from(rule.attr.ingress));
        attr.set_egress(u32::from(rule.attr.egress));
        attr.set_transfer(u32::from(rule.attr.transfer));
        let mut buffers = Vec::new();
        let mut queues = Vec::new();
        let mut items = Vec::new();
        for item in &rule.pattern {
            let (ty, size, fields) = item_fields(item);
            let mut spec = buffer(size);
            let mut mask = buffer(size);
            let mut any = false;
            for ((offset, width), value) in fields {
                let Some((s, m)) = value else { continue };
                any = true;
                if matches!(item, Item::Mark { .. }) {
                    bytes_mut(&mut spec)[..4].copy_from_slice(&(s as u32).to_ne_bytes());
                    bytes_mut(&mut mask)[..4].copy_from_slice(&(m as u32).to_ne_bytes());
                } else {
                    put(bytes_mut(&mut spec), offset, width, s & ones(width));
                    put(bytes_mut(&mut mask), offset, width, m & ones(width));
                }
            }
            let mut c = sys::rte_flow_item {
                type_: ty,
                ..Default::default()
            };
            if any {
                c.spec = spec.as_ptr().cast::<c_void>();
                c.mask = mask.as_ptr().cast::<c_void>();
                buffers.push(spec);
                buffers.push(mask);
            }
            items.push(c);
        }
        items.push(sys::rte_flow_item {
            type_: sys::RTE_FLOW_ITEM_TYPE_END,
            ..Default::default()
        });
        let mut actions = Vec::new();
        for a in &rule.actions {
            let (ty, conf): (sys::rte_flow_action_type, Option<Vec<u64>>) = match a {
                Action::Drop => (sys::RTE_FLOW_ACTION_TYPE_DROP, None),
                Action::Flag => (sys::RTE_FLOW_ACTION_TYPE_FLAG, None),
                Action::Passthru => (sys::RTE_FLOW_ACTION_TYPE_PASSTHRU, None),
                Action::OfPopVlan => (sys::RTE_FLOW_ACTION_TYPE_OF_POP_VLAN, None),
                Action::Security => (sys::RTE_FLOW_ACTION_TYPE_SECURITY, None),
                Action::Count { id } => (
                    sys::RTE_FLOW_ACTION_TYPE_COUNT,
                    Some(conf_of(sys::rte_flow_action_count {
                        id: id.unwrap_or(0),
                    })),
                ),
                Action::Mark { id } => (
                    sys::RTE_FLOW_ACTION_TYPE_MARK,
                    Some(conf_of(sys::rte_flow_action_mark { id: *id })),
                ),
                Action::Queue { index } => (
                    sys::RTE_FLOW_ACTION_TYPE_QUEUE,
                    Some(conf_of(sys::rte_flow_action_queue { index: *index })),
                ),
                Action::Jump { group } => (
                    sys::RTE_FLOW_ACTION_TYPE_JUMP,
                    Some(conf_of(sys::rte_flow_action_jump { group: *group })),
                ),
                Action::OfPushVlan { ethertype } => (
                    sys::RTE_FLOW_ACTION_TYPE_OF_PUSH_VLAN,
                    Some(conf_of(sys::rte_flow_action_of_push_vlan {
                        ethertype: ethertype.to_be(),
                    })),
                ),
                Action::OfSetVlanVid { vid } => (
                    sys::RTE_FLOW_ACTION_TYPE_OF_SET_VLAN_VID,
                    Some(conf_of(sys::rte_flow_action_of_set_vlan_vid {
                        vlan_vid: vid.to_be(),
                    })),
                ),
                Action::Vf { id } => (
                    sys::RTE_FLOW_ACTION_TYPE_VF,
                    Some(conf_of(sys::rte_flow_action_vf {
                        id: u32::from(*id),
                        ..Default::default()
                    })),
                ),
                Action::PortId { id } => (
                    sys::RTE_FLOW_ACTION_TYPE_PORT_ID,
                    Some(conf_of(sys::rte_flow_action_port_id {
                        id: u32::from(*id),
                        ..Default::default()
                    })),
                ),
                Action::Rss { queues: q } => {
                    let q = q.clone();
                    let rss = sys::rte_flow_action_rss {
                        queue_num: q.len() as u32,
                        queue: q.as_ptr(),
                        ..Default::default()
                    };
                    queues.push(q);
                    (sys::RTE_FLOW_ACTION_TYPE_RSS, Some(conf_of(rss)))
                }
            };
            let mut c = sys::rte_flow_action {
                type_: ty,
                conf: std::ptr::null(),
            };
            if let Some(conf) = conf {
                c.conf = conf.as_ptr().cast::<c_void>();
                buffers.push(conf);
            }
            actions.push(c);
        }
        actions.push(sys::rte_flow_action {
            type_: sys::RTE_FLOW_ACTION_TYPE_END,
            conf: std::ptr::null(),
        });
        CRule {
            attr,
            items,
            actions,
            _buffers: buffers,
            _queues: queues,
        }
    }

    /// Copies the rule with `rte_flow_conv(RTE_FLOW_CONV_OP_RULE)` and decodes the copy.
    pub fn round_trip(&self, port: u16) -> Result<FlowRule, DeviceError> {
        let mut src = sys::rte_flow_conv_rule::default();
        src.__bindgen_anon_1.attr_ro = &self.attr;
        src.__bindgen_anon_2.pattern_ro = self.items.as_ptr();
        src.__bindgen_anon_3.actions_ro = self.actions.as_ptr();
        let mut error = sys::rte_flow_error::default();
        let src_ptr = std::ptr::addr_of!(src).cast::<c_void>();
        // SAFETY: `src` points at this rule's arrays, which end in END and whose specs,
        // masks and confs are live buffers of at least the size DPDK reads; with a null
        // destination and size 0, rte_flow_conv only computes the size.
        let need = unsafe {
            sys::rte_flow_conv(
                sys::RTE_FLOW_CONV_OP_RULE,
                std::ptr::null_mut(),
                0,
                src_ptr,
                &mut error,
            )
        };
        if need < 0 {
            return Err(DeviceError::from_flow_error(-need, &error));
        }
        let mut dst = buffer(need as usize);
        // SAFETY: `dst` has `need` bytes, 8-aligned as struct rte_flow_conv_rule requires.
        let got = unsafe {
            sys::rte_flow_conv(
                sys::RTE_FLOW_CONV_OP_RULE,
                dst.as_mut_ptr().cast::<c_void>(),
                need as usize,
                src_ptr,
                &mut error,
            )
        };
        if got < 0 {
            return Err(DeviceError::from_flow_error(-got, &error));
        }
        // SAFETY: rte_flow_conv wrote a struct rte_flow_conv_rule at the start of `dst`,
        // whose pointers point into `dst`, which lives until the end of this function.
        unsafe {
            let copy = &*dst.as_ptr().cast::<sys::rte_flow_conv_rule>();
            decode(
                port,
                &*copy.__bindgen_anon_1.attr_ro,
                copy.__bindgen_anon_2.pattern_ro,
                copy.__bindgen_anon_3.actions_ro,
            )
        }
    }
}

fn conf_of<T>(value: T) -> Vec<u64> {
    let mut buf = buffer(std::mem::size_of::<T>());
    // SAFETY: the buffer is at least size_of::<T>() bytes and 8-aligned, and T (a plain
    // C struct from the bindings) has no alignment above 8.
    unsafe { std::ptr::write(buf.as_mut_ptr().cast::<T>(), value) };
    buf
}

/// Reads `size` bytes at `p`, or zeros when `p` is null.
///
/// # Safety
/// `p` is null or points at `size` readable bytes.
unsafe fn read_bytes(p: *const c_void, size: usize) -> Vec<u8> {
    if p.is_null() {
        return vec![0; size];
    }
    // SAFETY: by the function's contract.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size).to_vec() }
}

/// Decodes C structures back into a typed rule.
///
/// # Safety
/// `items` and `actions` are END-terminated arrays whose specs, masks and confs are live
/// and of the sizes DPDK defines for their types.
unsafe fn decode(
    port: u16,
    attr: &sys::rte_flow_attr,
    items: *const sys::rte_flow_item,
    actions: *const sys::rte_flow_action,
) -> Result<FlowRule, DeviceError> {
    let mut pattern = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: the array is END-terminated and we stop at END.
        let item = unsafe { &*items.add(i) };
        i += 1;
        if item.type_ == sys::RTE_FLOW_ITEM_TYPE_END {
            break;
        }
        let template = template_item(item.type_).ok_or_else(|| DeviceError {
            errno: libc_errno::EINVAL,
            message: format!("unexpected item type {}", item.type_),
        })?;
        let (_, size, places) = item_fields(&template);
        // SAFETY: spec and mask are null or DPDK-sized for this item type.
        let (spec, mask) = unsafe { (read_bytes(item.spec, size), read_bytes(item.mask, size)) };
        let values: Vec<Option<(u128, u128)>> = places
            .iter()
            .map(|((offset, width), _)| {
                let (s, m) = if matches!(template, Item::Mark { .. }) {
                    let word = |b: &[u8]| u128::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    (word(&spec), word(&mask))
                } else {
                    (get(&spec, *offset, *width), get(&mask, *offset, *width))
                };
                (m & ones(*width) != 0).then_some((s, m))
            })
            .collect();
        pattern.push(rebuild_item(&template, &values));
    }
    let mut out_actions = Vec::new();
    let mut j = 0;
    loop {
        // SAFETY: the array is END-terminated and we stop at END.
        let a = unsafe { &*actions.add(j) };
        j += 1;
        if a.type_ == sys::RTE_FLOW_ACTION_TYPE_END {
            break;
        }
        // SAFETY: each conf is null or of the struct DPDK defines for the action type.
        let action = unsafe { decode_action(a) }?;
        out_actions.push(action);
    }
    Ok(FlowRule {
        port,
        attr: Attr {
            group: attr.group,
            priority: attr.priority,
            ingress: attr.ingress() != 0,
            egress: attr.egress() != 0,
            transfer: attr.transfer() != 0,
        },
        pattern,
        actions: out_actions,
    })
}

/// # Safety
/// `a.conf` is null or points at the conf struct of `a.type_`.
unsafe fn decode_action(a: &sys::rte_flow_action) -> Result<Action, DeviceError> {
    // SAFETY: by the function's contract, for each typed read below.
    unsafe fn conf<T: Copy + Default>(a: &sys::rte_flow_action) -> T {
        if a.conf.is_null() {
            T::default()
        } else {
            // SAFETY: by decode_action's contract.
            unsafe { *a.conf.cast::<T>() }
        }
    }
    // SAFETY: every `conf::<T>` reads the struct that matches the action type.
    unsafe {
        Ok(match a.type_ {
            sys::RTE_FLOW_ACTION_TYPE_DROP => Action::Drop,
            sys::RTE_FLOW_ACTION_TYPE_FLAG => Action::Flag,
            sys::RTE_FLOW_ACTION_TYPE_PASSTHRU => Action::Passthru,
            sys::RTE_FLOW_ACTION_TYPE_OF_POP_VLAN => Action::OfPopVlan,
            sys::RTE_FLOW_ACTION_TYPE_SECURITY => Action::Security,
            sys::RTE_FLOW_ACTION_TYPE_COUNT => {
                let id = conf::<sys::rte_flow_action_count>(a).id;
                Action::Count {
                    id: (id != 0).then_some(id),
                }
            }
            sys::RTE_FLOW_ACTION_TYPE_MARK => Action::Mark {
                id: conf::<sys::rte_flow_action_mark>(a).id,
            },
            sys::RTE_FLOW_ACTION_TYPE_QUEUE => Action::Queue {
                index: conf::<sys::rte_flow_action_queue>(a).index,
            },
            sys::RTE_FLOW_ACTION_TYPE_JUMP => Action::Jump {
                group: conf::<sys::rte_flow_action_jump>(a).group,
            },
            sys::RTE_FLOW_ACTION_TYPE_OF_PUSH_VLAN => Action::OfPushVlan {
                ethertype: u16::from_be(conf::<sys::rte_flow_action_of_push_vlan>(a).ethertype),
            },
            sys::RTE_FLOW_ACTION_TYPE_OF_SET_VLAN_VID => Action::OfSetVlanVid {
                vid: u16::from_be(conf::<sys::rte_flow_action_of_set_vlan_vid>(a).vlan_vid),
            },
            sys::RTE_FLOW_ACTION_TYPE_VF => Action::Vf {
                id: conf::<sys::rte_flow_action_vf>(a).id as u16,
            },
            sys::RTE_FLOW_ACTION_TYPE_PORT_ID => Action::PortId {
                id: conf::<sys::rte_flow_action_port_id>(a).id as u16,
            },
            sys::RTE_FLOW_ACTION_TYPE_RSS => {
                let rss = &*a.conf.cast::<sys::rte_flow_action_rss>();
                let queues = if rss.queue.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(rss.queue, rss.queue_num as usize).to_vec()
                };
                Action::Rss { queues }
            }
            other => {
                return Err(DeviceError {
                    errno: libc_errno::EINVAL,
                    message: format!("unexpected action type {other}"),
                })
            }
        })
    }
}

fn template_item(ty: sys::rte_flow_item_type) -> Option<Item> {
    Some(match ty {
        sys::RTE_FLOW_ITEM_TYPE_ETH => Item::Eth {
            dst: None,
            ether_type: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_VLAN => Item::Vlan { tci: None },
        sys::RTE_FLOW_ITEM_TYPE_IPV4 => Item::Ipv4 {
            src: None,
            dst: None,
            tos: None,
            proto: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_IPV6 => Item::Ipv6 {
            src: None,
            dst: None,
            proto: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_TCP => Item::Tcp {
            src: None,
            dst: None,
            flags: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_UDP => Item::Udp {
            src: None,
            dst: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_SCTP => Item::Sctp {
            src: None,
            dst: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_ICMP => Item::Icmp {
            icmp_type: None,
            code: None,
        },
        sys::RTE_FLOW_ITEM_TYPE_ESP => Item::Esp { spi: None },
        sys::RTE_FLOW_ITEM_TYPE_VXLAN => Item::Vxlan { vni: None },
        sys::RTE_FLOW_ITEM_TYPE_MARK => Item::Mark { id: None },
        _ => return None,
    })
}

fn rebuild_item(template: &Item, v: &[Option<(u128, u128)>]) -> Item {
    fn m<T: FieldValue>(v: Option<(u128, u128)>) -> Option<Masked<T>> {
        v.map(|(s, m)| Masked {
            spec: T::from_bits(s),
            mask: T::from_bits(m),
        })
    }
    match template {
        Item::Eth { .. } => Item::Eth {
            dst: m::<Mac>(v[0]),
            ether_type: m(v[1]),
        },
        Item::Vlan { .. } => Item::Vlan { tci: m(v[0]) },
        Item::Ipv4 { .. } => Item::Ipv4 {
            src: m::<Ipv4Addr>(v[0]),
            dst: m::<Ipv4Addr>(v[1]),
            tos: m(v[2]),
            proto: m(v[3]),
        },
        Item::Ipv6 { .. } => Item::Ipv6 {
            src: m::<Ipv6Addr>(v[0]),
            dst: m::<Ipv6Addr>(v[1]),
            proto: m(v[2]),
        },
        Item::Tcp { .. } => Item::Tcp {
            src: m(v[0]),
            dst: m(v[1]),
            flags: m(v[2]),
        },
        Item::Udp { .. } => Item::Udp {
            src: m(v[0]),
            dst: m(v[1]),
        },
        Item::Sctp { .. } => Item::Sctp {
            src: m(v[0]),
            dst: m(v[1]),
        },
        Item::Icmp { .. } => Item::Icmp {
            icmp_type: m(v[0]),
            code: m(v[1]),
        },
        Item::Esp { .. } => Item::Esp { spi: m(v[0]) },
        Item::Vxlan { .. } => Item::Vxlan { vni: m(v[0]) },
        Item::Mark { .. } => Item::Mark { id: m(v[0]) },
    }
}

/// The errno values the apply path names.
mod libc_errno {
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ENOSPC: i32 = 28;
    pub(super) const ENOSYS: i32 = 38;
    pub(super) const ENOTSUP: i32 = 95;
    pub(super) const EEXIST: i32 = 17;
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const EBUSY: i32 = 16;
    pub(super) const EIO: i32 = 5;
    pub(super) const ENODEV: i32 = 19;
}

/// A refusal from DPDK: errno and the PMD's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", errno_name(*errno), errno)]
pub struct DeviceError {
    /// The (positive) errno.
    pub errno: i32,
    /// The PMD's message, or DPDK's description of the errno.
    pub message: String,
}

/// The symbolic name of an errno value.
pub fn errno_name(errno: i32) -> &'static str {
    use libc_errno::*;
    match errno {
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        ENOSYS => "ENOSYS",
        ENOTSUP => "ENOTSUP",
        EEXIST => "EEXIST",
        ENOMEM => "ENOMEM",
        EBUSY => "EBUSY",
        EIO => "EIO",
        ENODEV => "ENODEV",
        _ => "E?",
    }
}

impl DeviceError {
    fn from_flow_error(errno: i32, error: &sys::rte_flow_error) -> DeviceError {
        let message = if error.message.is_null() {
            // SAFETY: rte_strerror returns a static or thread-local NUL-terminated string.
            unsafe { CStr::from_ptr(sys::rte_strerror(errno)) }
                .to_string_lossy()
                .into_owned()
        } else {
            // SAFETY: the PMD's message is a NUL-terminated string that outlives the call.
            unsafe { CStr::from_ptr(error.message) }
                .to_string_lossy()
                .into_owned()
        };
        DeviceError { errno, message }
    }

    /// The placement answer: the target refused, so the rule goes back to eBPF.
    pub fn to_unsupported(&self, target: &str) -> Unsupported {
        Unsupported::new(
            target,
            Reason::Device {
                errno: errno_name(self.errno).to_string(),
                message: self.message.clone(),
            },
        )
    }
}

/// The DPDK environment (EAL), initialised once per process.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

static EAL: OnceLock<Result<Eal, DeviceError>> = OnceLock::new();

impl Eal {
    /// Initialises EAL with `args` (`argv[0]` first) the first time; later calls return
    /// the first outcome, whatever their arguments (EAL cannot start twice).
    pub fn init(args: &[&str]) -> Result<&'static Eal, DeviceError> {
        EAL.get_or_init(|| {
            // EAL keeps pointers into argv, so the strings live for the whole process.
            let owned: Vec<CString> = args
                .iter()
                .map(|a| CString::new(*a).unwrap_or_default())
                .collect();
            let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
            let argv: Vec<*mut std::ffi::c_char> =
                owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
            let argv: &'static mut [*mut std::ffi::c_char] = Box::leak(argv.into_boxed_slice());
            // SAFETY: argv holds argc valid NUL-terminated strings that are never freed.
            let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
            if rc < 0 {
                // SAFETY: reads this thread's rte_errno, set by rte_eal_init.
                let errno = unsafe { sys::pipec_rte_errno() };
                return Err(DeviceError {
                    errno,
                    message: "rte_eal_init failed".to_string(),
                });
            }
            Ok(Eal { _private: () })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// The ethdev port with this device name (`net_null0`).
    pub fn port(&self, name: &str) -> Result<Port, DeviceError> {
        let c = CString::new(name).unwrap_or_default();
        let mut id = 0u16;
        // SAFETY: `c` is a valid C string and `id` a valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DeviceError {
                errno: -rc,
                message: format!("no ethdev port named {name}"),
            });
        }
        Ok(Port { id })
    }
}

/// An ethdev port that rules are applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// The port id.
    pub id: u16,
}

/// A created flow rule; destroy it with [`Port::destroy`].
#[derive(Debug)]
pub struct FlowHandle {
    raw: *mut sys::rte_flow,
}

// SAFETY: an rte_flow handle is an opaque pointer that DPDK lets any thread destroy.
unsafe impl Send for FlowHandle {}

impl Port {
    /// `rte_flow_validate`.
    pub fn validate(&self, rule: &CRule) -> Result<(), DeviceError> {
        let mut error = sys::rte_flow_error::default();
        // SAFETY: the arrays are END-terminated and their buffers live in `rule`.
        let rc = unsafe {
            sys::rte_flow_validate(
                self.id,
                &rule.attr,
                rule.items.as_ptr(),
                rule.actions.as_ptr(),
                &mut error,
            )
        };
        if rc < 0 {
            return Err(DeviceError::from_flow_error(-rc, &error));
        }
        Ok(())
    }

    /// `rte_flow_create`.
    pub fn create(&self, rule: &CRule) -> Result<FlowHandle, DeviceError> {
        let mut error = sys::rte_flow_error::default();
        // SAFETY: as in `validate`.
        let raw = unsafe {
            sys::rte_flow_create(
                self.id,
                &rule.attr,
                rule.items.as_ptr(),
                rule.actions.as_ptr(),
                &mut error,
            )
        };
        if raw.is_null() {
            // SAFETY: reads this thread's rte_errno, set by rte_flow_create.
            let errno = unsafe { sys::pipec_rte_errno() };
            return Err(DeviceError::from_flow_error(errno, &error));
        }
        Ok(FlowHandle { raw })
    }

    /// `rte_flow_destroy`. A refused destroy gives the handle back with the error: the
    /// port still holds the rule, and its owner keeps the handle to try again.
    pub fn destroy(&self, flow: FlowHandle) -> Result<(), (DeviceError, FlowHandle)> {
        let mut error = sys::rte_flow_error::default();
        // SAFETY: the handle came from rte_flow_create on this port and is destroyed once:
        // on success it is consumed here, and on failure it is handed back, still live.
        let rc = unsafe { sys::rte_flow_destroy(self.id, flow.raw, &mut error) };
        if rc < 0 {
            return Err((DeviceError::from_flow_error(-rc, &error), flow));
        }
        Ok(())
    }
}

/// What applying an artifact to a port did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Rules now in hardware: plan rule id and handle.
    pub installed: Vec<(u32, FlowHandle)>,
    /// Rules the device refused, placed back on the eBPF pipeline with the reason.
    pub back_to_ebpf: Vec<(u32, Unsupported)>,
}

/// Validates and creates every rule of `artifact` on `port`; each refusal (ENOSYS,
/// ENOSPC, EINVAL, ...) becomes a placement back to eBPF with the device's reason.
pub fn apply(port: Port, artifact: &RteFlowArtifact) -> ApplyReport {
    let mut report = ApplyReport::default();
    for EmittedRule { id, rule, .. } in &artifact.rules {
        let c = CRule::new(rule);
        match port.validate(&c).and_then(|()| port.create(&c)) {
            Ok(h) => report.installed.push((*id, h)),
            Err(e) => report
                .back_to_ebpf
                .push((*id, e.to_unsupported(&artifact.target))),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::sys;
    use std::mem::offset_of;

    /// The byte offsets `item_fields` writes at are the header offsets of DPDK's structs.
    #[test]
    fn field_offsets_match_dpdk_headers() {
        assert_eq!(offset_of!(sys::rte_ether_hdr, dst_addr), 0);
        assert_eq!(offset_of!(sys::rte_ether_hdr, ether_type), 12);
        assert_eq!(offset_of!(sys::rte_vlan_hdr, vlan_tci), 0);
        assert_eq!(offset_of!(sys::rte_ipv4_hdr, type_of_service), 1);
        assert_eq!(offset_of!(sys::rte_ipv4_hdr, next_proto_id), 9);
        assert_eq!(offset_of!(sys::rte_ipv4_hdr, src_addr), 12);
        assert_eq!(offset_of!(sys::rte_ipv4_hdr, dst_addr), 16);
        assert_eq!(offset_of!(sys::rte_ipv6_hdr, proto), 6);
        assert_eq!(offset_of!(sys::rte_ipv6_hdr, src_addr), 8);
        assert_eq!(offset_of!(sys::rte_ipv6_hdr, dst_addr), 24);
        assert_eq!(offset_of!(sys::rte_tcp_hdr, dst_port), 2);
        assert_eq!(offset_of!(sys::rte_tcp_hdr, tcp_flags), 13);
        assert_eq!(offset_of!(sys::rte_sctp_hdr, dst_port), 2);
        assert_eq!(offset_of!(sys::rte_icmp_hdr, icmp_code), 1);
        assert_eq!(offset_of!(sys::rte_esp_hdr, spi), 0);
        // The item structs start with their header.
        assert_eq!(offset_of!(sys::rte_flow_item_ipv4, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_ipv6, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_tcp, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_udp, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_sctp, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_icmp, hdr), 0);
        assert_eq!(offset_of!(sys::rte_flow_item_esp, hdr), 0);
        // VXLAN: flags (1 byte), 3 reserved bytes, then the 24-bit VNI at offset 4.
        assert_eq!(std::mem::size_of::<sys::rte_vxlan_hdr>(), 8);
    }
}
