//! A whole per-CPU hash map in a few syscalls. Walking one key at a time costs two syscalls
//! per entry (next key, then lookup): about 400 ms a read at 100,000 destinations, every
//! interval. BPF_MAP_LOOKUP_BATCH (Linux 5.6+) returns thousands of entries per call.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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
    let (ksize, vsize) = (size_of::<K>(), size_of::<V>());
    // The kernel lays out each CPU's value 8-byte aligned.
    let slot = vsize.next_multiple_of(8);
    let mut room = BATCH;
    let mut keys = vec![0u8; room * ksize];
    let mut values = vec![0u8; room * slot * cpus];
    let mut per_cpu: Vec<V> = Vec::with_capacity(cpus);
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
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>()) };
        let err = (rc < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(room);
        for i in 0..n {
            // SAFETY: in bounds; Pod types are valid for any bytes, read unaligned.
            let key = unsafe { std::ptr::read_unaligned(keys.as_ptr().add(i * ksize).cast::<K>()) };
            per_cpu.clear();
            per_cpu.extend((0..cpus).map(|c| unsafe { std::ptr::read_unaligned(values.as_ptr().add((i * cpus + c) * slot).cast::<V>()) }));
            each(key, &per_cpu);
        }
        match err {
            None => {}
            // The end of the map (this call's entries are still valid).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // One bucket holds more than `room`: make room and ask again from the same place.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && room < 1 << 20 => {
                room *= 4;
                keys.resize(room * ksize, 0);
                values.resize(room * slot * cpus, 0);
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
