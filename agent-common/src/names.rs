//! Names the agent assigns ids to (domain patterns, vendors), kept with the pinned maps so that
//! an agent adopting a running datapath gives every id the meaning the kernel's tables already
//! use: an address learnt under pattern 7 stays learnt under the same pattern, a block of vendor
//! 3 stays a block of the same vendor. The programs never read these maps.

/// Ids named at once, in each of `DOMAIN_NAMES` and `VENDOR_NAMES`.
pub const MAX_NAMES: u32 = 1 << 16;

/// A name, NUL-padded (a domain pattern is at most 255 bytes, a vendor name at most 63).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdName {
    pub bytes: [u8; 256],
}

impl IdName {
    /// `None` when `s` does not fit.
    pub fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() > 255 {
            return None;
        }
        let mut bytes = [0u8; 256];
        bytes[..b.len()].copy_from_slice(b);
        Some(IdName { bytes })
    }

    pub fn as_str(&self) -> Option<&str> {
        let end = self.bytes.iter().position(|&b| b == 0).unwrap_or(self.bytes.len());
        core::str::from_utf8(&self.bytes[..end]).ok()
    }
}
