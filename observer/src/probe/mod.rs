//! Load the kernel programs, attach them, and read what they record.

pub mod btf;
mod batch;
mod dirty;
mod clock;
mod dns_rings;
pub mod interfaces;
pub mod live;
mod memory;
pub mod privileges;
mod recursion;
pub mod route;
pub mod routes;
pub mod sockets;
pub mod ssl;
pub mod tables;
pub mod tc_attach;
mod tc_hooks;
pub mod tracefs;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePoint, SchedClassifier, TracePoint},
};
use observer_common::{
    dns::{DnsCounters, IfaceCounters, MAX_EXTRA_PORTS},
    layout::TpLayout,
    lost,
    route::{DropCounters, DropKey},
    tcp::{Endpoint, PortCounters, TcpCounters},
};
pub use clock::monotonic_ns;
use tracefs::Needs;

pub use crate::events::Disabled;
use crate::events::{DnsSnapshot, TcpSnapshot, endpoint_addr};
use tc_attach::TcAttach;
use tc_hooks::TcHooks;

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

/// Kernel map sizes and what to watch.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub max_destinations: u32,
    pub max_connections: u32,
    pub max_ports: u32,
    pub ringbuf_bytes: u32,
    pub max_resolvers: u32,
    pub dns_ringbuf_bytes: u32,
    pub max_tls_flows: u32,
    pub tls_ringbuf_bytes: u32,
    pub http_ringbuf_bytes: u32,
    /// Attach uprobes to OpenSSL for HTTPS plaintext.
    pub ssl_uprobes: bool,
    /// DNS ports besides 53.
    pub dns_ports: Vec<u16>,
    /// Watch only these interfaces (empty: all that are up).
    pub interfaces: Vec<String>,
    /// Also attach an empty TC program beside the DNS ones (benchmark baseline).
    pub tc_baseline: bool,
    /// Attach only the empty TC program (benchmark baseline).
    pub tc_empty_only: bool,
    /// TCX links or classic clsact filters.
    pub tc_attach: TcAttach,
    /// How often a live TCP connection is sampled for loss and RTT.
    pub sample_every: Duration,
}

/// The ring buffers the event loop polls.
pub struct Rings {
    pub connect: RingBuf<MapData>,
    /// Written by the even CPUs and by the odd ones (see the kernel's DNS_EVENTS_1).
    pub dns: [RingBuf<MapData>; 2],
    pub tls: RingBuf<MapData>,
    pub http: RingBuf<MapData>,
    pub icmp: RingBuf<MapData>,
    pub route: RingBuf<MapData>,
}

pub struct Probe {
    // Dropping `ebpf` closes every program and link fd, which detaches them.
    ebpf: Ebpf,
    dests: PerCpuHashMap<MapData, Endpoint, TcpCounters>,
    ports: PerCpuHashMap<MapData, u16, PortCounters>,
    resolvers: PerCpuHashMap<MapData, Endpoint, DnsCounters>,
    ifaces: PerCpuHashMap<MapData, u32, IfaceCounters>,
    drops: PerCpuHashMap<MapData, DropKey, DropCounters>,
    lost: PerCpuArray<MapData, u64>,
    /// The counter tables' fds, for whole-map batch reads (see [`batch`]).
    whole: WholeMaps,
    /// The destinations the programs marked as changed (see [`dirty`]).
    dest_marks: std::os::fd::OwnedFd,
    /// Marks that did not fit.
    dest_marks_full: PerCpuArray<MapData, u64>,
    dest_plan: std::cell::Cell<dirty::Plan>,
    dest_capacity: usize,
    /// Entries created and removed per LRU table (see [`tables`]).
    tables: PerCpuArray<MapData, u64>,
    table_capacity: tables::Capacity,
    /// `lost` keys for each program's skipped runs, made once (a handful of programs).
    recursion_keys: Vec<(String, &'static str)>,
    /// Signals this kernel cannot give (fixed at start); see [`Probe::disabled`].
    disabled: Vec<Disabled>,
    pub attached: Vec<String>,
    pub attach_time: Duration,
    /// The TC program's links; `None` when the kernel rejected the program. After `ebpf`:
    /// fields drop in order, and the qdiscs it owns go after the links.
    tc: Option<TcHooks>,
    /// OpenSSL uprobes; `None` when they are off or could not load.
    ssl: Option<ssl::SslProbes>,
    /// Intervals until the next scan of the processes for libssl files.
    ssl_scan_in: u32,
    /// The running kernel's names of its drop reasons.
    pub drop_reasons: route::DropReasons,
}

/// Scan the processes for new libssl files once per this many intervals: reading every
/// process's maps is not free on a busy host.
const SSL_SCAN_EVERY: u32 = 5;

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-ebpf"));

/// The object is parsed once, at load (aya copies what it keeps), yet its pages would stay
/// resident for the whole run: 1.5 MiB of a busy node's RSS. They are file-backed and never
/// written, so dropping them loses nothing (a later read faults them in from the binary).
fn release_object_pages() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let start = EBPF_OBJECT.as_ptr() as usize;
    let (first, end) = (start.next_multiple_of(page), (start + EBPF_OBJECT.len()) / page * page);
    if end > first {
        // SAFETY: whole pages inside the object's bytes, which are read-only and mapped from
        // the binary: MADV_DONTNEED only drops their resident copies.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
    }
}

