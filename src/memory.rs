//! Handing freed heap memory back to the kernel: the one place sluice calls into libc
//! directly (the crate denies `unsafe` everywhere else).
//!
//! glibc's allocator gives memory back only from the top of its heap. Pages freed in the
//! middle stay with the process: after a burst of clients, the buffers of the requests they
//! made are freed when their connections go idle, but they sit between the small, long-lived
//! allocations of the connections that stay open, so RSS stays at the burst's peak (about
//! 3 KiB for each connection of the burst). `malloc_trim` releases every whole free page
//! wherever it is; it is run every few seconds from the upkeep thread, off the data path.
//!
//! The daemon's allocator is mimalloc (`src/main.rs`); `without_huge_pages` keeps its heap in
//! small pages.
#![allow(unsafe_code)]

/// Turns transparent huge pages off for this process, before the daemon allocates much.
///
/// Why: where the kernel backs anonymous memory with huge pages by default
/// (`transparent_hugepage=always`, common on servers), mimalloc's first arena became four 2 MiB
/// pages at start-up: 29 MiB RSS idle instead of 21 (glibc's malloc), more than a proxy's
/// 10,000 idle connections take. A load balancer's heap is many small objects per
/// connection, where a huge page mostly holds memory nobody uses (Redis and others advise
/// the same). Failure changes nothing but the memory figure, so it is ignored.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Returns whole free pages of the heap to the kernel (glibc only; elsewhere nothing).
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe: it locks each arena in turn.
    unsafe {
        libc::malloc_trim(0);
    }
}
