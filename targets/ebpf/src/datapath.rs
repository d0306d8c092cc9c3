//! Loading the datapath object with aya, pinning its maps, attaching its programs, and
//! writing artifacts into its maps.
//!
//! # Minimum kernel version
//!
//! 5.8 (ring buffer); `BPF_MAP_UPDATE_BATCH` on hash maps needs 5.6 and on LPM tries the
//! generic batch path (5.6), with a per-entry fallback when a kernel refuses a batch.
//! Tested on 6.18.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use aya::maps::{MapData, PerCpuHashMap, RingBuf};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use pipec_ebpf_common as c;

use crate::artifact::{EbpfArtifact, MapName, MapOp};
use crate::sizes::MapSizes;
use crate::sys;

/// The datapath object, built from `bpf/pipec.bpf.c` by `bpf/build.sh` and committed.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/pipec.bpf.o");
/// The benchmark baselines (lookups only), built from `bpf/bench.bpf.c`.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/bench.bpf.o");

/// Where bpffs is mounted by convention.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Errors of loading, attaching and map writing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object did not load (verifier, BTF, permissions).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// The cause.
        source: aya::programs::ProgramError,
    },
    /// A map could not be used.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The cause.
        source: aya::maps::MapError,
    },
    /// A system call or command failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The object lacks a map or program this crate expects (a stale object).
    #[error("the object has no {0}")]
    Missing(&'static str),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The datapath's programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Program {
    /// Packets a pod sends: tc ingress of the host side of its veth.
    FromPod,
    /// Packets for a pod: tc egress of the host side of its veth.
    ToPod,
    /// Packets from the wire: tc ingress of the uplink.
    FromWire,
    /// Packets to the wire: tc egress of the uplink.
    ToWire,
}

impl Program {
    /// Every program.
    pub const ALL: [Program; 4] = [
        Program::FromPod,
        Program::ToPod,
        Program::FromWire,
        Program::ToWire,
    ];

    /// The program's name in the object.
    pub fn name(self) -> &'static str {
        match self {
            Program::FromPod => "from_pod",
            Program::ToPod => "to_pod",
            Program::FromWire => "from_wire",
            Program::ToWire => "to_wire",
        }
    }

    /// The tc hook the program belongs on.
    pub fn hook(self) -> TcAttachType {
        match self {
            Program::FromPod | Program::FromWire => TcAttachType::Ingress,
            Program::ToPod | Program::ToWire => TcAttachType::Egress,
        }
    }
}

/// An owned attachment of a program to a device; detached on [`Attachment::detach`] or
/// on drop.
#[derive(Debug)]
pub struct Attachment {
    id: u64,
    program: Program,
    iface: String,
    link: Option<SchedClassifierLink>,
}

impl Attachment {
    /// A process-unique id of this attachment.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The attached program.
    pub fn program(&self) -> Program {
        self.program
    }
    /// The device.
    pub fn iface(&self) -> &str {
        &self.iface
    }
    /// Removes the tc filter now.
    pub fn detach(mut self) {
        // Dropping aya's link removes the filter.
        self.link.take();
    }
}

/// Counts of what [`Datapath::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries created or replaced.
    pub upserts: usize,
    /// Entries removed.
    pub deletes: usize,
    /// `BPF_MAP_UPDATE_BATCH` calls made.
    pub batches: usize,
}

/// Upserts per `BPF_MAP_UPDATE_BATCH` call.
const BATCH: usize = 4096;

/// The loaded datapath: programs in the kernel, maps (pinned when asked).
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    next_attachment: u64,
}

/// Mounts bpffs at `path` unless it is already mounted there.
pub fn ensure_bpffs(path: &Path) -> Result<(), Error> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(io_err("reading /proc/mounts"))?;
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[2] == "bpf" && Path::new(f[1]) == path
    });
    if mounted {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))?;
    let st = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(path)
        .status()
        .map_err(io_err("running mount"))?;
    if !st.success() {
        return Err(Error::Io {
            context: format!("mount -t bpf bpf {}", path.display()),
            source: io::Error::other(format!("exit status {st}")),
        });
    }
    Ok(())
}