impl Probe {
    /// Load and attach everything this kernel supports. Returns the probe and the connect
    /// ring buffer (for the caller's event loop).
    pub fn start(cfg: &ProbeConfig, tracefs: &Path) -> anyhow::Result<(Probe, Rings)> {
        let started = Instant::now();
        let mut disabled = Vec::new();
        let mut layouts = Vec::new();
        // Tests point this at a copy with a tracepoint missing, to exercise the kernel-without-
        // a-tracepoint path on a kernel that has them all. Attaching still uses the real tracefs.
        let formats = std::env::var_os("OBSERVER_TRACEFS_FORMATS").map(std::path::PathBuf::from);
        let formats = formats.as_deref().unwrap_or(tracefs);
        for spec in &TRACEPOINTS {
            let layout = tracefs::read_format(formats, spec.category, spec.name)
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

        let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux");
        let sk_err = match &vmlinux {
            Ok(blob) => btf::member_offset(blob, "sock", "sk_err").map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot read /sys/kernel/btf/vmlinux: {e}")),
        };
        // Without it the OpenSSL probes still work; userspace then finds sockets in /proc,
        // which misses connections that close within a drain interval.
        let sock_layout = vmlinux.as_ref().ok().and_then(|blob| ssl::sock_layout(blob).ok()).unwrap_or_default();
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
        let sk_err_soft =
            vmlinux.as_ref().ok().and_then(|blob| btf::member_offset(blob, "sock", "sk_err_soft").ok()).unwrap_or(u32::MAX);
        loader.override_global("SOCK_ERR_SOFT_OFFSET", &sk_err_soft, true);
        let err_queue = vmlinux.as_ref().ok().and_then(|blob| btf::error_queue_layout(blob).ok()).unwrap_or([u32::MAX; 4]);
        loader.override_global("ERR_QUEUE_LAYOUT", &err_queue, true);
        loader.override_global("SOCK_LAYOUT", &sock_layout, true);
        let tcp_sock_layout = route::tcp_sock_layout(vmlinux.as_ref().ok().map(Vec::as_slice)).unwrap_or_else(|reason| {
            disabled.push(route::older_disabled(reason));
            Default::default()
        });
        loader.override_global("TCP_SOCK_LAYOUT", &tcp_sock_layout, true);
        let drops = route::drop_layout(formats, vmlinux.as_ref().ok().map(Vec::as_slice));
        let (drop_layout, drop_reasons) = match drops {
            Ok(d) => d,
            Err(reason) => {
                disabled.push(route::drops_disabled(reason));
                Default::default()
            }
        };
        loader.override_global("DROP_LAYOUT", &drop_layout, true);
        let connect_layout = route::connect_layout(formats).unwrap_or_else(|reason| {
            disabled.push(route::connects_disabled(reason));
            Default::default()
        });
        loader.override_global("CONNECT_SYSCALL_LAYOUT", &connect_layout, true);
        let sample_every = u64::try_from(cfg.sample_every.as_nanos()).unwrap_or(u64::MAX).max(100_000_000);
        loader.override_global("SAMPLE_EVERY_NS", &sample_every, true);
        // Connects that end in the first seconds may have started before the programs ran.
        let loaded_ns = monotonic_ns();
        loader.override_global("LOADED_NS", &loaded_ns, true);
        let mut extra_ports = [0u16; MAX_EXTRA_PORTS as usize];
        for (slot, port) in extra_ports.iter_mut().zip(&cfg.dns_ports) {
            *slot = *port;
        }
        loader.override_global("DNS_EXTRA_PORTS", &extra_ports, true);
        let extra_port_count = cfg.dns_ports.len().min(MAX_EXTRA_PORTS as usize) as u32;
        loader.override_global("DNS_EXTRA_PORT_COUNT", &extra_port_count, true);
        // Wake userspace when a quarter of the ring may be waiting (each CPU wakes it once per
        // its share); it drains on a timer otherwise.
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u64;
        let wakeup_bytes = (u64::from(cfg.dns_ringbuf_bytes) / 4 / cpus).max(4096);
        loader.override_global("DNS_WAKEUP_BYTES", &wakeup_bytes, true);
        let connect_wakeup_bytes = (u64::from(cfg.ringbuf_bytes) / 4 / cpus).max(256);
        loader.override_global("CONNECT_WAKEUP_BYTES", &connect_wakeup_bytes, true);
        let tls_wakeup_bytes = (u64::from(cfg.tls_ringbuf_bytes) / 4 / cpus).max(1024);
        loader.override_global("TLS_WAKEUP_BYTES", &tls_wakeup_bytes, true);
        let http_wakeup_bytes = (u64::from(cfg.http_ringbuf_bytes) / 4 / cpus).max(1024);
        loader.override_global("HTTP_WAKEUP_BYTES", &http_wakeup_bytes, true);
        loader
            .map_max_entries("TCP_DESTS", cfg.max_destinations)
            // Destinations changed in one interval; one more is a sweep, not a loss.
            .map_max_entries("DEST_DIRTY", (cfg.max_destinations / 4).max(1024))
            .map_max_entries("TCP_PORTS", cfg.max_ports)
            .map_max_entries("CONNS", cfg.max_connections)
            // Established connections outnumber connects in flight.
            .map_max_entries("TCP_SOCKS", cfg.max_connections.saturating_mul(2))
            .map_max_entries("OLD_SOCKS", cfg.max_connections)
            .map_max_entries("CONNECT_EVENTS", cfg.ringbuf_bytes)
            .map_max_entries("DNS_RESOLVERS", cfg.max_resolvers)
            .map_max_entries("DNS_EVENTS", cfg.dns_ringbuf_bytes)
            .map_max_entries("DNS_EVENTS_1", cfg.dns_ringbuf_bytes)
            .map_max_entries("TLS_FLOWS", cfg.max_tls_flows)
            .map_max_entries("TLS_EVENTS", cfg.tls_ringbuf_bytes)
            .map_max_entries("HTTP_EVENTS", cfg.http_ringbuf_bytes);
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading observer's eBPF object into the kernel failed")?;
        release_object_pages();

        let mut attached = Vec::new();
        for (spec, layout) in TRACEPOINTS.iter().zip(&layouts) {
            if layout.enabled == 0 {
                continue;
            }
            match attach_tracepoint(&mut ebpf, spec.program, spec.category, &[spec.name]) {
                Ok(()) => attached.push(format!("{}:{}", spec.category, spec.name)),
                Err(e) => disabled.push(disable(spec, format!("attach failed: {e:#}"))),
            }
        }
        // Raw, for its socket pointer: the soft ICMP errors that end a connect in SYN_SENT.
        match attach_error_report(&mut ebpf) {
            Ok(()) => attached.push("raw_tp:inet_sk_error_report".to_owned()),
            Err(e) => disabled.push(Disabled {
                source: "raw_tp:inet_sk_error_report".to_owned(),
                signals: "connects ended by an ICMP error that the application read before closing (they count as aborted)",
                reason: format!("{e:#}"),
            }),
        }
        let (a, d) = route::attach(&mut ebpf, (drop_layout.enabled == 1).then_some(drop_layout.tp_reason != u32::MAX), connect_layout.enabled == 1);
        attached.extend(a);
        disabled.extend(d);
        // A TC program the verifier rejects costs DNS, not the rest.
        let mut tc_ok = true;
        for name in tc_hooks::PROGRAMS {
            if let Err(e) = load_classifier(&mut ebpf, name) {
                disabled.push(Disabled {
                    source: format!("tc:{name}"),
                    signals: "DNS, TLS, HTTP and ICMP errors on every interface",
                    reason: format!("{e:#}"),
                });
                tc_ok = false;
                break;
            }
        }
        let ssl = if cfg.ssl_uprobes {
            match ssl::SslProbes::load(&mut ebpf, tracefs, sock_layout.enabled == 1, sock_layout.sk_protocol != u32::MAX) {
                Ok(s) => Some(s),
                Err(e) => {
                    disabled.push(Disabled {
                        source: "uprobe:libssl".to_owned(),
                        signals: "HTTP inside TLS (OpenSSL plaintext)",
                        reason: format!("{e:#}"),
                    });
                    None
                }
            }
        } else {
            disabled.push(Disabled {
                source: "uprobe:libssl".to_owned(),
                signals: "HTTP inside TLS (OpenSSL plaintext)",
                reason: "turned off with --no-ssl-uprobes".to_owned(),
            });
            None
        };
        // Before the maps are taken out of `ebpf`: every one of them, sized as loaded.
        eprintln!("observer: {}", memory::summary(&ebpf));
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).with_context(|| format!("map {name} missing from the eBPF object"))
        };
        let whole = WholeMaps::new(&ebpf)?;
        // As loaded, not as configured: the loader and the object's defaults decide.
        let table_capacity = tables::Capacity {
            conns: lru_capacity(&ebpf, "CONNS")?,
            tcp_socks: lru_capacity(&ebpf, "TCP_SOCKS")?,
            old_socks: lru_capacity(&ebpf, "OLD_SOCKS")?,
            ssl_calls: lru_capacity(&ebpf, "SSL_CALLS")?,
            connect_calls: lru_capacity(&ebpf, "CONNECT_CALLS")?,
        };
        let dest_capacity = lru_capacity(&ebpf, "TCP_DESTS")? as usize;
        let dests = PerCpuHashMap::try_from(take(&mut ebpf, "TCP_DESTS")?)?;
        let dest_marks = match ebpf.map("DEST_DIRTY") {
            Some(aya::maps::Map::HashMap(m)) => {
                use std::os::fd::AsFd as _;
                m.fd().as_fd().try_clone_to_owned().context("cannot duplicate map DEST_DIRTY's fd")?
            }
            _ => anyhow::bail!("map DEST_DIRTY is missing from the eBPF object or is not a hash"),
        };
        let dest_marks_full = PerCpuArray::try_from(take(&mut ebpf, "DEST_DIRTY_FULL")?)?;
        let ports = PerCpuHashMap::try_from(take(&mut ebpf, "TCP_PORTS")?)?;
        let resolvers = PerCpuHashMap::try_from(take(&mut ebpf, "DNS_RESOLVERS")?)?;
        let ifaces = PerCpuHashMap::try_from(take(&mut ebpf, "IFACES")?)?;
        let drops = PerCpuHashMap::try_from(take(&mut ebpf, "DROPS")?)?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, "LOST")?)?;
        let tables = PerCpuArray::try_from(take(&mut ebpf, "TABLES")?)?;
        let rings = Rings {
            connect: RingBuf::try_from(take(&mut ebpf, "CONNECT_EVENTS")?)?,
            dns: [RingBuf::try_from(take(&mut ebpf, "DNS_EVENTS")?)?, RingBuf::try_from(take(&mut ebpf, "DNS_EVENTS_1")?)?],
            tls: RingBuf::try_from(take(&mut ebpf, "TLS_EVENTS")?)?,
            http: RingBuf::try_from(take(&mut ebpf, "HTTP_EVENTS")?)?,
            icmp: RingBuf::try_from(take(&mut ebpf, "ICMP_EVENTS")?)?,
            route: RingBuf::try_from(take(&mut ebpf, "ROUTE_EVENTS")?)?,
        };
        let mut probe = Probe {
            ebpf,
            dests,
            ports,
            resolvers,
            ifaces,
            drops,
            lost,
            whole,
            dest_marks,
            dest_marks_full,
            dest_plan: Default::default(),
            dest_capacity,
            tables,
            table_capacity,
            disabled,
            attached,
            attach_time: Duration::ZERO,
            tc: tc_ok.then(|| TcHooks::new(cfg.tc_attach, cfg.interfaces.clone(), (cfg.tc_baseline, cfg.tc_empty_only))),
            ssl,
            ssl_scan_in: 0,
            drop_reasons,
            recursion_keys: Vec::new(),
        };
        match recursion::read(&probe.ebpf) {
            Ok(_) => {
                probe.recursion_keys = probe
                    .ebpf
                    .programs()
                    .map(|(name, _)| (name.to_owned(), &*Box::leak(format!("recursion_misses:{name}").into_boxed_str())))
                    .collect();
            }
            Err(reason) => probe.disabled.push(Disabled {
                source: "bpf_prog_info.recursion_misses".to_owned(),
                signals: "the count of program runs the kernel skipped (lost.bpf_recursion_misses)",
                reason,
            }),
        }
        for note in probe.refresh_interfaces() {
            eprintln!("observer: {note}");
        }
        if let Some(tc) = probe.tc.as_ref().filter(|t| !t.interfaces().is_empty()) {
            probe.attached.push(format!("tc({}):observer on {}", tc.mode.word(), tc.interfaces().join(",")));
        }
        if let Some(s) = probe.ssl.as_ref().filter(|s| !s.libraries.is_empty()) {
            probe.attached.push(format!("uprobe:OpenSSL in {}", s.libraries.join(",")));
        }
        if probe.attached.is_empty() {
            anyhow::bail!("nothing could be attached; see the lines above for each program");
        }
        probe.attach_time = started.elapsed();
        Ok((probe, rings))
    }

    /// Attach the TC program to interfaces that came up since the last call, and forget the
    /// ones that went away. Returns lines to tell the user.
    pub fn refresh_interfaces(&mut self) -> Vec<String> {
        let mut notes = match &mut self.tc {
            Some(tc) => tc.refresh(&mut self.ebpf),
            None => Vec::new(),
        };
        if let Some(ssl) = &mut self.ssl {
            if self.ssl_scan_in == 0 {
                notes.extend(ssl.refresh(&mut self.ebpf, Path::new("/proc")));
                self.ssl_scan_in = SSL_SCAN_EVERY;
            }
            self.ssl_scan_in -= 1;
        }
        notes
    }

    /// What this kernel cannot give now: fixed at start, plus hooks that failed to attach.
    pub fn disabled(&self) -> Vec<Disabled> {
        let mut v = self.disabled.clone();
        v.extend(self.tc.as_ref().map(TcHooks::disabled).unwrap_or_default());
        v.extend(self.ssl.as_ref().map(ssl::SslProbes::disabled).unwrap_or_default());
        v
    }

    /// Since-start DNS counters per resolver and per interface, and the interfaces watched.
    pub fn dns_snapshot(&self) -> DnsSnapshot {
        DnsSnapshot {
            resolvers: self.whole.read(&self.whole.resolvers, &self.resolvers, |k, v| (endpoint_addr(&k), sum_cpus(v.iter().map(|v| &v.c)))),
            per_interface: self.whole.read(&self.whole.ifaces, &self.ifaces, |k, v| (k, sum_cpus(v.iter().map(|v| &v.c)))),
            names: self.tc.as_ref().map(TcHooks::names).unwrap_or_default().into_iter().collect(),
        }
    }

    /// Since-start drop counts per key (addresses, protocol, reason), summed over CPUs.
    pub fn drop_snapshot(&self) -> Vec<crate::events::DropRec> {
        self.whole.read(&self.whole.drops, &self.drops, |k, v| crate::events::drop_reading(&k, v.iter().map(|v| v.c[0]).sum()))
    }

    /// Since-start counters of the destinations that changed since the last reading and of
    /// those gone from the kernel's table (or, at a sweep, of every destination it holds), and
    /// of every local port.
    pub fn snapshot(&self) -> TcpSnapshot {
        use std::os::fd::AsFd as _;
        let mut plan = self.dest_plan.get();
        // Before the marks are taken: a mark that fails later is seen at the next reading.
        let full_marks = self.dest_marks_full.get(&0, 0).map_or(0, |v| v.iter().sum());
        let created = self.tables.get(&(2 * observer_common::table::DESTS as u32), 0).map_or(0, |v| v.iter().sum());
        let mut marked = Vec::new();
        let mut sweep = plan.must_sweep(full_marks, self.dest_capacity, self.whole.cpus);
        // Taken at a sweep too, so that the set does not fill.
        if plan.marks_work {
            match batch::take_keys::<Endpoint>(self.dest_marks.as_fd(), 1, |k| marked.push(k)) {
                Ok(()) => {}
                Err(e) => {
                    plan.marks_work = e.kind() != std::io::ErrorKind::Unsupported;
                    sweep = true;
                }
            }
        }
        let (mut dests, mut gone) = (Vec::new(), Vec::new());
        if sweep {
            dests = self.whole.read(&self.whole.dests, &self.dests, |k, v| (endpoint_addr(&k), sum_cpus(v.iter().map(|v| &v.c))));
            plan.swept(dests.len(), created, full_marks);
        } else {
            // Sized by the marks: grown by doubling, this list was 2 MB at 10,000 changes.
            dests.reserve_exact(marked.len());
            let (mut buf, mut per_cpu) = (Vec::new(), Vec::new());
            for k in &marked {
                match batch::lookup_per_cpu::<Endpoint, TcpCounters>(self.whole.dests.fd.as_fd(), k, self.whole.cpus, &mut buf, &mut per_cpu) {
                    Ok(true) => dests.push((endpoint_addr(k), sum_cpus(per_cpu.iter().map(|v| &v.c)))),
                    Ok(false) => gone.push(endpoint_addr(k)),
                    // Its change is read at the next reading, a sweep.
                    Err(_) => plan.missed(),
                }
            }
            plan.marked(gone.len(), created, full_marks);
        }
        self.dest_plan.set(plan);
        TcpSnapshot {
            dests,
            gone: (!sweep).then_some(gone),
            held: plan.held,
            ports: self.whole.read(&self.whole.ports, &self.ports, |k, v| (k, sum_cpus(v.iter().map(|v| &v.c)))),
        }
    }

    /// Since-start created and removed counts of the LRU tables. Read them before the
    /// snapshots, and hand both to [`tables::evictions`].
    pub fn table_counts(&self) -> tables::TableCounts {
        tables::TableCounts::from_slots(|i| self.tables.get(&(i as u32), 0).map_or(0, |v| v.iter().sum()))
    }

    pub fn table_capacity(&self) -> tables::Capacity {
        self.table_capacity
    }

    /// Kernel-side lost-event counters, summed over CPUs, by name; and the runs the kernel
    /// skipped, in total and per program that had any.
    pub fn lost_counts(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = lost::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, self.lost.get(&(i as u32), 0).map_or(0, |v| v.iter().sum())))
            .collect();
        if !self.recursion_keys.is_empty()
            && let Ok((total, by_program)) = recursion::read(&self.ebpf)
        {
            out.push(("bpf_recursion_misses", total));
            for (name, n) in by_program {
                if let Some((_, key)) = self.recursion_keys.iter().find(|(p, _)| *p == name) {
                    out.push((key, n));
                }
            }
        }
        out
    }
}

