//! Load the kernel programs, attach them, and read what they record.

pub mod btf;
mod clock;
pub mod privileges;
pub mod tracefs;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePoint,
};
use observer_common::{
    layout::TpLayout,
    lost,
    tcp::{Endpoint, PortCounters, TcpCounters},
};
pub use clock::mono_to_wall;
use tracefs::Needs;

use crate::events::{DestCounts, PortCounts, TcpSnapshot, endpoint_addr};

/// A signal observer cannot collect on this kernel, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Disabled {
    pub source: String,
    pub signals: &'static str,
    pub reason: String,
}

struct TpSpec {
    program: &'static str,
    global: &'static str,
    category: &'static str,
    name: &'static str,
    needs: Needs,
    signals: &'static str,
}

const ADDR: Needs = Needs { addresses: true, ..Needs::NONE };

const TRACEPOINTS: [TpSpec; 5] = [
    TpSpec {
        program: "inet_sock_set_state",
        global: "TP_SET_STATE",
        category: "sock",
        name: "inet_sock_set_state",
        needs: Needs { skaddr: true, set_state: true, protocol: true, ..ADDR },
        signals: "connect attempts, outcomes and connect latency",
    },
    TpSpec {
        program: "tcp_retransmit_skb",
        global: "TP_RETRANSMIT",
        category: "tcp",
        name: "tcp_retransmit_skb",
        needs: Needs { skaddr: true, state: true, ..ADDR },
        signals: "SYN and data retransmits",
    },
    TpSpec {
        program: "tcp_receive_reset",
        global: "TP_RECV_RESET",
        category: "tcp",
        name: "tcp_receive_reset",
        needs: Needs { skaddr: true, ..ADDR },
        signals: "resets received",
    },
    TpSpec {
        program: "tcp_send_reset",
        global: "TP_SEND_RESET",
        category: "tcp",
        name: "tcp_send_reset",
        needs: Needs { skaddr: true, ..ADDR },
        signals: "resets sent",
    },
    TpSpec {
        program: "tcp_retransmit_synack",
        global: "TP_RETRANS_SYNACK",
        category: "tcp",
        name: "tcp_retransmit_synack",
        needs: ADDR,
        signals: "SYN-ACK retransmits (server role)",
    },
];

/// Kernel map sizes.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    pub max_destinations: u32,
    pub max_connections: u32,
    pub max_ports: u32,
    pub ringbuf_bytes: u32,
}

