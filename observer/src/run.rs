//! The runtime: privileges and kernel checks, attach, then one loop that feeds the pipeline
//! from the source and writes reports until Ctrl-C, SIGTERM, --duration or the source ends.
//! It knows no layer: those are the pipeline's.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::sleep_until,
};

use crate::{
    cli::{Cli, Format},
    config::{self, Config},
    events::{Input, Mono},
    heap,
    pipeline::{Options, Pipeline},
    present::{
        events, json,
        metrics::{self, Metrics},
        record::{self, Recorder},
        redact::Redactor,
        report::{Cost, Report},
        text,
        tui::{Input as Key, Tui, app::Effect},
    },
    probe::{self, Probe, ProbeConfig, live::LiveSource, privileges, tracefs},
    source::Source,
    verdict::Change,
};

pub fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
    let (config, tracefs) = prepare(&cli)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cli, config, started, tracefs))
}

/// What a run with a probe checks and sets up first (observer, and the daemon): the flags,
/// the heap, the config, the privileges, the kernel, tracefs. Returns the config and where
/// tracefs is.
pub(crate) fn prepare(cli: &Cli) -> anyhow::Result<(Config, std::path::PathBuf)> {
    cli.validate().map_err(anyhow::Error::msg)?;
    heap::settle_thresholds();
    // Config errors come before privilege errors: both are the user's to fix, this one first.
    let config = config::load(cli.config.as_deref(), &cli.set)?;
    privileges::check_capabilities()?;
    for note in privileges::check_kernel()? {
        eprintln!("observer: {note}");
    }
    // Before the runtime starts any thread: it may need unshare(CLONE_NEWNS).
    let tracefs = tracefs::ensure_tracefs()?;
    Ok((config, tracefs))
}

/// Where reports go: stdout in one of the formats, or the TUI.
pub(crate) enum Sink {
    Json,
    Text,
    Events,
    Tui(Box<Tui>),
}

impl Sink {
    pub(crate) fn emit(&mut self, r: Report, changes: Vec<Change>, is_final: bool) -> anyhow::Result<()> {
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

    /// A line for the user: on the TUI's status line, or on stderr.
    pub(crate) fn note(&mut self, note: String) {
        match self {
            Sink::Tui(tui) => tui.app.status = Some(note),
            _ => eprintln!("observer: {note}"),
        }
    }

    /// Feed one input to the pipeline, record what a tick closes, and write its report.
    fn step(&mut self, pipeline: &mut Pipeline, input: Input, is_final: bool, exports: &mut Exports) -> anyhow::Result<()> {
        let started = Instant::now();
        let Exports { recorder, metrics, cost } = exports;
        if let Input::Tick(tick) = &input {
            for note in &tick.notes {
                self.note(note.clone());
            }
        }
        match pipeline.on_input(input, is_final) {
            Some((mut report, changes)) => {
                let cpu = cost.stamp(&mut report);
                if recorder.is_some() || metrics.is_some() {
                    let (samples, failures_grown) = (pipeline.interval_samples(), pipeline.failures_grown());
                    if let Some(m) = metrics {
                        m.update(&report, &samples, &failures_grown);
                    }
                    if let Some(rec) = recorder {
                        let data = record::Interval { length: pipeline.interval(), samples: &samples, failures_grown: &failures_grown };
                        if let Some(stopped) = rec.interval(&report, &changes, &data) {
                            self.note(stopped);
                        }
                    }
                }
                let emitted = self.emit(report, changes, is_final);
                // What the interval built (views, verdicts, the report) goes back to the system.
                heap::trim();
                cost.closed(started, cpu);
                emitted
            }
            None => Ok(()),
        }
    }
}

/// The interval's work so far: the source's reading, then the step that wrote the report.
#[derive(Default)]
pub(crate) struct CostMeter {
    pub(crate) read: Duration,
    /// The last interval's close, and the process's CPU time when its report was built.
    last: Option<(Duration, Duration)>,
}

impl CostMeter {
    /// Put the previous interval's cost in `report`; returns the CPU time now.
    pub(crate) fn stamp(&self, report: &mut Report) -> Duration {
        let cpu = cpu_time();
        report.cost = self.last.map(|(close, cpu_before)| Cost {
            previous_interval_cpu_ms: ms(cpu.saturating_sub(cpu_before)),
            previous_close_ms: ms(close),
            rss_mib: rss_mib(),
        });
        cpu
    }