/// The per-CPU counter tables that are read whole every interval, by fd: in batches where the
/// kernel can (Linux 5.6+), one entry at a time otherwise.
struct WholeMaps {
    dests: WholeMap,
    ports: WholeMap,
    resolvers: WholeMap,
    ifaces: WholeMap,
    drops: WholeMap,
    cpus: usize,
    batch: std::cell::Cell<bool>,
}

/// One table read whole: its fd, and how many entries it held at the last reading.
struct WholeMap {
    fd: std::os::fd::OwnedFd,
    len: std::cell::Cell<usize>,
}

impl WholeMaps {
    fn new(ebpf: &Ebpf) -> anyhow::Result<WholeMaps> {
        let fd = |name: &str| -> anyhow::Result<WholeMap> {
            use std::os::fd::AsFd as _;
            match ebpf.map(name) {
                Some(aya::maps::Map::PerCpuLruHashMap(m) | aya::maps::Map::PerCpuHashMap(m)) => Ok(WholeMap {
                    fd: m.fd().as_fd().try_clone_to_owned().with_context(|| format!("cannot duplicate map {name}'s fd"))?,
                    len: std::cell::Cell::new(0),
                }),
                _ => anyhow::bail!("map {name} is missing from the eBPF object or is not a per-CPU hash"),
            }
        };
        Ok(WholeMaps {
            dests: fd("TCP_DESTS")?,
            ports: fd("TCP_PORTS")?,
            resolvers: fd("DNS_RESOLVERS")?,
            ifaces: fd("IFACES")?,
            drops: fd("DROPS")?,
            cpus: aya::util::nr_cpus().map_or(1, |n| n.max(1)),
            batch: std::cell::Cell::new(true),
        })
    }

