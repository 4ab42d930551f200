//! A whole per-CPU hash map in a few syscalls. Walking one key at a time costs two syscalls
//! per entry (next key, then lookup): about 400 ms a read at 100,000 destinations, every
//! interval. BPF_MAP_LOOKUP_BATCH (Linux 5.6+) returns thousands of entries per call.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// Entries per call; a bucket with more collisions than this is retried with room for it.
const BATCH: usize = 4096;

/// The `batch` member of `union bpf_attr`, padded to the union's size.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    _rest: [u64; 9],
}

/// Every entry of the per-CPU hash map `fd`, handed to `each` with its value on each of
/// `cpus` CPUs (in a buffer reused from entry to entry: 100,000 entries made 100,000
/// vectors). `Unsupported` (an old kernel) tells the caller to walk the map instead.
pub fn read_per_cpu<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>, cpus: usize, mut each: impl FnMut(K, &[V])) -> io::Result<()> {
    // The kernel lays out each CPU's value 8-byte aligned.
    let slot = size_of::<V>().next_multiple_of(8);
    let mut per_cpu: Vec<V> = Vec::with_capacity(cpus);
    batches(fd, BPF_MAP_LOOKUP_BATCH, size_of::<K>(), slot * cpus, |key, values| {
        // SAFETY: in bounds; Pod types are valid for any bytes, read unaligned.
        let key = unsafe { std::ptr::read_unaligned(key.as_ptr().cast::<K>()) };
        per_cpu.clear();
        per_cpu.extend((0..cpus).map(|c| unsafe { std::ptr::read_unaligned(values.as_ptr().add(c * slot).cast::<V>()) }));
        each(key, &per_cpu);
    })
}

/// Take every key out of the (not per-CPU) hash map `fd`, whose values are `value_size`
/// bytes and unused: each is deleted as it is read, and one added after its bucket was
/// read stays for the next call. `Unsupported` on kernels without the batch call.
pub fn take_keys<K: aya::Pod>(fd: BorrowedFd<'_>, value_size: usize, mut each: impl FnMut(K)) -> io::Result<()> {
    batches(fd, BPF_MAP_LOOKUP_AND_DELETE_BATCH, size_of::<K>(), value_size, |key, _| {
        // SAFETY: in bounds; Pod types are valid for any bytes, read unaligned.
        each(unsafe { std::ptr::read_unaligned(key.as_ptr().cast::<K>()) })
    })
}

/// The value of `key` in the per-CPU hash map `fd` on each of `cpus` CPUs, into `out`
/// (cleared first); false when the map does not hold the key.
pub fn lookup_per_cpu<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>, key: &K, cpus: usize, buf: &mut Vec<u8>, out: &mut Vec<V>) -> io::Result<bool> {
    let slot = size_of::<V>().next_multiple_of(8);
    buf.resize(slot * cpus, 0);
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: (key as *const K) as u64,
        value: buf.as_mut_ptr() as u64,
        flags: 0,
        _rest: [0; 11],
    };
    // SAFETY: the key and the buffer have the sizes the map was made with.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_ELEM, &raw mut attr, size_of::<ElemAttr>()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(false) } else { Err(e) };
    }
    out.clear();
    // SAFETY: in bounds; Pod types are valid for any bytes, read unaligned.
    out.extend((0..cpus).map(|c| unsafe { std::ptr::read_unaligned(buf.as_ptr().add(c * slot).cast::<V>()) }));
    Ok(true)
}

/// The element members of `union bpf_attr`, padded to the batch members' size.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    _rest: [u64; 11],
}

/// The whole map `fd` through batch command `cmd`, one entry at a time to `each` (its key's
/// and its value's bytes).
fn batches(fd: BorrowedFd<'_>, cmd: libc::c_long, ksize: usize, vsize: usize, mut each: impl FnMut(&[u8], &[u8])) -> io::Result<()> {
    let mut room = BATCH;
    let mut keys = vec![0u8; room * ksize];
    let mut values = vec![0u8; room * vsize];
    // The position in the map (a bucket index for hash maps); none on the first call.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token_in) as u64 },
            out_batch: (&raw mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: room as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
            _rest: [0; 9],
        };
        // SAFETY: the buffers hold `count` keys and values of the sizes the map was made with.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut attr, size_of::<BatchAttr>()) };
        let err = (rc < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(room);
        for i in 0..n {
            each(&keys[i * ksize..(i + 1) * ksize], &values[i * vsize..(i + 1) * vsize]);
        }
        match err {
            None => {}
            // The end of the map (this call's entries are still valid).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // One bucket holds more than `room`: make room and ask again from the same place.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && room < 1 << 20 => {
                room *= 4;
                keys.resize(room * ksize, 0);
                values.resize(room * vsize, 0);
                continue;
            }
            Some(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, e));
            }
            Some(e) => return Err(e),
        }
        first = false;
        token_in = token_out;
    }
}
