//! What the agent's memory holds, for `status`: the fill of every cache that grows with the
//! processes, destinations, names and flows it sees, and the C heap's own figures (allocated,
//! free, mapped), which tell growth of live data from fragmentation.

use serde::Serialize;

/// One bounded in-memory table: how full it is and what it may hold.
#[derive(Debug, Clone, Serialize)]
pub struct CacheFill {
    pub cache: &'static str,
    pub entries: usize,
    pub capacity: usize,
}

impl CacheFill {
    pub fn new(cache: &'static str, entries: usize, capacity: usize) -> Self {
        Self { cache, entries, capacity }
    }
}

/// glibc's heap figures (`mallinfo2`), in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Heap {
    /// Held by live allocations.
    pub allocated: u64,
    /// Free in the heaps (kept by the allocator, counted in RSS once touched).
    pub free: u64,
    /// Taken from the system by `brk` and for the threads' arenas.
    pub arenas: u64,
    /// Large allocations mapped on their own.
    pub mapped: u64,
}

/// The heap's figures, if the C library has `mallinfo2` (glibc 2.33 and later). Looked up at run
/// time so that the agent still starts on an older glibc, where it has no such symbol.
pub fn heap() -> Option<Heap> {
    type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    // SAFETY: a lookup by a NUL-terminated name in the global scope.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: glibc's `mallinfo2` has this signature (malloc.h) and no preconditions.
    let info = unsafe { std::mem::transmute::<*mut libc::c_void, MallInfo2>(sym)() };
    Some(Heap {
        allocated: info.uordblks as u64,
        free: info.fordblks as u64,
        arenas: info.arena as u64,
        mapped: info.hblkhd as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn heap_figures_move_with_allocations() {
        let Some(before) = super::heap() else { return };
        // 4 MiB in pieces below the mmap threshold: other tests running meanwhile cannot hide it.
        let held: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 4096]).collect();
        let after = super::heap().unwrap_or(before);
        assert!(after.allocated >= before.allocated + 3 * 1024 * 1024, "{before:?} → {after:?}");
        drop(held);
    }
}
