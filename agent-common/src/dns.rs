//! DNS wire parsing shared by the kernel programs and the host.
//!
//! The kernel runs each step below from a `bpf_loop` callback with its state in map memory: a
//! plain loop over a whole message exceeds the verifier's instruction budget, and a position kept
//! in map memory is not tracked by it. The host runs the very same steps in a plain loop
//! (`agent::dns::wire`), so the unit tests and the fuzzing exercise the logic the kernel runs.
//!
//! Every index into a buffer is masked to the buffer's size, and every packet read goes through
//! [`Packet::load`] with a length of at most [`CHUNK`]: that is what lets the verifier prove the
//! accesses safe, and it makes the host build panic-free on any input.

/// The DNS port: queries to it are recorded, answers from it parsed.
pub const PORT: u16 = 53;
pub const HEADER_LEN: u32 = 12;
/// Wire-form names: 255 bytes at most, with the final 0.
pub const NAME_MAX: u32 = 255;
/// Size of a name as stored in maps and events (zero-padded wire form).
pub const NAME_BUF: usize = 256;
/// Scratch for a name being parsed: a power of two with room for one label past `NAME_BUF`.
pub const NAME_SCRATCH: usize = 512;
pub const LABEL_MAX: u32 = 63;
/// Bytes one packet read may copy.
pub const CHUNK: usize = 64;
/// Steps of a name parse: one per label, a name has at most 127.
pub const NAME_STEPS: u32 = 128;
/// Answer records read per message; the rest are left unread and the answer is flagged.
pub const MAX_RECORDS: u32 = 512;
/// Steps of an answer walk: one per owner-name label and one per record.
pub const RR_STEPS: u32 = 4096;
/// Steps of a checksum: one per [`CHUNK`] bytes of a 64 KiB datagram.
pub const CSUM_STEPS: u32 = 1025;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

/// Header flag bits (second 16-bit word).
pub const FLAG_QR: u16 = 0x8000;
pub const OPCODE_MASK: u16 = 0x7800;
pub const RCODE_MASK: u16 = 0x000f;

/// [`Cursor::status`] values.
pub mod status {
    pub const RUNNING: u32 = 0;
    pub const DONE: u32 = 1;
    /// The message is malformed (or uses something a question may not: compression, long names).
    pub const BAD: u32 = 2;
    /// A limit stopped the walk; what was read is valid, the rest unread.
    pub const LIMIT: u32 = 3;
}

/// Bytes of a packet at absolute offsets (the kernel: `bpf_skb_load_bytes`; the host: a slice).
pub trait Packet {
    /// Copies `len` (at most [`CHUNK`]) bytes at `off` into the start of `dst`; false if they
    /// are not all inside the packet.
    fn load(&self, off: u32, dst: &mut [u8; CHUNK], len: u32) -> bool;
}

/// Where a parse is. `#[repr(C)]` because the kernel keeps it in a per-CPU map value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Packet offset of the next byte to read.
    pub off: u32,
    /// End of the DNS message in the packet (exclusive).
    pub end: u32,
    /// Bytes of `name` written so far (with the final 0 once done).
    pub name_len: u32,
    /// [`status`].
    pub status: u32,
    /// Answer walk: records left to read.
    pub left: u32,
    /// Answer walk: 1 while reading an owner name.
    pub in_name: u32,
    /// Key building: forward position of the next label of `name`.
    pub rpos: u32,
    pub _pad: u32,
    /// Checksum: ones'-complement sum so far (folded at the end).
    pub sum: u64,
}

/// The state of one parse.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ParseState {
    pub cur: Cursor,
    pub tmp: [u8; CHUNK],
    /// The name read, in wire form, lowercase (ASCII letters only: DNS is case-insensitive).
    pub name: [u8; NAME_SCRATCH],
    /// Prefix length in bits for the trie lookup: with `rkey` right after it, the two form the
    /// kernel's LPM key (`{ u32 prefixlen; u8 data[256]; }`) in place.
    pub key_bits: u32,
    /// The name's trie key: labels in reverse order, then a 0 byte (see `DomainValue`).
    pub rkey: [u8; NAME_BUF],
}

