//! Field offsets of the kernel structs the programs walk (task_struct -> mm -> exe_file -> inode
//! -> super_block, and linux_binprm -> filename), read from the running kernel's BTF. aya-ebpf has no CO-RE relocation, and
//! hard-coded offsets break with every kernel build, so the agent computes them at load time and
//! hands them to the programs through the CONFIG map.

use std::path::Path;

use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF: struct `{strukt}` has no field `{field}`")]
    NoField { strukt: &'static str, field: &'static str },
    #[error("kernel BTF: {0}")]
    Parse(#[from] btf_rs::Error),
}

pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    // Read into memory first: btf-rs's file backend seeks for every string, which makes walking
    // sk_buff's nested anonymous members take tens of seconds.
    let bytes = std::fs::read(path).map_err(|e| BtfError::Read {
        path: path.display().to_string(),
        source: btf_rs::Error::Format(e.to_string()),
    })?;
    let btf = Btf::from_bytes(&bytes).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
    Ok(KernelOffsets {
        task_mm: field_offset(&btf, "task_struct", "mm")?,
        mm_exe_file: field_offset(&btf, "mm_struct", "exe_file")?,
        file_inode: field_offset(&btf, "file", "f_inode")?,
        inode_ino: field_offset(&btf, "inode", "i_ino")?,
        inode_sb: field_offset(&btf, "inode", "i_sb")?,
        sb_dev: field_offset(&btf, "super_block", "s_dev")?,
        binprm_filename: field_offset(&btf, "linux_binprm", "filename")?,
        task_start_time: field_offset(&btf, "task_struct", "start_time")?,
        task_group_leader: field_offset(&btf, "task_struct", "group_leader")?,
        task_comm: field_offset(&btf, "task_struct", "comm")?,
        valid: 1,
        _pad: 0,
        skb_ip_summed_bit: field_bit_offset(&btf, "sk_buff", "ip_summed").unwrap_or(u32::MAX),
        task_pid: field_offset(&btf, "task_struct", "pid")?,
        task_tgid: field_offset(&btf, "task_struct", "tgid")?,
        task_signal: field_offset(&btf, "task_struct", "signal")?,
        signal_live: field_offset(&btf, "signal_struct", "live")?,
        mm_env_start: field_offset(&btf, "mm_struct", "env_start")?,
        mm_env_end: field_offset(&btf, "mm_struct", "env_end")?,
        task_ptrace: field_offset(&btf, "task_struct", "ptrace")?,
        inode_generation: field_offset(&btf, "inode", "i_generation")?,
        _pad3: 0,
    })
}

/// Bit offset of `field` (a bitfield) in `struct strukt`.
fn field_bit_offset(btf: &Btf, strukt: &'static str, field: &'static str) -> Result<u32, BtfError> {
    for t in btf.resolve_types_by_name(strukt)? {
        if let Type::Struct(s) = t {
            if let Some(bits) = find_member(btf, &s, field, 0)? {
                return Ok(bits);
            }
        }
    }
    Err(BtfError::NoField { strukt, field })
}

/// Byte offset of `field` in `struct strukt`, looking through anonymous struct/union members
/// (mm_struct keeps all its fields in one).
fn field_offset(btf: &Btf, strukt: &'static str, field: &'static str) -> Result<u32, BtfError> {
    let types = btf.resolve_types_by_name(strukt)?;
    // Several types may share the name (a forward declaration, a struct); take the one that has
    // members and the field.
    for t in types {
        if let Type::Struct(s) = t {
            if let Some(bits) = find_member(btf, &s, field, 0)? {
                return Ok(bits / 8);
            }
        }
    }
    Err(BtfError::NoField { strukt, field })
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Result<Option<u32>, BtfError> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == field {
            return Ok(Some(bits));
        }
        if name.is_empty() {
            let mut ty = btf.resolve_chained_type(m)?;
            // Qualifiers and typedefs can wrap an anonymous aggregate.
            loop {
                ty = match &ty {
                    Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) => match ty.as_btf_type()
                    {
                        Some(t) => btf.resolve_chained_type(t)?,
                        None => break,
                    },
                    _ => break,
                };
            }
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some(found) = find_member(btf, inner, field, bits)? {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF: the one the agent will load against.
    #[test]
    fn offsets_from_running_kernel_are_plausible() {
        let o =
            kernel_offsets(Path::new(VMLINUX)).expect("kernel BTF present (Linux >= 5.4 with CONFIG_DEBUG_INFO_BTF)");
        assert_eq!(o.valid, 1);
        // Each pointer field sits inside its struct, at a pointer-aligned offset.
        for off in [o.task_mm, o.mm_exe_file, o.file_inode, o.inode_sb, o.binprm_filename] {
            assert!(off > 0 && off.is_multiple_of(8) && off < 16384, "{o:?}");
        }
        assert!(o.inode_ino.is_multiple_of(8), "{o:?}");
        assert!(o.skb_ip_summed_bit > 64 && o.skb_ip_summed_bit < 8 * 512, "{o:?}");
    }
}
