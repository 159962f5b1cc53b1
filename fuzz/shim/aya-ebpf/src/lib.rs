//! The part of aya-ebpf's API that the kernel's DNS programs use, implemented on the host, so that
//! their very source (`agent-ebpf/src/dns`, `maps.rs`, `ring.rs`) builds and runs in a fuzz
//! target. Helpers do what the kernel's do (`bpf_skb_load_bytes` reads the packet and zero-fills
//! on failure, `bpf_loop` calls back until told to stop); maps keep their entries in process
//! memory. Single-threaded, like a libFuzzer run: nothing here locks.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

pub use aya_ebpf_macros_host as macros_impl;

pub mod macros {
    pub use aya_ebpf_macros_host::{btf_map, map};
}

pub mod bindings {
    pub const BPF_ANY: u32 = 0;
    pub const BPF_NOEXIST: u32 = 1;
    pub const BPF_EXIST: u32 = 2;
    pub const BPF_F_NO_PREALLOC: u32 = 1;
    pub const BPF_SK_STORAGE_GET_F_CREATE: u32 = 1;

    /// The fields of the kernel's `__sk_buff` the programs read, then what the host helpers
    /// answer from. `ip_summed` stands in for the bits of the kernel's `sk_buff` the program
    /// reads with `bpf_probe_read_kernel` at a configured offset: the harness points that offset
    /// here, so the program's read is a real read of this struct.
    #[repr(C)]
    pub struct __sk_buff {
        pub len: u32,
        pub gso_segs: u32,
        pub gso_size: u32,
        pub ip_summed: u8,
        pub __bindgen_anon_2: __sk_buff__bindgen_ty_2,
        /// Host: the packet, `len` bytes from its IP header on.
        pub data: *const u8,
        pub cookie: u64,
        pub netns: u64,
        pub uid: u32,
        pub cgroup_id: u64,
    }

    #[repr(C)]
    pub struct __sk_buff__bindgen_ty_2 {
        pub sk: *mut bpf_sock,
    }

    #[repr(C)]
    pub struct bpf_sock {
        pub type_: u32,
    }
}

pub mod helpers {
    /// Reads a `T` at `src` (the kernel's version checks the address; here it must be valid).
    pub unsafe fn bpf_probe_read_kernel<T>(src: *const T) -> Result<T, i64> {
        Ok(unsafe { core::ptr::read_unaligned(src) })
    }

    pub mod generated {
        use core::{
            ffi::c_void,
            sync::atomic::{AtomicU64, Ordering},
        };

        use crate::bindings::{__sk_buff, bpf_sock};

        /// The clock `bpf_ktime_get_ns` reads; the harness sets it.
        pub static KTIME_NS: AtomicU64 = AtomicU64::new(1_000_000_000);
        /// The cgroup of the "current task".
        pub static CURRENT_CGROUP: AtomicU64 = AtomicU64::new(4242);

        pub unsafe fn bpf_skb_load_bytes(skb: *const c_void, offset: u32, to: *mut c_void, len: u32) -> i64 {
            let skb = unsafe { &*(skb as *const __sk_buff) };
            let dst = to as *mut u8;
            let (off, n) = (offset as usize, len as usize);
            if off.checked_add(n).is_none_or(|e| e > skb.len as usize) {
                // The kernel's helper zero-fills the destination when it fails.
                unsafe { core::ptr::write_bytes(dst, 0, n) };
                return -14;
            }
            unsafe { core::ptr::copy_nonoverlapping(skb.data.add(off), dst, n) };
            0
        }

        /// Calls `callback_fn(i, ctx)` for i in 0..nr_loops until it returns non-zero.
        pub unsafe fn bpf_loop(nr_loops: u32, callback_fn: *mut c_void, callback_ctx: *mut c_void, _flags: u64) -> i64 {
            let cb: unsafe extern "C" fn(u64, *mut c_void) -> i64 = unsafe { core::mem::transmute(callback_fn) };
            for i in 0..nr_loops {
                if unsafe { cb(u64::from(i), callback_ctx) } != 0 {
                    return i64::from(i) + 1;
                }
            }
            i64::from(nr_loops)
        }

        pub unsafe fn bpf_sk_fullsock(sk: *mut bpf_sock) -> *mut bpf_sock {
            sk
        }

        pub unsafe fn bpf_sk_storage_get(
            map: *mut c_void,
            sk: *mut c_void,
            _value: *mut c_void,
            flags: u64,
        ) -> *mut c_void {
            let raw = unsafe { &*(map as *const crate::btf_maps::RawSkStorage) };
            raw.get(sk as usize, flags & u64::from(crate::bindings::BPF_SK_STORAGE_GET_F_CREATE) != 0)
        }

