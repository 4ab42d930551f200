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
    config::{self, Config},
    events::{decode_connect, decode_dns},
    layers::{
        connect::ConnectLayer,
        dns::{DnsConfig, DnsLayer},
        window::WindowedCounts,
    },
    present::{
        events, json,
        report::{self, Report},
        text,
        tui::{Input, Tui},
    },
    probe::{self, Probe, ProbeConfig, privileges, tracefs},
    verdict::{self, Change, Tracker},
};

pub fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
    cli.validate().map_err(anyhow::Error::msg)?;
    // Config errors come before privilege errors: both are the user's to fix, this one first.
    let config = config::load(cli.config.as_deref(), &cli.set)?;
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
    rt.block_on(run_async(cli, config, started, tracefs))
}

/// The layers and what could not be decoded.
struct State {
    connect: ConnectLayer,
    dns: DnsLayer,
    undecodable: u64,
    /// All lost events, windowed: verdict confidence drops while any were lost recently.
    lost: WindowedCounts<1>,
    tracker: Tracker,
}

/// What every report needs besides the layers.
struct Context<'a> {
    cli: &'a Cli,
    config: &'a Config,
    host: &'a str,
    started: Instant,
}

enum Sink {
    Json,
    Text,
    Events,
    Tui(Box<Tui>),
}

impl Sink {
    fn emit(&mut self, r: Report, changes: Vec<Change>, is_final: bool) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let written = match self {
            Sink::Json => json::write_line(&mut out, &r),
            Sink::Text => text::write(&mut out, &r),
            Sink::Events if is_final => events::write_final(&mut out, &r),
            Sink::Events => events::write_changes(&mut out, &r, &changes),
            Sink::Tui(tui) => {
                drop(out);
                tui.app.update(r, changes);
                return tui.draw();
            }
        };
        match written {
            // A closed pipe (`| head`) is a normal way to stop.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("cannot write to stdout"),
        }
    }
}

/// The next key press when the TUI runs; never ready otherwise.
async fn next_input(sink: &mut Sink) -> Option<Input> {
    match sink {
        Sink::Tui(tui) => tui.next_input().await,
        _ => std::future::pending().await,
    }
}

impl State {
    /// Close the interval: read the kernel counters, evaluate the verdicts, build the report.
    fn report(&mut self, ctx: &Context<'_>, probe: &Probe, is_final: bool) -> (Report, Vec<Change>) {
        let cli = ctx.cli;
        let now = Instant::now();
        let window = cli.window();
        self.connect.on_snapshot(now, &probe.snapshot());
        self.dns.on_snapshot(now, probe::monotonic_ns(), &probe.dns_snapshot());
        let kernel: Vec<(&'static str, u64)> = lost::NAMES.iter().copied().zip(probe.lost_counts()).collect();
        let user = [
            ("latency_samples_dropped", self.connect.samples_dropped() + self.dns.samples_dropped()),
            ("dns_pending_dropped", self.dns.pending_dropped),
            ("tcp_table_evictions", self.connect.evictions),
            ("resolver_table_evictions", self.dns.evictions),
            ("undecodable_events", self.undecodable),
        ];
        let lost_total: u64 = kernel.iter().chain(&user).map(|(_, v)| v).sum();
        self.lost.observe(now, Some(&[lost_total]), window);
        let views = report::Views::of(&report::Layers { connect: &self.connect, dns: &self.dns });
        let inputs = verdict::Inputs {
            window_s: window.as_secs_f64(),
            dns_timeout_s: cli.dns_timeout,
            resolvers: &views.resolvers,
            names: &views.names,
            divergences: &views.divergences,
            destinations: &views.destinations,
            lost_in_window: self.lost.window()[0],
        };
        let verdicts = verdict::evaluate(&inputs, ctx.config);
        let meta = report::Meta {
            now: SystemTime::now(),
            host: ctx.host,
            uptime_s: ctx.started.elapsed().as_secs_f64(),
            interval_s: cli.interval,
            window_s: window.as_secs_f64(),
            is_final,
            kernel_lost: &kernel,
            disabled: &probe.disabled,
            top: cli.top as usize,
            dns_top_names: cli.dns_top_names as usize,
            dns_interfaces: probe.dns_interfaces(),
        };
        let r = report::build(&meta, views, self.connect.local_ports(), verdicts, &user);
        let changes = self.tracker.update(&r.ts, &r.verdicts);
        (r, changes)
    }

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

async fn run_async(cli: Cli, config: Config, started: Instant, tracefs: std::path::PathBuf) -> anyhow::Result<()> {
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
    privileges::drop_after_attach()?;
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
        Format::Auto if std::io::stdout().is_terminal() => Format::Tui,
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
        lost: WindowedCounts::default(),
        tracker: Tracker::new(200),
    };
    let mut sink = match format {
        Format::Tui => Sink::Tui(Box::new(Tui::start()?)),
        Format::Events => Sink::Events,
        Format::Text => Sink::Text,
        _ => Sink::Json,
    };
    if let Sink::Tui(tui) = &mut sink {
        tui.draw()?;
    }
    let begin = tokio::time::Instant::now();
    let mut ticks = interval_at(begin + cli.interval(), cli.interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = cli.duration().map(|d| begin + d);
    let ctx = Context { cli: &cli, config: &config, host: &host, started };

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
                    if let Sink::Tui(tui) = &mut sink {
                        tui.app.status = Some(note);
                    } else {
                        eprintln!("observer: {note}");
                    }
                }
                let (report, changes) = state.report(&ctx, &probe, false);
                sink.emit(report, changes, false)?;
            }
            input = next_input(&mut sink) => {
                let quit = match (input, &mut sink) {
                    (Some(Input::Action(a)), Sink::Tui(tui)) => tui.apply(a)?,
                    (Some(Input::Redraw), Sink::Tui(tui)) => { tui.draw()?; false }
                    _ => false,
                };
                if quit {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    // Drain what is left, print the final summary, then detach (drop) everything. The TUI
    // restores the terminal first so that the summary lands on the normal screen.
    state.drain_connect(connect_ring.get_mut());
    state.drain_dns(dns_ring.get_mut());
    let (report, changes) = state.report(&ctx, &probe, true);
    if let Sink::Tui(tui) = sink {
        drop(tui);
        sink = Sink::Text;
    }
    sink.emit(report, changes, true)?;
    drop((connect_ring, dns_ring));
    drop(probe);
    let _ = std::io::stderr().flush();
    Ok(())
}