    /// The interval's close is over: its reading plus the step that began at `started`.
    pub(crate) fn closed(&mut self, started: Instant, cpu: Duration) {
        self.last = Some((self.read + started.elapsed(), cpu));
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// User and system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Resident memory, from /proc/self/statm (pages).
fn rss_mib() -> f64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    ((pages * page) as f64 / (1 << 20) as f64 * 10.0).round() / 10.0
}

/// What each interval is also handed to, besides the output.
struct Exports {
    recorder: Option<Recorder>,
    metrics: Option<Metrics>,
    cost: CostMeter,
}

/// What a recording is started with, at start or later from the TUI.
struct RecordSettings {
    host: String,
    kernel: String,
    interval: Duration,
    window: Duration,
    config: Config,
    reports: bool,
}

impl RecordSettings {
    fn start(&self, dir: &std::path::Path) -> Result<Recorder, String> {
        let meta = record::Meta { start: std::time::SystemTime::now(), host: &self.host, kernel: &self.kernel, interval: self.interval, window: self.window, config: &self.config };
        // Before the drop, the files go to the account observer then runs as; after it, they
        // are that account's already.
        let owner = privileges::account_after_attach().map(|a| (a.uid, a.gid));
        Recorder::create(dir, &meta, self.reports, owner)
    }
}

impl Exports {
    /// The TUI's `r`: stop the running recording (writing its tables and report), or start
    /// one in `base` (the evidence directory), named by the time.
    fn toggle_recording(&mut self, settings: &RecordSettings, base: &std::path::Path) -> String {
        if let Some(rec) = self.recorder.take() {
            return rec.finish();
        }
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
        let dir = base.join(format!("observer-recording-{stamp}"));
        match settings.start(&dir) {
            Ok(rec) => {
                self.recorder = Some(rec);
                format!("recording to {} (r stops, w writes the report now)", dir.display())
            }
            Err(line) => line,
        }
    }
}

impl Sink {
    /// The sink for `--format` (`auto`: the TUI on a terminal, JSON lines otherwise).
    pub(crate) fn start(format: Format) -> anyhow::Result<Sink> {
        let format = match format {
            Format::Auto if std::io::stdout().is_terminal() => Format::Tui,
            Format::Auto => Format::Json,
            f => f,
        };
        Ok(match format {
            Format::Tui => Sink::Tui(Box::new(Tui::start()?)),
            Format::Events => Sink::Events,
            Format::Text => Sink::Text,
            _ => Sink::Json,
        })
    }
}

/// What ends a run: Ctrl-C, SIGTERM, or the end of --duration. The handlers are installed at
/// once (a signal right after "attached" must still drain); the clock starts with `run_for`.
pub(crate) struct Stops {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    deadline: Option<tokio::time::Instant>,
}

impl Stops {
    pub(crate) fn new() -> anyhow::Result<Stops> {
        Ok(Stops {
            sigint: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            sigterm: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            deadline: None,
        })
    }

    /// `--duration`, counted from now.
    pub(crate) fn run_for(&mut self, duration: Option<Duration>) {
        self.deadline = duration.map(|d| tokio::time::Instant::now() + d);
    }