        pub unsafe fn bpf_get_socket_cookie(ctx: *mut c_void) -> u64 {
            unsafe { (*(ctx as *const __sk_buff)).cookie }
        }

        pub unsafe fn bpf_get_netns_cookie(ctx: *mut c_void) -> u64 {
            unsafe { (*(ctx as *const __sk_buff)).netns }
        }

        pub unsafe fn bpf_get_socket_uid(skb: *mut __sk_buff) -> u32 {
            unsafe { (*skb).uid }
        }

        pub unsafe fn bpf_skb_cgroup_id(skb: *mut __sk_buff) -> u64 {
            unsafe { (*skb).cgroup_id }
        }

        pub unsafe fn bpf_get_current_cgroup_id() -> u64 {
            CURRENT_CGROUP.load(Ordering::Relaxed)
        }

        pub unsafe fn bpf_ktime_get_ns() -> u64 {
            KTIME_NS.load(Ordering::Relaxed)
        }

        pub unsafe fn bpf_probe_read_kernel(dst: *mut c_void, size: u32, src: *const c_void) -> i64 {
            unsafe { core::ptr::copy(src as *const u8, dst as *mut u8, size as usize) };
            0
        }
    }
}

pub mod programs {
    use crate::bindings::__sk_buff;

    pub struct SkBuff {
        pub skb: *mut __sk_buff,
    }

    pub struct SkBuffContext {
        pub skb: SkBuff,
    }

    impl SkBuffContext {
        pub fn new(skb: *mut __sk_buff) -> Self {
            Self { skb: SkBuff { skb } }
        }
    }
}

/// Process memory behind a shared reference, for map statics: the fuzzer is single-threaded.
struct Cell<T>(core::cell::UnsafeCell<T>);

unsafe impl<T> Sync for Cell<T> {}

impl<T> Cell<T> {
    const fn new(v: T) -> Self {
        Self(core::cell::UnsafeCell::new(v))
    }

    #[allow(clippy::mut_from_ref)]
    fn get(&self) -> &mut T {
        // SAFETY: single-threaded; callers never hold two of these at once.
        unsafe { &mut *self.0.get() }
    }
}