impl ParseState {
    pub const fn zeroed() -> Self {
        Self {
            cur: Cursor { off: 0, end: 0, name_len: 0, status: 0, left: 0, in_name: 0, rpos: 0, _pad: 0, sum: 0 },
            tmp: [0; CHUNK],
            name: [0; NAME_SCRATCH],
            key_bits: 0,
            rkey: [0; NAME_BUF],
        }
    }

    /// Starts a name parse at `off` of a message ending at `end`. The buffers are not cleared
    /// (the kernel would pay a byte loop for it): bytes past `name_len` are stale.
    #[inline(always)]
    pub fn start_name(&mut self, off: u32, end: u32) {
        self.cur = Cursor { off, end, ..Cursor::default() };
    }
}

/// One step of reading an uncompressed name (a question's): one label. Returns true when the
/// parse is over (`status` says how).
#[inline(always)]
pub fn name_step<P: Packet>(p: &P, st: &mut ParseState) -> bool {
    let c = &mut st.cur;
    if !p.load(c.off, &mut st.tmp, 1) {
        c.status = status::BAD;
        return true;
    }
    let l = u32::from(st.tmp[0]);
    let pos = c.name_len;
    if l == 0 {
        st.name[(pos as usize) & (NAME_SCRATCH - 1)] = 0;
        c.name_len = pos + 1;
        c.off += 1;
        c.status = if c.off <= c.end { status::DONE } else { status::BAD };
        return true;
    }
    // Compression pointers cannot occur in a question (nothing precedes it to point at) and
    // extended label types are obsolete: both are malformed here.
    if l > LABEL_MAX || pos + 1 + l + 1 > NAME_MAX || c.off + 1 + l > c.end {
        c.status = status::BAD;
        return true;
    }
    if !p.load(c.off + 1, &mut st.tmp, l) {
        c.status = status::BAD;
        return true;
    }
    st.name[(pos as usize) & (NAME_SCRATCH - 1)] = l as u8;
    // Branch-free on purpose: a condition per byte would make the verifier walk one path per
    // label length. All CHUNK bytes are written, those past the label as 0, which keeps the
    // name zero-padded (the next label overwrites them).
    let mut j = 0usize;
    while j < CHUNK {
        let b = st.tmp[j];
        st.name[(pos as usize + 1 + j) & (NAME_SCRATCH - 1)] = b.wrapping_add(to_lower_delta(b)) & keep(j as u32, l);
        j += 1;
    }
    c.name_len = pos + 1 + l;
    c.off += 1 + l;
    false
}

/// One step of building the trie key of the parsed name: places one label at its mirrored
/// position. Returns true when the key is complete (`name_len` bytes, ending with 0).
#[inline(always)]
pub fn rkey_step(st: &mut ParseState) -> bool {
    let c = &mut st.cur;
    // Bytes of the name without its final 0.
    let t = c.name_len.saturating_sub(1);
    let p = c.rpos;
    if p >= t || p >= NAME_MAX {
        st.rkey[(t as usize) & (NAME_BUF - 1)] = 0;
        st.key_bits = 8 * (t + 1);
        return true;
    }
    let l = u32::from(st.name[(p as usize) & (NAME_SCRATCH - 1)]);
    if l == 0 || p + 1 + l > t {
        // Cannot happen for a name from `name_step`; stop rather than write garbage.
        c.status = status::BAD;
        return true;
    }
    let dst = t - p - 1 - l;
    // Branch-free (see `name_step`): bytes past the label keep what is there.
    let mut j = 0usize;
    while j < CHUNK {
        let k = keep(j as u32, l + 1);
        let at = (dst as usize + j) & (NAME_BUF - 1);
        st.rkey[at] = (st.name[(p as usize + j) & (NAME_SCRATCH - 1)] & k) | (st.rkey[at] & !k);
        j += 1;
    }
    c.rpos = p + 1 + l;
    false
}