    /// Ready when the run should end. Cancel-safe: the loops select on it.
    pub(crate) async fn wait(&mut self) {
        let deadline = self.deadline;
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
        }
    }
}

/// The next key press when the TUI runs; never ready otherwise.
pub(crate) async fn next_key(sink: &mut Sink) -> Option<Key> {
    match sink {
        Sink::Tui(tui) => tui.next_input().await,
        _ => std::future::pending().await,
    }
}

pub(crate) fn options(cli: &Cli) -> Options {
    Options {
        interval: cli.interval(),
        window: cli.window(),
        max_destinations: cli.max_destinations as usize,
        top: cli.top as usize,
        dns_timeout: Duration::from_secs_f64(cli.dns_timeout),
        max_dns_names: cli.max_dns_names as usize,
        dns_top_names: cli.dns_top_names as usize,
        http_timeout: Duration::from_secs_f64(cli.http_timeout),
    }
}

pub(crate) fn probe_config(cli: &Cli) -> ProbeConfig {
    ProbeConfig {
        max_destinations: cli.max_destinations,
        max_connections: cli.max_connections,
        max_ports: cli.max_ports,
        ringbuf_bytes: cli.ringbuf_kib * 1024,
        max_resolvers: cli.max_resolvers,
        dns_ringbuf_bytes: cli.dns_ringbuf_kib * 1024,
        max_tls_flows: cli.max_tls_flows,
        tls_ringbuf_bytes: cli.tls_ringbuf_kib * 1024,
        http_ringbuf_bytes: cli.http_ringbuf_kib * 1024,
        ssl_uprobes: !cli.no_ssl_uprobes,
        dns_ports: cli.dns_ports.clone(),
        interfaces: cli.interfaces.clone(),
        tc_baseline: cli.tc_baseline,
        tc_empty_only: cli.tc_empty_only,
        tc_attach: cli.tc_attach,
        // Twice per interval, so that a report is at most half an interval behind the loss
        // (a sample is sent by the connection's next ACK after this time, not by a timer).
        sample_every: (cli.interval() / 2).min(Duration::from_secs(1)),
    }
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".to_owned())
}

/// Tests and scripts wait for the "attached" line before they send traffic.
pub(crate) fn say_attached(probe: &Probe, started: Instant) {
    for d in &probe.disabled() {
        eprintln!("observer: disabled: {} ({}): {}", d.signals, d.source, d.reason);
    }
    eprintln!(
        "observer: attached {} in {} ms ({} ms after start): {}",
        probe.attached.len(),
        probe.attach_time.as_millis(),
        started.elapsed().as_millis(),
        probe.attached.join(", ")
    );
}

async fn run_async(cli: Cli, config: Config, started: Instant, tracefs: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = probe_config(&cli);
    // Handlers first: a signal that arrives right after "attached" must still drain and exit 0.
    let mut stops = Stops::new()?;
    let host = host_name();
    // Before the privileges go: DIR may be the invoking user's. A DIR that cannot be written
    // is one line, and observer runs on without it.
    let settings = RecordSettings {
        host: host.clone(),
        kernel: privileges::kernel_release().0,
        interval: cli.interval(),
        window: cli.window(),
        config: config.clone(),
        reports: cli.record_reports,
    };
    let recorder = cli.record.as_deref().and_then(|dir| {
        settings.start(dir).map_err(|line| eprintln!("observer: {line}; running without a recording")).ok()
    });
    let metrics = metrics::start(cli.prometheus, cli.prometheus_top as usize, "observer").await?;
    let (probe, rings) = Probe::start(&cfg, &tracefs)?;
    // From here on observer reads hostile packet bytes: as the user behind sudo (or nobody).
    // Recordings and evidence copies are then written as that user.
    privileges::drop_after_attach(!cli.no_ssl_uprobes, privileges::account_after_attach())?;
    let mut exports = Exports { recorder, metrics, cost: CostMeter::default() };
    // Loading parsed the kernel's BTF and the object: megabytes no longer needed.
    heap::trim();
    say_attached(&probe, started);
    let mut source = LiveSource::new(probe, rings, cli.interval())?;

    // Uptime counts from the process start, on the kernel's clock like every tick.
    let since_start = u64::try_from(started.elapsed().as_nanos()).unwrap_or(0);
    let mut pipeline = Pipeline::new(options(&cli), config, &host, Mono(probe::monotonic_ns().saturating_sub(since_start)));
    if cli.redact {
        pipeline.redactor = Some(Redactor::default());
    }
    let mut sink = Sink::start(cli.format)?;
    if let Sink::Tui(tui) = &mut sink {
        tui.app.recording = exports.recorder.as_ref().map(|r| r.dir().display().to_string());
        tui.draw()?;
    }
    stops.run_for(cli.duration());

    loop {
        tokio::select! {
            input = source.next() => match input? {
                Some(input) => {
                    exports.cost.read = source.read_time();
                    sink.step(&mut pipeline, input, false, &mut exports)?
                }
                None => break,
            },
            key = next_key(&mut sink) => {
                let quit = match (key, &mut sink) {
                    (Some(Key::Action(a)), Sink::Tui(tui)) => match tui.apply(a)? {
                        Effect::Quit => true,
                        Effect::ToggleRecording => {
                            let note = exports.toggle_recording(&settings, tui.evidence_dir());
                            tui.app.recording = exports.recorder.as_ref().map(|r| r.dir().display().to_string());
                            tui.app.status = Some(note);
                            tui.draw()?;
                            false
                        }
                        Effect::WriteReport => {
                            tui.app.status = exports.recorder.as_mut().map(Recorder::write_outputs);
                            tui.draw()?;
                            false
                        }
                        _ => false,
                    },
                    (Some(Key::Redraw), Sink::Tui(tui)) => { tui.draw()?; false }
                    _ => false,
                };
                if quit {
                    break;
                }
            }
            _ = stops.wait() => break,
        }
    }
    // Drain what is left and print the final summary, then detach (drop) everything. The TUI
    // restores the terminal first so that the summary lands on the normal screen.
    let rest = source.finish();
    if let Sink::Tui(tui) = sink {
        drop(tui);
        sink = Sink::Text;
    }
    for (input, is_final) in crate::source::with_final(rest) {
        sink.step(&mut pipeline, input, is_final, &mut exports)?;
    }
    drop(source);
    if let Some(rec) = exports.recorder {
        eprintln!("observer: {}", rec.finish());
    }
    let _ = std::io::stderr().flush();
    Ok(())
}
