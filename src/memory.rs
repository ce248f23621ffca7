//! Handing freed heap memory back to the kernel: the one place sluice calls into libc
//! directly (the crate denies `unsafe` everywhere else).
//!
//! glibc's allocator gives memory back only from the top of its heap. Pages freed in the
//! middle stay with the process: after a burst of clients, the buffers of the requests they
//! made are freed when their connections go idle, but they sit between the small, long-lived
//! allocations of the connections that stay open, so RSS stays at the burst's peak (about
//! 3 KiB for each connection of the burst). `malloc_trim` releases every whole free page
//! wherever it is; it is run every few seconds from the upkeep thread, off the data path.
#![allow(unsafe_code)]

/// Returns whole free pages of the heap to the kernel (glibc only; elsewhere nothing).
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe: it locks each arena in turn.
    unsafe {
        libc::malloc_trim(0);
    }
}