/// What one step of an answer walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rr {
    /// Nothing to act on; call again.
    Continue,
    /// An address record of class IN (`family` 2 or 10): the address is in `tmp` (IPv4: its
    /// first 4 bytes). Not returned by value: the kernel's callback frame has no room for it.
    Addr { family: u8, ttl: u32 },
    /// The walk is over (`status` says how).
    Stop,
}

/// One step of walking the answer section: one owner-name label, or one record's fixed part.
/// Start with `off` at the first answer, `left` = ANCOUNT, `in_name` = 1.
#[inline(always)]
pub fn rr_step<P: Packet>(p: &P, st: &mut ParseState) -> Rr {
    let c = &mut st.cur;
    if c.left == 0 {
        c.status = status::DONE;
        return Rr::Stop;
    }
    if c.in_name != 0 {
        if !p.load(c.off, &mut st.tmp, 1) {
            c.status = status::BAD;
            return Rr::Stop;
        }
        let l = u32::from(st.tmp[0]);
        if l == 0 {
            c.off += 1;
            c.in_name = 0;
        } else if l & 0xc0 == 0xc0 {
            // A compression pointer ends the name; where it points is not needed.
            c.off += 2;
            c.in_name = 0;
        } else if l > LABEL_MAX {
            c.status = status::BAD;
            return Rr::Stop;
        } else {
            c.off += 1 + l;
        }
        if c.off > c.end {
            c.status = status::BAD;
            return Rr::Stop;
        }
        return Rr::Continue;
    }
    if !p.load(c.off, &mut st.tmp, 10) {
        c.status = status::BAD;
        return Rr::Stop;
    }
    let t = &st.tmp;
    let rtype = u16::from_be_bytes([t[0], t[1]]);
    let class = u16::from_be_bytes([t[2], t[3]]);
    let ttl = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let rdlen = u32::from(u16::from_be_bytes([t[8], t[9]]));
    let rd = c.off + 10;
    if rd + rdlen > c.end {
        c.status = status::BAD;
        return Rr::Stop;
    }
    c.off = rd + rdlen;
    c.left -= 1;
    c.in_name = 1;
    if class != CLASS_IN {
        return Rr::Continue;
    }
    let family = match (rtype, rdlen) {
        (TYPE_A, 4) => 2u8,
        (TYPE_AAAA, 16) => 10u8,
        _ => return Rr::Continue,
    };
    if !p.load(rd, &mut st.tmp, rdlen) {
        c.status = status::BAD;
        return Rr::Stop;
    }
    // TTLs are unsigned 31-bit (RFC 2181): a set top bit means 0.
    let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
    Rr::Addr { family, ttl }
}

/// One step of the ones'-complement sum of bytes `off..end`: up to [`CHUNK`] bytes. Returns true
/// when done (`status` DONE, or BAD if the bytes could not be read).
#[inline(always)]
pub fn csum_step<P: Packet>(p: &P, st: &mut ParseState) -> bool {
    let c = &mut st.cur;
    if c.off >= c.end {
        c.status = status::DONE;
        return true;
    }
    let n = if c.end - c.off > CHUNK as u32 { CHUNK as u32 } else { c.end - c.off };
    if !p.load(c.off, &mut st.tmp, n) {
        c.status = status::BAD;
        return true;
    }
    // Branch-free (see `name_step`): bytes past `n` count as 0.
    let mut j = 0usize;
    while j < CHUNK {
        let b0 = u64::from(st.tmp[j] & keep(j as u32, n));
        let b1 = u64::from(st.tmp[j + 1] & keep(j as u32 + 1, n));
        c.sum += (b0 << 8) | b1;
        j += 2;
    }
    c.off += n;
    false
}

