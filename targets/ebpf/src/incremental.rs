//! Compiling a node's maps again after an event: what the event's changed tables do not
//! reach is taken from the last artifact instead of built again.
//!
//! A session applies an event as entries added to and removed from a graph whose tables,
//! keys and actions stay the same ([`Diff`]). Each map is built from a few tables (the
//! table in [`codegen`](crate::codegen)'s module documentation), so:
//!
//! - the ipcache, the endpoints and the service maps are the last artifact's when none of
//!   their tables changed (the endpoints also read the ipcache, for each address's
//!   identity);
//! - the policy entries of an endpoint depend on its rows, the rows for every endpoint,
//!   the table's default and the node's identities. While the identities stay the same,
//!   only the endpoints a changed row names (all of them, when it names every endpoint)
//!   and the endpoints that came are computed, and the entries of those and of the
//!   endpoints that went are replaced in the last artifact's map. A new identity writes
//!   entries for every endpoint, so the whole map is built again (its endpoints' entries
//!   still come from the [`PolicyCache`]).
//!
//! The result equals [`mag_to_ebpf_cached`](crate::codegen::mag_to_ebpf_cached) of the new
//! graph: a Service's endpoint event costs its service maps, not the node's policy.

use std::collections::{BTreeMap, BTreeSet};

use pipec::backend::Unsupported;
use pipec::lower::incremental::Diff;
use pipec::mag::pipeline::table as pt;
use pipec::mag::{Entry, Field, Mag, MagInfo, TableId};

use crate::artifact::{EbpfArtifact, PolicyDecision, PolicyDirection, PolicyMatch};
use crate::codegen::{
    check_policy_rows, cookie_names, endpoint_ids, endpoints, exact, ipcache, mag_to_ebpf_cached,
    policy_entries, policy_positions, services, table, universe, Cookies, PolicyCache, Rows,
    POLICY_TABLES,
};

/// [`mag_to_ebpf_cached`] of `mag`, a graph that differs from the one `before` was
/// compiled from by the entries of `diff` only. Endpoint interfaces are left 0, as a
/// fresh compile leaves them. A `diff` of a full lowering compiles from scratch.
pub fn mag_to_ebpf_after(
    mag: &Mag,
    info: &MagInfo,
    cache: &mut PolicyCache,
    before: &EbpfArtifact,
    diff: &Diff,
) -> Result<EbpfArtifact, Unsupported> {
    if diff.full {
        return mag_to_ebpf_cached(mag, info, cache);
    }
    let changed = Changed::of(mag, diff);
    let mut a = EbpfArtifact::default();
    // Whether the ipcache came out otherwise (a copy is the same).
    let ipcache_moved = if changed.any(&[pt::SRC_IPCACHE, pt::DST_IPCACHE]) {
        ipcache(mag, &mut a)?;
        a.ipcache != before.ipcache
    } else {
        a.ipcache = before.ipcache.clone();
        false
    };
    if changed.any(&[pt::ANTI_SPOOF, pt::ROUTE]) || ipcache_moved {
        endpoints(mag, &mut a)?;
    } else {
        a.endpoints = before.endpoints.clone();
        for e in a.endpoints.values_mut() {
            e.ifindex = 0;
        }
    }
    if changed.any(&[pt::SERVICE_LB, pt::LB_BACKEND]) {
        services(mag, &mut a)?;
    } else {
        a.services = before.services.clone();
        a.wire_services = before.wire_services.clone();
        a.backends = before.backends.clone();
    }
    let identities = universe(&a);
    let eps = endpoint_ids(&a);
    let mut cookies = Cookies::new(mag);
    cache.begin();
    if identities == universe(before) {
        a.policy = before.policy.clone();
        a.cookies = patch_policy(
            mag,
            (&changed, &eps, &identities, cache, &mut cookies),
            before,
            &mut a.policy,
        )?;
    } else {
        let rows = policy_entries(
            mag,
            ([&eps, &eps], Rows::All),
            &identities,
            cache,
            &mut cookies,
        )?;
        a.policy = rows.into_iter().collect();
        a.cookies = cookie_names(mag, &cookies, &a.policy, &BTreeMap::new());
    }
    cache.end();
    Ok(a)
}