fn zeroed<T>() -> Box<T> {
    // SAFETY: every map value type here is plain data, valid as all zeroes (as the kernel's are).
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

fn bytes<T>(v: &T) -> &[u8] {
    // SAFETY: a live value, read as its bytes (keys are repr(C) with explicit padding).
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

pub mod maps {
    use core::{borrow::Borrow, marker::PhantomData, mem::MaybeUninit};

    use crate::{bytes, zeroed, Cell};

    /// Array and per-CPU array (one CPU): every index below `max_entries` exists, zeroed.
    pub struct Array<T> {
        max: u32,
        slots: Cell<Vec<Option<Box<T>>>>,
    }

    pub type PerCpuArray<T> = Array<T>;

    impl<T> Array<T> {
        pub const fn with_max_entries(max_entries: u32, _flags: u32) -> Self {
            Self { max: max_entries, slots: Cell::new(Vec::new()) }
        }

        pub fn get_ptr_mut(&self, index: u32) -> Option<*mut T> {
            if index >= self.max {
                return None;
            }
            let slots = self.slots.get();
            let i = index as usize;
            if slots.len() <= i {
                slots.resize_with(i + 1, || None);
            }
            Some(&mut **slots[i].get_or_insert_with(zeroed) as *mut T)
        }

        pub fn get_ptr(&self, index: u32) -> Option<*const T> {
            self.get_ptr_mut(index).map(|p| p as *const T)
        }

        pub fn get(&self, index: u32) -> Option<&T> {
            // SAFETY: boxed entries live until `clear`.
            self.get_ptr(index).map(|p| unsafe { &*p })
        }

        /// Host: back to all zeroes.
        pub fn clear(&self) {
            self.slots.get().clear();
        }
    }

    pub struct CgroupArray;

    /// Declared by maps.rs for a program the fuzzer does not build.
    pub struct ProgramArray;

    impl ProgramArray {
        pub const fn with_max_entries(_max_entries: u32, _flags: u32) -> Self {
            Self
        }
    }

    impl CgroupArray {
        pub const fn with_max_entries(_max_entries: u32, _flags: u32) -> Self {
            Self
        }
    }

    /// Hash and LRU hash maps; an LRU evicts its oldest entry when full, a hash map refuses.
    pub struct Hash<K, V, const LRU: bool> {
        max: u32,
        entries: Cell<Vec<(Vec<u8>, Box<V>)>>,
        _k: PhantomData<K>,
    }

    pub type HashMap<K, V> = Hash<K, V, false>;
    pub type LruHashMap<K, V> = Hash<K, V, true>;

    impl<K, V, const LRU: bool> Hash<K, V, LRU> {
        pub const fn with_max_entries(max_entries: u32, _flags: u32) -> Self {
            Self { max: max_entries, entries: Cell::new(Vec::new()), _k: PhantomData }
        }

        pub fn get_ptr_mut(&self, key: impl Borrow<K>) -> Option<*mut V> {
            let k = bytes(key.borrow());
            self.entries.get().iter_mut().find(|(ek, _)| ek == k).map(|(_, v)| &mut **v as *mut V)
        }

        pub fn get_ptr(&self, key: impl Borrow<K>) -> Option<*const V> {
            self.get_ptr_mut(key).map(|p| p as *const V)
        }

        pub fn insert(&self, key: impl Borrow<K>, value: impl Borrow<V>, flags: u64) -> Result<(), i64> {
            let k = bytes(key.borrow()).to_vec();
            let entries = self.entries.get();
            let v = value.borrow();
            if let Some((_, old)) = entries.iter_mut().find(|(ek, _)| *ek == k) {
                if flags == u64::from(crate::bindings::BPF_NOEXIST) {
                    return Err(-17);
                }
                // SAFETY: same type; the map keeps its own copy, as the kernel's does.
                unsafe { core::ptr::copy(v as *const V, &mut **old as *mut V, 1) };
                return Ok(());
            }
            if flags == u64::from(crate::bindings::BPF_EXIST) {
                return Err(-2);
            }
            if entries.len() >= self.max as usize {
                if !LRU {
                    return Err(-7);
                }
                entries.remove(0);
            }
            let mut b = zeroed::<V>();
            // SAFETY: as above.
            unsafe { core::ptr::copy(v as *const V, &mut *b as *mut V, 1) };
            entries.push((k, b));
            Ok(())
        }

        pub fn remove(&self, key: impl Borrow<K>) -> Result<(), i64> {
            let k = bytes(key.borrow());
            let entries = self.entries.get();
            let before = entries.len();
            entries.retain(|(ek, _)| ek != k);
            if entries.len() == before {
                Err(-2)
            } else {
                Ok(())
            }
        }

        /// Host: every entry, as (key bytes, value).
        pub fn entries(&self) -> Vec<(Vec<u8>, &V)> {
            self.entries.get().iter().map(|(k, v)| (k.clone(), &**v)).collect()
        }

        pub fn clear(&self) {
            self.entries.get().clear();
        }
    }

    pub mod lpm_trie {
        #[repr(C, packed)]
        pub struct Key<K> {
            pub prefix_len: u32,
            pub data: K,
        }

        impl<K> Key<K> {
            pub const fn new(prefix_len: u32, data: K) -> Self {
                Self { prefix_len, data }
            }
        }
    }

    /// (prefix length in bits, key data, value).
    type Prefix<V> = (u32, Vec<u8>, Box<V>);

    /// Longest-prefix match as the kernel's trie does it: an entry of prefix length p matches a
    /// key whose prefix length is at least p and whose first p bits are the entry's.
    pub struct LpmTrie<K, V> {
        entries: Cell<Vec<Prefix<V>>>,
        _k: PhantomData<K>,
    }

    impl<K, V> LpmTrie<K, V> {
        pub const fn with_max_entries(_max_entries: u32, _flags: u32) -> Self {
            Self { entries: Cell::new(Vec::new()), _k: PhantomData }
        }

        fn split(key: &lpm_trie::Key<K>) -> (u32, &[u8]) {
            let b = bytes(key);
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            (len, &b[4..])
        }

        pub fn get(&self, key: impl Borrow<lpm_trie::Key<K>>) -> Option<&V> {
            let (len, data) = Self::split(key.borrow());
            let max_bits = 8 * data.len() as u32;
            let matches = |p: u32, d: &[u8]| {
                if p > len || p > max_bits {
                    return false;
                }
                let (full, rest) = ((p / 8) as usize, p % 8);
                d[..full] == data[..full] && (rest == 0 || (d[full] ^ data[full]) >> (8 - rest) == 0)
            };
            self.entries
                .get()
                .iter()
                .filter(|(p, d, _)| matches(*p, d))
                .max_by_key(|(p, _, _)| *p)
                .map(|(_, _, v)| &**v)
        }

        pub fn insert(
            &self,
            key: impl Borrow<lpm_trie::Key<K>>,
            value: impl Borrow<V>,
            _flags: u64,
        ) -> Result<(), i64> {
            let (len, data) = Self::split(key.borrow());
            let mut b = zeroed::<V>();
            // SAFETY: same type.
            unsafe { core::ptr::copy(value.borrow() as *const V, &mut *b as *mut V, 1) };
            let entries = self.entries.get();
            entries.retain(|(p, d, _)| !(*p == len && d[..] == data[..]));
            entries.push((len, data.to_vec(), b));
            Ok(())
        }

        pub fn clear(&self) {
            self.entries.get().clear();
        }
    }

    /// The ring buffer: reserved records are separate allocations (filled with 0xa5, as
    /// reserved ring memory is not zeroed), kept in order once submitted.
    pub struct RingBuf {
        size: u32,
        records: Cell<Vec<Vec<u8>>>,
        reserved: Cell<usize>,
    }

    pub struct RingBufEntry<T: 'static> {
        buf: Box<MaybeUninit<T>>,
        ring: *const RingBuf,
    }

    impl<T> core::ops::Deref for RingBufEntry<T> {
        type Target = MaybeUninit<T>;
        fn deref(&self) -> &MaybeUninit<T> {
            &self.buf
        }
    }

    impl<T> core::ops::DerefMut for RingBufEntry<T> {
        fn deref_mut(&mut self) -> &mut MaybeUninit<T> {
            &mut self.buf
        }
    }

    impl<T> RingBufEntry<T> {
        pub fn submit(self, _flags: u64) {
            // SAFETY: the ring is a static; the record is read as the bytes it holds.
            let ring = unsafe { &*self.ring };
            let b = unsafe {
                core::slice::from_raw_parts(self.buf.as_ptr() as *const u8, core::mem::size_of::<T>()).to_vec()
            };
            *ring.reserved.get() -= b.len();
            ring.records.get().push(b);
        }

        pub fn discard(self, _flags: u64) {
            let ring = unsafe { &*self.ring };
            *ring.reserved.get() -= core::mem::size_of::<T>();
        }
    }

    impl RingBuf {
        pub const fn with_byte_size(byte_size: u32, _flags: u32) -> Self {
            Self { size: byte_size, records: Cell::new(Vec::new()), reserved: Cell::new(0) }
        }

        fn used(&self) -> usize {
            self.records.get().iter().map(|r| r.len() + 8).sum::<usize>() + *self.reserved.get()
        }

        pub fn reserve<T: 'static>(&self, _flags: u64) -> Option<RingBufEntry<T>> {
            let n = core::mem::size_of::<T>();
            if self.used() + n + 8 > self.size as usize {
                return None;
            }
            *self.reserved.get() += n;
            let mut buf = Box::<T>::new_uninit();
            // SAFETY: n bytes of the allocation.
            unsafe { core::ptr::write_bytes(buf.as_mut_ptr() as *mut u8, 0xa5, n) };
            Some(RingBufEntry { buf, ring: self as *const RingBuf })
        }

        pub fn query(&self, _flags: u64) -> u64 {
            self.used() as u64
        }

        /// Host: the records submitted since the last call.
        pub fn take(&self) -> Vec<Vec<u8>> {
            std::mem::take(self.records.get())
        }
    }
}