/// 0xff if `j < n`, else 0, for `j, n` below 2^31, computed without a branch. The value goes
/// through `black_box` because the compiler would otherwise turn it back into a comparison and a
/// branch, which is what the callers avoid.
#[inline(always)]
pub fn keep(j: u32, n: u32) -> u8 {
    // Opaque inputs: from `n < 2^31` the compiler would prove the shift a comparison.
    let (j, n) = (core::hint::black_box(j), core::hint::black_box(n));
    ((j.wrapping_sub(n) >> 31) as u8).wrapping_neg()
}

/// 32 if `b` is an ASCII capital, else 0, without a branch (see [`keep`]).
#[inline(always)]
fn to_lower_delta(b: u8) -> u8 {
    let x = core::hint::black_box(u32::from(b.wrapping_sub(b'A')));
    ((x.wrapping_sub(26) >> 31) as u8) * 32
}

/// Folds a ones'-complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    let mut i = 0;
    while i < 4 {
        sum = (sum & 0xffff) + (sum >> 16);
        i += 1;
    }
    sum as u16
}

/// The 16-bit words of a UDP/TCP pseudo-header (addresses, protocol, length), summed.
#[inline(always)]
pub fn pseudo_sum(src: &[u8; 16], dst: &[u8; 16], addr_len: usize, proto: u8, l4_len: u32) -> u64 {
    let mut sum = 0u64;
    let mut i = 0usize;
    while i < 16 {
        if i < addr_len {
            sum += u64::from(u16::from_be_bytes([src[i], src[i + 1]]));
            sum += u64::from(u16::from_be_bytes([dst[i], dst[i + 1]]));
        }
        i += 2;
    }
    sum + u64::from(proto) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// The fixed header of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

#[inline(always)]
pub fn header<P: Packet>(p: &P, off: u32, tmp: &mut [u8; CHUNK]) -> Option<Header> {
    if !p.load(off, tmp, HEADER_LEN) {
        return None;
    }
    Some(Header {
        id: u16::from_be_bytes([tmp[0], tmp[1]]),
        flags: u16::from_be_bytes([tmp[2], tmp[3]]),
        qdcount: u16::from_be_bytes([tmp[4], tmp[5]]),
        ancount: u16::from_be_bytes([tmp[6], tmp[7]]),
        nscount: u16::from_be_bytes([tmp[8], tmp[9]]),
        arcount: u16::from_be_bytes([tmp[10], tmp[11]]),
    })
}

/// Whether a query is exactly one question, optionally followed by one EDNS0 OPT record, and
/// nothing else up to `end` (`after`: the end of the question). Anything more — answer or
/// authority records, other additional records, bytes after the message (a second query in
/// the same TCP segment, or in the same GSO datagram) — could carry names or data past a check
/// that reads only the question, so such a query counts as one that does not parse.
#[inline(always)]
pub fn query_is_exact<P: Packet>(p: &P, h: &Header, after: u32, end: u32, tmp: &mut [u8; CHUNK]) -> bool {
    if h.ancount != 0 || h.nscount != 0 {
        return false;
    }
    match h.arcount {
        0 => after == end,
        1 => {
            // OPT: root name (0), TYPE 41, CLASS, TTL, RDLENGTH, RDATA.
            if !p.load(after, tmp, 11) || tmp[0] != 0 || u16::from_be_bytes([tmp[1], tmp[2]]) != TYPE_OPT {
                return false;
            }
            after + 11 + u32::from(u16::from_be_bytes([tmp[9], tmp[10]])) == end
        }
        _ => false,
    }
}

/// QTYPE and QCLASS after a question's name.
#[inline(always)]
pub fn qtype_qclass<P: Packet>(p: &P, off: u32, tmp: &mut [u8; CHUNK]) -> Option<(u16, u16)> {
    if !p.load(off, tmp, 4) {
        return None;
    }
    Some((u16::from_be_bytes([tmp[0], tmp[1]]), u16::from_be_bytes([tmp[2], tmp[3]])))
}
