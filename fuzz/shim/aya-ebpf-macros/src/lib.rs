//! `#[map]` and `#[btf_map]` for the host build of the kernel programs: the statics they mark
//! are host maps already (see the `aya-ebpf` shim), so the attributes leave them as they are.

use proc_macro::TokenStream;

#[proc_macro_attribute]
pub fn map(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

#[proc_macro_attribute]
pub fn btf_map(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
