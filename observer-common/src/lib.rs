//! Events, map keys and map values that cross the kernel/userspace boundary.
//!
//! Everything here is `#[repr(C)]`, has no implicit padding (the verifier rejects reads of
//! uninitialised stack bytes in map keys), and is `no_std`. The `user` feature adds the
//! `aya::Pod` impls that userspace needs to read maps.
#![no_std]

pub mod dns;
pub mod layout;
pub mod lost;
pub mod tcp;

#[cfg(feature = "user")]
mod pod {
    use crate::{dns::DnsCounters, layout::TpLayout, tcp::*};
    // SAFETY: all of these are #[repr(C)], Copy, with no padding and no pointers.
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for TcpCounters {}
    unsafe impl aya::Pod for PortCounters {}
    unsafe impl aya::Pod for TpLayout {}
    unsafe impl aya::Pod for DnsCounters {}
}