pub mod btf_maps {
    use core::{ffi::c_void, marker::PhantomData};

    use crate::Cell;

    /// Socket-local storage: one zeroed value per socket (by its address), created on request.
    #[repr(C)]
    pub struct SkStorage<T> {
        raw: RawSkStorage,
        _t: PhantomData<T>,
    }

    /// The untyped part `bpf_sk_storage_get` reaches through the map pointer.
    #[repr(C)]
    pub struct RawSkStorage {
        size: usize,
        values: Cell<Vec<(usize, Box<[u64]>)>>,
    }

    impl<T> SkStorage<T> {
        pub const fn new() -> Self {
            Self {
                raw: RawSkStorage { size: core::mem::size_of::<T>(), values: Cell::new(Vec::new()) },
                _t: PhantomData,
            }
        }

        pub fn clear(&self) {
            self.raw.values.get().clear();
        }
    }

    impl<T> Default for SkStorage<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl RawSkStorage {
        pub(crate) fn get(&self, sk: usize, create: bool) -> *mut c_void {
            let values = self.values.get();
            if let Some((_, v)) = values.iter_mut().find(|(s, _)| *s == sk) {
                return v.as_mut_ptr() as *mut c_void;
            }
            if !create || sk == 0 {
                return core::ptr::null_mut();
            }
            values.push((sk, vec![0u64; self.size.div_ceil(8)].into_boxed_slice()));
            values.last_mut().map_or(core::ptr::null_mut(), |(_, v)| v.as_mut_ptr() as *mut c_void)
        }
    }
}
