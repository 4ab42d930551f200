//! The runtime: privileges and kernel checks, attach, then one loop that drains events, reads
//! counters every interval and writes reports until Ctrl-C, SIGTERM or --duration.

use std::{
    io::{IsTerminal, Write},
    time::{Instant, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use observer_common::lost;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    cli::{Cli, Format},
    events::{decode_connect, decode_dns},
    layers::{
        connect::ConnectLayer,
        dns::{DnsConfig, DnsLayer},
    },
    present::{json, report, text},
    probe::{self, Probe, ProbeConfig, privileges, tracefs},
};

pub fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
    cli.validate().map_err(anyhow::Error::msg)?;
    privileges::check_capabilities()?;
    for note in privileges::check_kernel()? {
        eprintln!("observer: {note}");
    }
    // Before the runtime starts any thread: it may need unshare(CLONE_NEWNS).
    let tracefs = tracefs::ensure_tracefs()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cli, started, tracefs))
}

/// The layers and what could not be decoded.
struct State {
    connect: ConnectLayer,
    dns: DnsLayer,
    undecodable: u64,
}

impl State {
    fn drain_connect(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode_connect(&item, probe::mono_to_wall) {
                Some(rec) => self.connect.on_connect(rec),
                None => self.undecodable += 1,
            }
        }
    }

    fn drain_dns(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode_dns(&item) {
                Some(msg) => self.dns.on_message(msg),
                None => self.undecodable += 1,
            }
        }
    }
}

fn poll(ring: RingBuf<MapData>, what: &str) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd
    // (which owns the RingBuf) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .with_context(|| format!("cannot poll the {what} ring buffer"))
}

async fn run_async(cli: Cli, started: Instant, tracefs: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = ProbeConfig {
        max_destinations: cli.max_destinations,
        max_connections: cli.max_connections,
        max_ports: cli.max_ports,
        ringbuf_bytes: cli.ringbuf_kib * 1024,
        max_resolvers: cli.max_resolvers,
        dns_ringbuf_bytes: cli.dns_ringbuf_kib * 1024,
        dns_ports: cli.dns_ports.clone(),
        interfaces: cli.interfaces.clone(),
        tc_baseline: cli.tc_baseline,
    };
    // Handlers first: a signal that arrives right after "attached" must still drain and exit 0.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (mut probe, rings) = Probe::start(&cfg, &tracefs)?;
    for d in &probe.disabled {
        eprintln!("observer: disabled: {} ({}): {}", d.signals, d.source, d.reason);
    }
    // Tests and scripts wait for this line before they send traffic.
    eprintln!(
        "observer: attached {} in {} ms ({} ms after start): {}",
        probe.attached.len(),
        probe.attach_time.as_millis(),
        started.elapsed().as_millis(),
        probe.attached.join(", ")
    );

    let format = match cli.format {
        Format::Auto if std::io::stdout().is_terminal() => Format::Text,
        Format::Auto => Format::Json,
        f => f,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mut connect_ring = poll(rings.connect, "connect")?;
    let mut dns_ring = poll(rings.dns, "DNS")?;
    let mut state = State {
        connect: ConnectLayer::new(cli.window(), cli.max_destinations as usize),
        dns: DnsLayer::new(DnsConfig {
            window: cli.window(),
            unanswered_after: std::time::Duration::from_secs_f64(cli.dns_timeout),
            max_names: cli.max_dns_names as usize,
            max_pending: 65_536,
        }),
        undecodable: 0,
    };
    let begin = tokio::time::Instant::now();
    let mut ticks = interval_at(begin + cli.interval(), cli.interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = cli.duration().map(|d| begin + d);
    let stdout = std::io::stdout();

    let emit = |state: &mut State, probe: &Probe, is_final: bool| -> anyhow::Result<()> {
        let now = Instant::now();
        state.connect.on_snapshot(now, &probe.snapshot());
        state.dns.on_snapshot(now, probe::monotonic_ns(), &probe.dns_snapshot());
        let kernel: Vec<(&'static str, u64)> = lost::NAMES.iter().copied().zip(probe.lost_counts()).collect();
        let user = [
            ("latency_samples_dropped", state.connect.samples_dropped() + state.dns.samples_dropped()),
            ("dns_pending_dropped", state.dns.pending_dropped),
            ("undecodable_events", state.undecodable),
        ];
        let meta = report::Meta {
            now: SystemTime::now(),
            host: &host,
            uptime_s: started.elapsed().as_secs_f64(),
            interval_s: cli.interval,
            window_s: cli.window().as_secs_f64(),
            is_final,
            kernel_lost: &kernel,
            disabled: &probe.disabled,
            top: cli.top as usize,
            dns_top_names: cli.dns_top_names as usize,
            dns_interfaces: probe.dns_interfaces(),
        };
        let r = report::build(&meta, &report::Layers { connect: &state.connect, dns: &state.dns }, &user);
        let mut out = stdout.lock();
        let written = match format {
            Format::Json => json::write_line(&mut out, &r),
            _ => text::write(&mut out, &r),
        };
        match written {
            // A closed pipe (`| head`) is a normal way to stop.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("cannot write to stdout"),
        }
    };

    loop {
        tokio::select! {
            guard = connect_ring.readable_mut() => {
                let mut guard = guard.context("polling the connect ring buffer failed")?;
                state.drain_connect(guard.get_inner_mut());
                guard.clear_ready();
            }
            guard = dns_ring.readable_mut() => {
                let mut guard = guard.context("polling the DNS ring buffer failed")?;
                state.drain_dns(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticks.tick() => {
                state.drain_connect(connect_ring.get_mut());
                state.drain_dns(dns_ring.get_mut());
                for note in probe.refresh_interfaces() {
                    eprintln!("observer: {note}");
                }
                emit(&mut state, &probe, false)?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    // Drain what is left, print the final summary, then detach (drop) everything.
    state.drain_connect(connect_ring.get_mut());
    state.drain_dns(dns_ring.get_mut());
    emit(&mut state, &probe, true)?;
    drop((connect_ring, dns_ring));
    drop(probe);
    let _ = std::io::stderr().flush();
    Ok(())
}