    /// Every entry of `map` (read through `whole`), as `entry` makes it of the key and the
    /// per-CPU values. Entries evicted while it is read are missed, as they would be one by one.
    fn read<K: aya::Pod, V: aya::Pod, T>(
        &self,
        whole: &WholeMap,
        map: &PerCpuHashMap<MapData, K, V>,
        entry: impl Fn(K, &[V]) -> T,
    ) -> Vec<T> {
        // Room for as many entries as the map held last time: a vector that doubles its way
        // to 100,000 entries peaks at a third more than it needs.
        let hint = whole.len.get();
        let mut out = Vec::with_capacity(hint + hint / 16);
        self.read_each(whole, map, |k, v| out.push(entry(k, v)));
        out
    }

    /// Every entry of `map`, handed to `each`. After a failed batch read the map is walked one
    /// entry at a time, and `each` sees again the entries that the batch handed over.
    fn read_each<K: aya::Pod, V: aya::Pod>(&self, whole: &WholeMap, map: &PerCpuHashMap<MapData, K, V>, mut each: impl FnMut(K, &[V])) {
        use std::os::fd::AsFd as _;
        let mut n = 0;
        if self.batch.get() {
            match batch::read_per_cpu::<K, V>(whole.fd.as_fd(), self.cpus, |k, per_cpu| {
                n += 1;
                each(k, per_cpu)
            }) {
                Ok(()) => {
                    whole.len.set(n);
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => self.batch.set(false),
                Err(_) => {}
            }
        }
        n = 0;
        for (k, per_cpu) in map.iter().flatten() {
            n += 1;
            each(k, &per_cpu);
        }
        whole.len.set(n);
    }
}

/// The number of entries the LRU hash map `name` (per-CPU or not) was created with.
fn lru_capacity(ebpf: &Ebpf, name: &str) -> anyhow::Result<u32> {
    match ebpf.map(name) {
        Some(aya::maps::Map::LruHashMap(m) | aya::maps::Map::PerCpuLruHashMap(m)) => {
            Ok(m.info().with_context(|| format!("cannot read map {name}'s info"))?.max_entries())
        }
        _ => anyhow::bail!("map {name} is missing from the eBPF object or is not an LRU hash"),
    }
}

/// Per-CPU counter arrays summed into one.
fn sum_cpus<'a, const N: usize>(per_cpu: impl Iterator<Item = &'a [u64; N]>) -> [u64; N] {
    let mut sum = [0u64; N];
    for values in per_cpu {
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
        }
    }
    sum
}