/// Takes `policy`, a copy of the last artifact's, to the new graph's, when the identities
/// (`identities`, the last artifact's and the new graph's) are the same: the entries of the endpoints that went are removed, and those of the
/// endpoints a changed row names or that came are computed again. Returns the cookies'
/// names. The changed rows are checked as a compile checks them; the others were checked
/// when the last artifact was compiled.
fn patch_policy(
    mag: &Mag,
    (changed, eps, identities, cache, cookies): (
        &Changed<'_>,
        &[u32],
        &BTreeSet<u32>,
        &mut PolicyCache,
        &mut Cookies,
    ),
    before: &EbpfArtifact,
    policy: &mut BTreeMap<PolicyMatch, PolicyDecision>,
) -> Result<BTreeMap<u64, String>, Unsupported> {
    let had: BTreeSet<u32> = endpoint_ids(before).into_iter().collect();
    let todo = POLICY_TABLES.map(|t| changed.endpoints(mag, t, eps, &had));
    let gone: Vec<u32> = had
        .iter()
        .copied()
        .filter(|ep| eps.binary_search(ep).is_err())
        .collect();
    for ((_, dir, _), todo) in POLICY_TABLES.iter().zip(&todo) {
        for ep in eps.iter().filter(|ep| todo.binary_search(ep).is_err()) {
            cache.keep((*dir, *ep));
        }
    }
    let tables = POLICY_TABLES.map(|(name, _, _)| name);
    if !changed.any(&tables) && todo.iter().all(Vec::is_empty) && gone.is_empty() {
        return Ok(before.cookies.clone());
    }
    for t in POLICY_TABLES {
        check_policy_rows(mag, t, changed.added(mag, t.0), cookies)?;
    }
    let which = ([todo[0].as_slice(), todo[1].as_slice()], Rows::OfEndpoints);
    let rows = policy_entries(mag, which, identities, cache, cookies)?;
    for ((_, dir, _), todo) in POLICY_TABLES.iter().zip(&todo) {
        for ep in todo.iter().chain(&gone) {
            remove_endpoint(policy, *dir, *ep);
        }
    }
    policy.extend(rows);
    Ok(cookie_names(mag, cookies, policy, &before.cookies))
}

/// The tables an event changed, and their added and removed entries.
struct Changed<'d> {
    names: BTreeSet<String>,
    /// Added and removed entries, by table.
    entries: BTreeMap<TableId, Vec<&'d Entry>>,
    diff: &'d Diff,
}

impl<'d> Changed<'d> {
    fn of(mag: &Mag, diff: &'d Diff) -> Changed<'d> {
        let mut entries: BTreeMap<TableId, Vec<&Entry>> = BTreeMap::new();
        for (t, e) in diff.added.iter().chain(&diff.removed) {
            entries.entry(*t).or_default().push(e);
        }
        let names = entries
            .keys()
            .filter_map(|t| mag.table(*t))
            .map(|t| t.name.clone())
            .collect();
        Changed {
            names,
            entries,
            diff,
        }
    }

    /// The entries added to table `name`.
    fn added(&self, mag: &Mag, name: &str) -> impl Iterator<Item = &'d Entry> {
        let id = mag.table_by_name(name);
        self.diff
            .added
            .iter()
            .filter(move |(t, _)| Some(*t) == id)
            .map(|(_, e)| e)
    }

    /// Whether any of the tables `names` changed.
    fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.names.contains(*n))
    }

    /// The endpoints of `eps` whose entries of policy `table` must be computed again: those
    /// a changed row names, and those the last artifact did not have (`had`); every one
    /// when a changed row names every endpoint, or its endpoint cannot be read (the rows
    /// are read again anyway, and the error is reported there). Ascending.
    fn endpoints(
        &self,
        mag: &Mag,
        (name, _, remote): crate::codegen::PolicyTable<'_>,
        eps: &[u32],
        had: &BTreeSet<u32>,
    ) -> Vec<u32> {
        // The column of the endpoint, and the table's changed rows.
        let rows = table(mag, name).ok().and_then(|t| {
            let pos = policy_positions(t, remote).ok()?;
            let id = mag.table_by_name(name)?;
            Some((pos[1], self.entries.get(&id).map_or(&[][..], Vec::as_slice)))
        });
        let Some((at, changed)) = rows else {
            return eps.to_vec();
        };
        let mut named: BTreeSet<u32> = BTreeSet::new();
        for e in changed {
            match exact(&e.matches[at], Field::Endpoint, &name) {
                Ok(Some(ep)) => {
                    named.insert(ep as u32);
                }
                Ok(None) | Err(_) => return eps.to_vec(),
            }
        }
        eps.iter()
            .copied()
            .filter(|ep| named.contains(ep) || !had.contains(ep))
            .collect()
    }
}

/// Removes every policy entry of endpoint `ep` in direction `dir`: one range of the map,
/// which is ordered by endpoint, then direction.
fn remove_endpoint(
    policy: &mut BTreeMap<PolicyMatch, PolicyDecision>,
    dir: PolicyDirection,
    ep: u32,
) {
    let first = PolicyMatch {
        endpoint: ep,
        direction: dir,
        identity: 0,
        protocol: None,
        port: None,
    };
    let keys: Vec<PolicyMatch> = policy
        .range(first..)
        .map(|(m, _)| *m)
        .take_while(|m| m.endpoint == ep && m.direction == dir)
        .collect();
    for k in keys {
        policy.remove(&k);
    }
}