fn load_object(bytes: &[u8], pin_dir: Option<&Path>, sizes: &MapSizes) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    // A map already pinned keeps the size it was created with; these size new maps only.
    for (map, entries) in sizes.changed() {
        let entries = u32::try_from(entries).expect("map sizes are at most CEILING");
        loader.set_max_entries(map.as_str(), entries);
    }
    if let Some(dir) = pin_dir {
        ensure_bpffs(Path::new(BPFFS))?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        loader.map_pin_path(dir);
    }
    Ok(loader.load(bytes)?)
}

fn load_programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), Error> {
    for &name in names {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(Error::Missing(name))?
            .try_into()
            .map_err(|source| Error::Program {
                program: name,
                source,
            })?;
        prog.load().map_err(|source| Error::Program {
            program: name,
            source,
        })?;
    }
    Ok(())
}

fn program_fd<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<BorrowedFd<'a>, Error> {
    let prog: &SchedClassifier = ebpf
        .program(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|source| Error::Program {
            program: name,
            source,
        })?;
    let fd = prog.fd().map_err(|source| Error::Program {
        program: name,
        source,
    })?;
    Ok(fd.as_fd())
}

/// The `__sk_buff` a test run starts with: the device and the mark.
fn skb_ctx(ifindex: u32, mark: u32) -> [u8; sys::SK_BUFF_SIZE] {
    let mut ctx = [0u8; sys::SK_BUFF_SIZE];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The result of running one packet through a program.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The `TC_ACT_*` verdict.
    pub verdict: i32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// `skb->mark` after the run.
    pub mark: u32,
}

/// `TC_ACT_OK`: the packet continues.
pub const TC_ACT_OK: i32 = 0;
/// `TC_ACT_SHOT`: the packet is dropped.
pub const TC_ACT_SHOT: i32 = 2;

