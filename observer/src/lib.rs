//! observer's pipeline as a library: capture (probe) -> events -> aggregate (layers) ->
//! verdict -> present. The binary (main.rs) parses the command line and runs it; the fuzz
//! targets (fuzz/) feed packet and event bytes to the parsers.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod heap;
pub mod layers;
pub mod pipeline;
pub mod present;
pub mod probe;
pub mod run;
pub mod source;
pub mod verdict;
