//! Raw `bpf(2)` commands that aya 0.13 does not expose: map operations on raw bytes
//! (LPM keys carry their prefix length inline, which aya's typed `LpmTrie` does not
//! model), `BPF_MAP_UPDATE_BATCH`, and `BPF_PROG_TEST_RUN`.
//!
//! This is the crate's only `unsafe` code. Each call builds a zeroed `bpf_attr` (the
//! kernel rejects non-zero bytes past the fields a command knows), fills the command's
//! fields at their UAPI offsets, and passes pointers to buffers that outlive the call.
#![allow(
    unsafe_code,
    reason = "the bpf(2) system call has no safe wrapper for these commands"
)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Size of `union bpf_attr` in the UAPI headers this code was written against.
const ATTR_SIZE: usize = 144;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;

/// A zeroed `bpf_attr`, aligned like the union, with helpers to access fields by offset.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Self {
        Attr([0; ATTR_SIZE])
    }
    fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
    fn call(&mut self, cmd: libc::c_long) -> io::Result<()> {
        // SAFETY: `self.0` is a properly sized and aligned bpf_attr; the pointers stored in
        // it point to buffers the caller keeps alive for the duration of this call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                ATTR_SIZE as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn ptr(b: &[u8]) -> u64 {
    b.as_ptr() as u64
}

/// `BPF_MAP_UPDATE_ELEM` with raw key and value bytes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut a = Attr::new();
    a.set_u32(0, map.as_raw_fd() as u32);
    a.set_u64(8, ptr(key));
    a.set_u64(16, ptr(value));
    a.set_u64(24, flags);
    a.call(BPF_MAP_UPDATE_ELEM)
}

/// `BPF_MAP_DELETE_ELEM`. A missing key is not an error (the goal state is reached).
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.set_u32(0, map.as_raw_fd() as u32);
    a.set_u64(8, ptr(key));
    match a.call(BPF_MAP_DELETE_ELEM) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// `BPF_MAP_LOOKUP_ELEM`: `Ok(false)` when the key is absent.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut a = Attr::new();
    a.set_u32(0, map.as_raw_fd() as u32);
    a.set_u64(8, ptr(key));
    a.set_u64(16, value.as_mut_ptr() as u64);
    match a.call(BPF_MAP_LOOKUP_ELEM) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
        Ok(()) => Ok(true),
    }
}

/// `BPF_MAP_GET_NEXT_KEY`: `Ok(false)` after the last key. `key` of `None` starts.
pub fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut a = Attr::new();
    a.set_u32(0, map.as_raw_fd() as u32);
    a.set_u64(8, key.map_or(0, ptr));
    a.set_u64(16, next.as_mut_ptr() as u64);
    match a.call(BPF_MAP_GET_NEXT_KEY) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
        Ok(()) => Ok(true),
    }
}

/// `BPF_MAP_UPDATE_BATCH`: `keys` and `values` hold `count` packed records. Returns how
/// many were written; on an error the kernel reports the count written before it.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<u32, (u32, io::Error)> {
    let mut a = Attr::new();
    // struct { in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags }
    a.set_u64(16, ptr(keys));
    a.set_u64(24, ptr(values));
    a.set_u32(32, count);
    a.set_u32(36, map.as_raw_fd() as u32);
    a.set_u64(40, BPF_ANY);
    match a.call(BPF_MAP_UPDATE_BATCH) {
        Ok(()) => Ok(a.get_u32(32)),
        Err(e) => Err((a.get_u32(32), e)),
    }
}

/// The outcome of one `BPF_PROG_TEST_RUN`.
pub struct TestRun {
    /// The program's return value (a `TC_ACT_*` verdict).
    pub retval: u32,
    /// Average run time in nanoseconds over the repeats.
    pub duration_ns: u32,
    /// The packet after the program ran.
    pub data_out: Vec<u8>,
    /// `struct __sk_buff` after the run (the mark is at offset 8).
    pub ctx_out: [u8; SK_BUFF_SIZE],
}

/// `sizeof(struct __sk_buff)`.
pub const SK_BUFF_SIZE: usize = 192;

/// `BPF_PROG_TEST_RUN` of a tc program on `data`, with `ctx_in` as the `__sk_buff`.
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx_in: &[u8; SK_BUFF_SIZE],
    repeat: u32,
) -> io::Result<TestRun> {
    // Room for growth: the datapath does not change the size, but be generous.
    let mut out = vec![0u8; data.len() + 256];
    let mut ctx_out = [0u8; SK_BUFF_SIZE];
    let mut a = Attr::new();
    // struct { prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat,
    //          duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out, flags, cpu, ... }
    a.set_u32(0, prog.as_raw_fd() as u32);
    a.set_u32(8, data.len() as u32);
    a.set_u32(12, out.len() as u32);
    a.set_u64(16, ptr(data));
    a.set_u64(24, out.as_mut_ptr() as u64);
    a.set_u32(32, repeat);
    a.set_u32(40, SK_BUFF_SIZE as u32);
    a.set_u32(44, SK_BUFF_SIZE as u32);
    a.set_u64(48, ptr(ctx_in));
    a.set_u64(56, ctx_out.as_mut_ptr() as u64);
    a.call(BPF_PROG_TEST_RUN)?;
    let size_out = a.get_u32(12) as usize;
    out.truncate(size_out);
    Ok(TestRun {
        retval: a.get_u32(4),
        duration_ns: a.get_u32(36),
        data_out: out,
        ctx_out,
    })
}

/// The bytes of a plain-old-data value (one of the `repr(C)` layouts).
pub fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` is repr(C) with explicit padding, so every byte is initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A plain-old-data value read back from bytes; `None` when the length is wrong.
pub fn from_bytes<T: aya::Pod>(b: &[u8]) -> Option<T> {
    if b.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches and any bit pattern is a valid `T: Pod`.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// The mutable bytes of a plain-old-data value, to be filled by the kernel.
pub fn bytes_of_mut<T: aya::Pod>(v: &mut T) -> &mut [u8] {
    // SAFETY: `T: Pod` accepts any bit pattern, and the slice covers exactly `*v`.
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
