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
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    cli::{Cli, Format},
    events::decode_connect,
    layers::connect::ConnectLayer,
    present::{json, report, text},
    probe::{self, Probe, ProbeConfig, privileges, tracefs},
};

pub fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
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

struct State {
    layer: ConnectLayer,
    undecodable: u64,
}

impl State {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode_connect(&item, probe::mono_to_wall) {
                Some(rec) => self.layer.on_connect(rec),
                None => self.undecodable += 1,
            }
        }
    }
}

async fn run_async(cli: Cli, started: Instant, tracefs: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = ProbeConfig {
        max_destinations: cli.max_destinations,
        max_connections: cli.max_connections,
        max_ports: cli.max_ports,
        ringbuf_bytes: cli.ringbuf_kib * 1024,
    };
    // Handlers first: a signal that arrives right after "attached" must still drain and exit 0.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (probe, ring) = Probe::start(cfg, &tracefs)?;
    for d in &probe.disabled {
        eprintln!("observer: disabled: {} ({}): {}", d.signals, d.source, d.reason);
    }
    // Tests and scripts wait for this line before they send traffic.
    eprintln!(
        "observer: attached {} tracepoints in {} ms ({} ms after start): {}",
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
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd
    // (which owns the RingBuf) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("cannot poll the connect ring buffer")?;
    let mut state = State { layer: ConnectLayer::new(cli.window(), cli.max_destinations as usize), undecodable: 0 };
    let begin = tokio::time::Instant::now();
    let mut ticks = interval_at(begin + cli.interval(), cli.interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = cli.duration().map(|d| begin + d);
    let stdout = std::io::stdout();

    let emit = |state: &mut State, probe: &Probe, is_final: bool| -> anyhow::Result<()> {
        state.layer.on_snapshot(Instant::now(), &probe.snapshot());
        let kernel: Vec<(&'static str, u64)> = lost::NAMES.iter().copied().zip(probe.lost_counts()).collect();
        let user = [
            ("latency_samples_dropped", state.layer.samples_dropped),
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
        };
        let r = report::build(&meta, &state.layer, &user);
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
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the connect ring buffer failed")?;
                state.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticks.tick() => {
                state.drain(ring.get_mut());
                emit(&mut state, &probe, false)?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    // Drain what is left, print the final summary, then detach (drop) everything.
    state.drain(ring.get_mut());
    emit(&mut state, &probe, true)?;
    drop(ring);
    drop(probe);
    let _ = std::io::stderr().flush();
    Ok(())
}
