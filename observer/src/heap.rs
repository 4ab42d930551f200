//! How observer's heap gives memory back. Each interval builds views, verdicts and a report
//! that are dropped at once; with glibc's defaults the large ones raise the mmap threshold
//! (so later ones come from the heap) and the freed pages stay resident, so the process kept
//! its busiest interval's high-water mark for good (a 100k-destination node: 300 MiB).

/// Allocations from this size on are mapped apart and unmapped when freed.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Fix the mmap threshold (a set value also stops glibc from raising it) before anything
/// large is allocated.
pub fn settle_thresholds() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Return the free pages of the heap to the system: called once an interval is closed.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
