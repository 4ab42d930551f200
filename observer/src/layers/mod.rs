//! One module per triage layer. Each turns events into per-destination aggregates; none of
//! them knows about the kernel or the screen.

pub mod connect;
pub mod dns;
pub mod latency;
pub mod window;