impl Datapath {
    /// Loads the object and its four programs. With `pin_dir` (under bpffs, which is
    /// mounted if needed), maps are pinned there by name, and maps already pinned there are
    /// reused: a restarted loader keeps the state.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, Error> {
        Datapath::load_sized(pin_dir, &MapSizes::default())
    }

    /// Whether `pin_dir` holds a pinned map of the datapath: a loader there reuses the
    /// pinned maps, with the sizes they were created with.
    pub fn pinned_in(pin_dir: &Path) -> bool {
        MapName::ALL
            .iter()
            .any(|m| pin_dir.join(m.as_str()).exists())
    }

    /// [`Datapath::load`] with the maps created with `sizes` (maps already pinned keep
    /// theirs: [`Datapath::sizes`] reads what the kernel holds).
    pub fn load_sized(pin_dir: Option<&Path>, sizes: &MapSizes) -> Result<Self, Error> {
        // The object's maps are pinned by name, and aya pins them under bpffs itself when
        // no directory is given (so every unpinned loader would share one set of maps): an
        // unpinned datapath pins into a scratch directory and removes it at once.
        let scratch = pin_dir.is_none().then(|| scratch_pin_dir("unpinned"));
        let loaded = load_object(OBJECT, pin_dir.or(scratch.as_deref()), sizes);
        if let Some(dir) = &scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        let mut ebpf = loaded?;
        let names: Vec<&'static str> = Program::ALL.iter().map(|p| p.name()).collect();
        load_programs(&mut ebpf, &names)?;
        Ok(Datapath {
            ebpf,
            pin_dir: pin_dir.map(Path::to_path_buf),
            next_attachment: 1,
        })
    }

    /// The pin directory, if maps are pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Attaches `program` to `iface` at its hook ([`Program::hook`]) as a cls_bpf filter of
    /// the device's clsact qdisc (added if missing).
    pub fn attach(&mut self, program: Program, iface: &str) -> Result<Attachment, Error> {
        if let Err(e) = aya::programs::tc::qdisc_add_clsact(iface) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_err(format!("adding clsact to {iface}"))(e));
            }
        }
        let name = program.name();
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::Missing(name))?
            .try_into()
            .map_err(|source| Error::Program {
                program: name,
                source,
            })?;
        let err = |source| Error::Program {
            program: name,
            source,
        };
        let id = prog
            .attach_with_options(
                iface,
                program.hook(),
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(err)?;
        let link = prog.take_link(id).map_err(err)?;
        let n = self.next_attachment;
        self.next_attachment += 1;
        Ok(Attachment {
            id: n,
            program,
            iface: iface.to_string(),
            link: Some(link),
        })
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, Error> {
        use aya::maps::Map;
        match self.ebpf.map(name).ok_or(Error::Missing(name))? {
            Map::HashMap(m)
            | Map::LpmTrie(m)
            | Map::LruHashMap(m)
            | Map::Array(m)
            | Map::PerCpuHashMap(m)
            | Map::RingBuf(m) => Ok(m),
            _ => Err(Error::Missing(name)),
        }
    }

    /// The sizes the kernel created the artifact's maps with.
    pub fn sizes(&self) -> Result<MapSizes, Error> {
        let mut out = MapSizes::default();
        for map in MapName::ALL {
            let info = self
                .map_data(map.as_str())?
                .info()
                .map_err(|source| Error::Map {
                    map: map.as_str(),
                    source,
                })?;
            if map != MapName::Config {
                out.set(map, u64::from(info.max_entries()))
                    .map_err(|e| Error::Io {
                        context: format!("reading the size of map {}", map.as_str()),
                        source: io::Error::new(io::ErrorKind::InvalidData, e),
                    })?;
            }
        }
        Ok(out)
    }

    /// The file descriptor of a map, for raw operations.
    pub fn map_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, Error> {
        Ok(self.map_data(name)?.fd().as_fd())
    }

    /// Makes the maps hold exactly `artifact`: applies the diff from what they hold now
    /// (so a restarted loader on pinned maps reconciles instead of flushing).
    pub fn write(&mut self, artifact: &EbpfArtifact) -> Result<ApplyStats, Error> {
        let current = self.read_entries()?;
        let ops = crate::artifact::diff_entries(&current, &artifact.entries());
        self.apply(&ops)
    }

    /// The raw content of the maps an artifact fills.
    pub fn read_entries(&self) -> Result<crate::artifact::MapEntries, Error> {
        let mut out = crate::artifact::MapEntries::new();
        for map in MapName::ALL {
            let (ks, vs) = entry_sizes(map);
            let fd = self.map_fd(map.as_str())?;
            let mut key: Option<Vec<u8>> = None;
            loop {
                let mut next = vec![0u8; ks];
                let more = sys::map_next_key(fd, key.as_deref(), &mut next)
                    .map_err(io_err(format!("iterating {}", map.as_str())))?;
                if !more {
                    break;
                }
                let mut value = vec![0u8; vs];
                if sys::map_lookup(fd, &next, &mut value).map_err(io_err("map lookup"))? {
                    // The config array always has its one slot; all-zero means unset.
                    if !(map == MapName::Config && value.iter().all(|b| *b == 0)) {
                        out.insert((map, next.clone()), value);
                    }
                }
                key = Some(next);
            }
        }
        Ok(out)
    }

    /// Applies diff operations in order, batching consecutive upserts into one map.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<ApplyStats, Error> {
        let mut stats = ApplyStats::default();
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                MapOp::Upsert { map, .. } => {
                    let map = *map;
                    let mut keys = Vec::new();
                    let mut values = Vec::new();
                    let mut n = 0;
                    while i < ops.len() && n < BATCH {
                        match &ops[i] {
                            MapOp::Upsert { map: m, key, value } if *m == map => {
                                keys.extend_from_slice(key);
                                values.extend_from_slice(value);
                                n += 1;
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    self.upsert_batch(map, &keys, &values, n, &mut stats)?;
                }
                MapOp::Delete { map, key } => {
                    let fd = self.map_fd(map.as_str())?;
                    sys::map_delete(fd, key)
                        .map_err(io_err(format!("deleting from {}", map.as_str())))?;
                    stats.deletes += 1;
                    i += 1;
                }
            }
        }
        Ok(stats)
    }

    fn upsert_batch(
        &self,
        map: MapName,
        keys: &[u8],
        values: &[u8],
        n: usize,
        stats: &mut ApplyStats,
    ) -> Result<(), Error> {
        let fd = self.map_fd(map.as_str())?;
        let (ks, vs) = entry_sizes(map);
        // Arrays have too few entries to be worth a batch, and a one-entry batch costs the
        // same syscall as a plain update.
        if n > 1 && map != MapName::Config {
            match sys::map_update_batch(fd, keys, values, n as u32) {
                Ok(done) if done as usize == n => {
                    stats.batches += 1;
                    stats.upserts += n;
                    return Ok(());
                }
                Ok(done) | Err((done, _)) => {
                    // Fall back to single updates for the rest (a kernel without batch
                    // support for this map type answers EINVAL or ENOTSUPP at once).
                    stats.upserts += done as usize;
                    let done = done as usize;
                    return self.upsert_each(
                        fd,
                        &keys[done * ks..],
                        &values[done * vs..],
                        ks,
                        vs,
                        map,
                        stats,
                    );
                }
            }
        }
        self.upsert_each(fd, keys, values, ks, vs, map, stats)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "a private helper of upsert_batch"
    )]
    fn upsert_each(
        &self,
        fd: BorrowedFd<'_>,
        keys: &[u8],
        values: &[u8],
        ks: usize,
        vs: usize,
        map: MapName,
        stats: &mut ApplyStats,
    ) -> Result<(), Error> {
        for (k, v) in keys.chunks(ks).zip(values.chunks(vs)) {
            sys::map_update(fd, k, v, sys::BPF_ANY)
                .map_err(io_err(format!("updating {}", map.as_str())))?;
            stats.upserts += 1;
        }
        Ok(())
    }

    /// Runs one packet through a program with `BPF_PROG_TEST_RUN`, as if it arrived on
    /// the device `ifindex` (1, the loopback device, when 0) with `mark`.
    pub fn run(
        &self,
        program: Program,
        packet: &[u8],
        ifindex: u32,
        mark: u32,
    ) -> Result<RunResult, Error> {
        let fd = program_fd(&self.ebpf, program.name())?;
        let r = sys::prog_test_run(fd, packet, &skb_ctx(ifindex, mark), 1)
            .map_err(io_err(format!("BPF_PROG_TEST_RUN of {}", program.name())))?;
        let mark = u32::from_ne_bytes(r.ctx_out[8..12].try_into().unwrap_or_default());
        Ok(RunResult {
            verdict: r.retval as i32,
            packet: r.data_out,
            mark,
        })
    }

    /// The average time of `repeat` runs of a program on one packet, in nanoseconds.
    pub fn time(
        &self,
        program: Program,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<u32, Error> {
        let fd = program_fd(&self.ebpf, program.name())?;
        let r = sys::prog_test_run(fd, packet, &skb_ctx(ifindex, 0), repeat)
            .map_err(io_err(format!("BPF_PROG_TEST_RUN of {}", program.name())))?;
        Ok(r.duration_ns)
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(c::CtKey, c::CtValue)>, Error> {
        let fd = self.map_fd("ct")?;
        let mut out = Vec::new();
        let mut key: Option<c::CtKey> = None;
        loop {
            let mut next = c::CtKey::default();
            let more = sys::map_next_key(fd, key.as_ref().map(sys::bytes_of), bytes_mut(&mut next))
                .map_err(io_err("iterating ct"))?;
            if !more {
                break;
            }
            let mut v = c::CtValue::default();
            if sys::map_lookup(fd, sys::bytes_of(&next), bytes_mut(&mut v))
                .map_err(io_err("ct lookup"))?
            {
                out.push((next, v));
            }
            key = Some(next);
        }
        Ok(out)
    }

    /// At most `max` conntrack entries, those after `after` in the map's iteration order
    /// (from the first when `None`), and whether the map may hold more after them.
    ///
    /// A caller that scans a large map on a timer (pipecd's connection offload) reads it a
    /// page per tick, so that one tick never holds it for the whole map. The kernel's
    /// iteration order is not stable across changes: when `after` has been deleted since,
    /// the kernel starts again from the first entry, so a scan that pages through a
    /// changing map sees every entry that lives through the scan at least once and may see
    /// some twice.
    pub fn conntrack_page(
        &self,
        after: Option<&c::CtKey>,
        max: usize,
    ) -> Result<(Vec<(c::CtKey, c::CtValue)>, bool), Error> {
        let fd = self.map_fd("ct")?;
        let mut out = Vec::new();
        let mut key: Option<c::CtKey> = after.copied();
        while out.len() < max {
            let mut next = c::CtKey::default();
            let more = sys::map_next_key(fd, key.as_ref().map(sys::bytes_of), bytes_mut(&mut next))
                .map_err(io_err("iterating ct"))?;
            if !more {
                return Ok((out, false));
            }
            let mut v = c::CtValue::default();
            if sys::map_lookup(fd, sys::bytes_of(&next), bytes_mut(&mut v))
                .map_err(io_err("ct lookup"))?
            {
                out.push((next, v));
            }
            key = Some(next);
        }
        Ok((out, true))
    }

    /// Deletes every conntrack and affinity entry: the next packet of any flow is a first
    /// packet again (the `ebpf` engine isolates probes with it).
    pub fn flush_state(&self) -> Result<usize, Error> {
        use std::mem::size_of;
        let mut n = 0;
        for (name, ks) in [
            ("ct", size_of::<c::CtKey>()),
            ("affinity", size_of::<c::AffinityKey>()),
        ] {
            let fd = self.map_fd(name)?;
            loop {
                let mut key = vec![0u8; ks];
                if !sys::map_next_key(fd, None, &mut key)
                    .map_err(io_err(format!("iterating {name}")))?
                {
                    break;
                }
                sys::map_delete(fd, &key).map_err(io_err(format!("deleting from {name}")))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Garbage-collects conntrack: deletes every entry whose deadline is before `now_ns`
    /// (`CLOCK_MONOTONIC`, the datapath's clock; the current time when `None`). Returns
    /// how many were deleted. LRU eviction bounds the map between collections.
    pub fn gc_conntrack(&self, now_ns: Option<u64>) -> Result<usize, Error> {
        let now = now_ns.unwrap_or_else(sys::monotonic_ns);
        let fd = self.map_fd("ct")?;
        let mut n = 0;
        for (k, v) in self.conntrack()? {
            if v.expires < now {
                sys::map_delete(fd, sys::bytes_of(&k)).map_err(io_err("deleting from ct"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Per-rule counters, summed over CPUs, by cookie.
    pub fn counters(&self) -> Result<BTreeMap<u64, c::CounterValue>, Error> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or(Error::Missing("counters"))?;
        let m: PerCpuHashMap<&MapData, u64, c::CounterValue> = PerCpuHashMap::try_from(map)
            .map_err(|source| Error::Map {
                map: "counters",
                source,
            })?;
        let mut out = BTreeMap::new();
        for item in m.iter() {
            let (cookie, per_cpu) = item.map_err(|source| Error::Map {
                map: "counters",
                source,
            })?;
            let mut sum = c::CounterValue::default();
            for v in per_cpu.iter() {
                sum.packets += v.packets;
                sum.bytes += v.bytes;
            }
            out.insert(cookie, sum);
        }
        Ok(out)
    }

    /// Drains the flow-event ring buffer.
    pub fn events(&mut self) -> Result<Vec<c::FlowEvent>, Error> {
        self.events_up_to(usize::MAX)
    }

    /// Takes at most `max` records from the flow-event ring buffer: a caller that holds a
    /// lock while it drains must not be kept there by traffic that never pauses.
    pub fn events_up_to(&mut self, max: usize) -> Result<Vec<c::FlowEvent>, Error> {
        let map = self
            .ebpf
            .map_mut("events")
            .ok_or(Error::Missing("events"))?;
        let mut rb = RingBuf::try_from(map).map_err(|source| Error::Map {
            map: "events",
            source,
        })?;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = rb.next() else {
                break;
            };
            if let Some(e) = sys::from_bytes::<c::FlowEvent>(&item) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Removes the pinned maps (the maps live on while this `Datapath` holds them).
    pub fn unpin(&self) -> Result<(), Error> {
        if let Some(dir) = &self.pin_dir {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(io_err(format!("removing {}", dir.display())))?;
            }
        }
        Ok(())
    }
}

fn bytes_mut<T: aya::Pod>(v: &mut T) -> &mut [u8] {
    sys::bytes_of_mut(v)
}

/// Key and value sizes of the maps an artifact fills.
fn entry_sizes(map: MapName) -> (usize, usize) {
    use std::mem::size_of;
    match map {
        MapName::Config => (4, size_of::<c::Config>()),
        MapName::Backends => (4, size_of::<c::BackendValue>()),
        MapName::Maglev => (size_of::<c::MaglevKey>(), 4),
        MapName::Revnat => (4, size_of::<c::RevnatValue>()),
        MapName::Services | MapName::WireServices => {
            (size_of::<c::ServiceKey>(), size_of::<c::ServiceValue>())
        }
        MapName::Ipcache => (size_of::<c::IpcacheKey>(), size_of::<c::IpcacheValue>()),
        MapName::IpcacheHost => (size_of::<c::IpcacheHostKey>(), size_of::<c::IpcacheValue>()),
        MapName::Policy => (size_of::<c::PolicyKey>(), size_of::<c::PolicyValue>()),
        MapName::Ipsec => (size_of::<c::IpcacheKey>(), size_of::<c::IpsecValue>()),
        MapName::Endpoints => (size_of::<c::EndpointKey>(), size_of::<c::EndpointValue>()),
    }
}

/// The benchmark baselines, loaded over the maps a pinned [`Datapath`] already holds.
pub struct Baselines {
    ebpf: Ebpf,
}

/// The baseline programs of `bpf/bench.bpf.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// The lookups of an allowed or denied packet.
    Policy,
    /// The lookups of a service packet.
    Service,
}

impl Baselines {
    /// Loads the baselines; their maps are the ones pinned in `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self, Error> {
        let mut ebpf = load_object(BENCH_OBJECT, Some(pin_dir), &MapSizes::default())?;
        load_programs(&mut ebpf, &["lookups_policy", "lookups_service"])?;
        Ok(Baselines { ebpf })
    }

    /// The average time of `repeat` runs of a baseline on one packet, in nanoseconds.
    pub fn time(&self, baseline: Baseline, packet: &[u8], repeat: u32) -> Result<u32, Error> {
        let name = match baseline {
            Baseline::Policy => "lookups_policy",
            Baseline::Service => "lookups_service",
        };
        let fd = program_fd(&self.ebpf, name)?;
        let r = sys::prog_test_run(fd, packet, &skb_ctx(0, 0), repeat)
            .map_err(io_err(format!("BPF_PROG_TEST_RUN of {name}")))?;
        Ok(r.duration_ns)
    }
}

/// A unique pin directory under bpffs for one test or tool run.
pub fn scratch_pin_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Path::new(BPFFS).join(format!("pipec-{tag}-{}-{n}", std::process::id()))
}