fn disable(spec: &TpSpec, reason: String) -> Disabled {
    Disabled { source: format!("{}:{}", spec.category, spec.name), signals: spec.signals, reason }
}

fn load_classifier(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?;
    prog.load().map_err(|e| anyhow::anyhow!("the verifier rejected {name}: {}", verifier_tail(&e)))
}

/// The end of a verifier log is where the reason is; the whole log can be megabytes.
fn verifier_tail(e: &aya::programs::ProgramError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

fn attach_error_report(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    attach_raw_tracepoint(ebpf, "inet_sk_error_report", &["inet_sk_error_report"])
}

/// Load `program` and attach it to each raw tracepoint of `names`: to all of them or, with
/// the program unloaded again, to none (a caller may fall back to a classic tracepoint).
pub(super) fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, names: &[&str]) -> anyhow::Result<()> {
    let prog: &mut RawTracePoint = ebpf.program_mut(program).with_context(|| format!("program {program} missing"))?.try_into()?;
    prog.load().with_context(|| format!("the verifier rejected {program}"))?;
    for name in names {
        if let Err(e) = prog.attach(name) {
            let _ = prog.unload();
            return Err(e).with_context(|| format!("attaching to raw tracepoint {name}"));
        }
    }
    Ok(())
}

/// Load `program` and attach it to each tracepoint `category:name` of `names`: to all of them
/// or, with the program unloaded again, to none (a caller may fall back to another source).
pub(super) fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, names: &[&str]) -> anyhow::Result<()> {
    let prog: &mut TracePoint =
        ebpf.program_mut(program).with_context(|| format!("program {program} missing from the eBPF object"))?.try_into()?;
    prog.load().with_context(|| format!("the verifier rejected {program}"))?;
    for name in names {
        if let Err(e) = prog.attach(category, name) {
            let _ = prog.unload();
            return Err(e).with_context(|| format!("attaching to {category}:{name}"));
        }
    }
    Ok(())
}