pub struct Probe {
    // Dropping `ebpf` closes every program and link fd, which detaches them.
    _ebpf: Ebpf,
    dests: PerCpuHashMap<MapData, Endpoint, TcpCounters>,
    ports: PerCpuHashMap<MapData, u16, PortCounters>,
    lost: PerCpuArray<MapData, u64>,
    pub disabled: Vec<Disabled>,
    pub attached: Vec<String>,
    pub attach_time: Duration,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-ebpf"));

impl Probe {
    /// Load and attach everything this kernel supports. Returns the probe and the connect
    /// ring buffer (for the caller's event loop).
    pub fn start(cfg: ProbeConfig, tracefs: &Path) -> anyhow::Result<(Probe, RingBuf<MapData>)> {
        let started = Instant::now();
        let mut disabled = Vec::new();
        let mut layouts = Vec::new();
        for spec in &TRACEPOINTS {
            let layout = tracefs::read_format(tracefs, spec.category, spec.name)
                .map_err(|e| format!("tracepoint not available ({e})"))
                .and_then(|text| tracefs::build_layout(&tracefs::parse_format(&text), spec.needs));
            match layout {
                Ok(l) => layouts.push(l),
                Err(reason) => {
                    disabled.push(disable(spec, reason));
                    layouts.push(TpLayout::DISABLED);
                }
            }
        }

        let sk_err = match std::fs::read("/sys/kernel/btf/vmlinux") {
            Ok(blob) => btf::member_offset(&blob, "sock", "sk_err").map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot read /sys/kernel/btf/vmlinux: {e}")),
        };
        let sk_err = sk_err.unwrap_or_else(|reason| {
            disabled.push(Disabled {
                source: "btf:struct sock.sk_err".to_owned(),
                signals: "timed-out and unreachable connect classes (refusals still come from the RST; \
                          the rest count as aborted)",
                reason,
            });
            u32::MAX
        });

        let mut loader = EbpfLoader::new();
        for (spec, layout) in TRACEPOINTS.iter().zip(&layouts) {
            loader.override_global(spec.global, layout, true);
        }
        loader.override_global("SOCK_ERR_OFFSET", &sk_err, true);
        loader
            .map_max_entries("TCP_DESTS", cfg.max_destinations)
            .map_max_entries("TCP_PORTS", cfg.max_ports)
            .map_max_entries("CONNS", cfg.max_connections)
            .map_max_entries("CONNECT_EVENTS", cfg.ringbuf_bytes);
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading observer's eBPF object into the kernel failed")?;

        let mut attached = Vec::new();
        for (spec, layout) in TRACEPOINTS.iter().zip(&layouts) {
            if layout.enabled == 0 {
                continue;
            }
            match attach_tracepoint(&mut ebpf, spec) {
                Ok(()) => attached.push(format!("{}:{}", spec.category, spec.name)),
                Err(e) => disabled.push(disable(spec, format!("attach failed: {e:#}"))),
            }
        }
        if attached.is_empty() {
            anyhow::bail!("no tracepoint could be attached; see the lines above for each one");
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).with_context(|| format!("map {name} missing from the eBPF object"))
        };
        let dests = PerCpuHashMap::try_from(take(&mut ebpf, "TCP_DESTS")?)?;
        let ports = PerCpuHashMap::try_from(take(&mut ebpf, "TCP_PORTS")?)?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, "LOST")?)?;
        let ring = RingBuf::try_from(take(&mut ebpf, "CONNECT_EVENTS")?)?;
        let probe = Probe { _ebpf: ebpf, dests, ports, lost, disabled, attached, attach_time: started.elapsed() };
        Ok((probe, ring))
    }

    /// Since-start counters for every destination and local port the kernel still holds.
    pub fn snapshot(&self) -> TcpSnapshot {
        let mut snap = TcpSnapshot::default();
        // Entries can be evicted while we iterate; a failed lookup just skips that entry.
        for (key, per_cpu) in self.dests.iter().flatten() {
            let mut sum: DestCounts = [0; observer_common::tcp::dest_counter::COUNT];
            for v in per_cpu.iter() {
                for (s, c) in sum.iter_mut().zip(v.c) {
                    *s += c;
                }
            }
            snap.dests.push((endpoint_addr(&key), sum));
        }
        for (port, per_cpu) in self.ports.iter().flatten() {
            let mut sum: PortCounts = [0; observer_common::tcp::port_counter::COUNT];
            for v in per_cpu.iter() {
                for (s, c) in sum.iter_mut().zip(v.c) {
                    *s += c;
                }
            }
            snap.ports.push((port, sum));
        }
        snap
    }

    /// Kernel-side lost-event counters, summed over CPUs, in `lost::NAMES` order.
    pub fn lost_counts(&self) -> [u64; lost::COUNT as usize] {
        let mut out = [0u64; lost::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.lost.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}

fn disable(spec: &TpSpec, reason: String) -> Disabled {
    Disabled { source: format!("{}:{}", spec.category, spec.name), signals: spec.signals, reason }
}

fn attach_tracepoint(ebpf: &mut Ebpf, spec: &TpSpec) -> anyhow::Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(spec.program)
        .with_context(|| format!("program {} missing from the eBPF object", spec.program))?
        .try_into()?;
    prog.load().with_context(|| format!("the verifier rejected {}", spec.program))?;
    prog.attach(spec.category, spec.name)?;
    Ok(())
}

