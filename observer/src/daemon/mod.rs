//! `observer daemon`: the probe and the layers run continuously; every interval goes to the
//! flight recorder and to the clients attached on the socket. Clients (`observer`,
//! `observer export`) need no privileges, only the socket.

pub mod attach;
pub mod export;
pub mod flight;
pub mod protocol;
mod serve;
pub mod socket;
pub mod spill;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tokio::sync::broadcast;

use crate::{
    cli::{Cli, DaemonArgs},
    config,
    events::{Input, Mono},
    heap,
    pipeline::Pipeline,
    present::{
        metrics::{self, Metrics},
        redact::Redactor,
        wire::Frame,
    },
    probe::{self, Probe, live::LiveSource, privileges},
    run::{CostMeter, Stops, host_name, options, probe_config, say_attached},
    source::Source,
};
use flight::Flight;
use protocol::{Hello, Message, PROTOCOL};
use spill::Spill;

/// What the client tasks share with the main loop.
pub struct Shared {
    pub flight: Mutex<Flight>,
    pub hello: Hello,
    /// Each interval's message line, with its sequence number (the line itself, not a copy:
    /// at 100k destinations it is most of a megabyte).
    pub live: broadcast::Sender<(u64, Arc<Vec<u8>>)>,
}

pub fn run(cli: Cli, args: DaemonArgs, started: Instant) -> anyhow::Result<()> {
    if cli.record.is_some() {
        anyhow::bail!("--record: the daemon keeps a flight recorder instead; `observer export --last 15m DIR` writes a recording of any span it holds");
    }
    let (config, tracefs) = crate::run::prepare(&cli)?;
    // Before the privileges go: the socket is root's and the group's.
    let (listener, said) = socket::bind(&cli.socket, &args.socket_group)?;
    eprintln!("observer daemon: {said}");
    let spill = match &args.spill {
        Some(dir) => {
            let s = Spill::open(dir, u64::from(args.spill_max_mb) << 20).map_err(anyhow::Error::msg)?;
            if let Some(a) = privileges::account_after_attach() {
                chown_tree(dir, a.uid, a.gid).with_context(|| format!("--spill {}", dir.display()))?;
            }
            eprintln!("observer daemon: spilling to {} (cap {} MiB, {} KiB there now)", dir.display(), args.spill_max_mb, s.bytes() >> 10);
            Some(s)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = rt.block_on(run_async(&cli, args, config, started, tracefs, listener, spill));
    // A socket file left behind would only be replaced by the next daemon; clients would be
    // refused meanwhile, which they say.
    let _ = std::fs::remove_file(&cli.socket);
    result
}

fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        std::os::unix::fs::chown(e?.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

async fn run_async(
    cli: &Cli,
    args: DaemonArgs,
    config: config::Config,
    started: Instant,
    tracefs: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
    spill: Option<Spill>,
) -> anyhow::Result<()> {
    let mut stops = Stops::new()?;
    let host = host_name();
    // Before the privileges go: ADDR may be a privileged port.
    let mut metrics = metrics::start(cli.prometheus, cli.prometheus_top as usize, "observer daemon").await?;
    let (probe, rings) = Probe::start(&probe_config(cli), &tracefs)?;
    privileges::drop_after_attach(!cli.no_ssl_uprobes, privileges::account_after_attach())?;
    heap::trim();
    say_attached(&probe, started);
    let mut source = LiveSource::new(probe, rings, cli.interval())?;
    let since_start = u64::try_from(started.elapsed().as_nanos()).unwrap_or(0);
    let mut pipeline = Pipeline::new(options(cli), config.clone(), &host, Mono(probe::monotonic_ns().saturating_sub(since_start)));
    if cli.redact {
        pipeline.redactor = Some(Redactor::default());
    }

    let keep = Duration::from_secs(u64::from(args.history_minutes) * 60);
    let hello = Hello {
        observer: protocol::version(),
        protocol: PROTOCOL,
        pid: std::process::id(),
        host: host.clone(),
        kernel: privileges::kernel_release().0,
        interval_s: cli.interval().as_secs_f64(),
        window_s: cli.window().as_secs_f64(),
        config,
        started: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        oldest: None,
        held_intervals: 0,
        held_bytes: 0,
        cap_bytes: (args.memory_mb as usize) << 20,
        dropped_for_cap: 0,
    };
    let (live, _) = broadcast::channel(64);
    let shared = Arc::new(Shared { flight: Mutex::new(Flight::new(keep, (args.memory_mb as usize) << 20, spill)), hello, live });
    let listener = tokio::net::UnixListener::from_std(listener).context("cannot serve the socket")?;
    tokio::spawn(serve::accept(listener, shared.clone()));
    eprintln!("observer daemon: keeping {} minutes within {} MiB", args.history_minutes, args.memory_mb);

    let mut cost = CostMeter::default();
    stops.run_for(cli.duration());
    loop {
        tokio::select! {
            input = source.next() => match input? {
                Some(input) => {
                    cost.read = source.read_time();
                    interval(&mut pipeline, input, false, &shared, metrics.as_mut(), &mut cost);
                }
                None => break,
            },
            _ = stops.wait() => break,
        }
    }
    // The last readings, then every client is told the daemon stops.
    for (input, is_final) in crate::source::with_final(source.finish()) {
        interval(&mut pipeline, input, is_final, &shared, metrics.as_mut(), &mut cost);
    }
    if let Ok(end) = protocol::line(&Message::End { reason: "the daemon stops".to_owned() }) {
        let _ = shared.live.send((u64::MAX, end.into()));
    }
    // Give the client tasks a moment to write it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(source);
    eprintln!("observer daemon: stopped");
    Ok(())
}

/// The last frame line's length: the next one's buffer starts at about that size.
static LINE_HINT: AtomicUsize = AtomicUsize::new(4096);

/// Feed one input; a tick's report becomes a frame for the recorder and the clients (and
/// goes to the metrics).
fn interval(pipeline: &mut Pipeline, input: Input, is_final: bool, shared: &Shared, metrics: Option<&mut Metrics>, cost: &mut CostMeter) {
    let started = Instant::now();
    let Some((mut report, changes)) = pipeline.on_input(input, is_final) else { return };
    // The daemon's own cost, in every report its clients get.
    let cpu = cost.stamp(&mut report);
    let grown = pipeline.failures_grown();
    let end_ms = humantime::parse_rfc3339_weak(&report.ts).map_or(0, protocol::unix_ms);
    let samples = pipeline.interval_samples();
    if let Some(m) = metrics {
        m.update(&report, &samples, &grown);
    }
    // Moved into the frame, not copied: at 100k, 10,000 destinations fail each interval.
    let failed = grown.into_iter().map(|(series, tag, n)| (series.into(), tag, n)).collect();
    let frame = match Frame::of(&report, &changes, &samples, failed) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("observer daemon: an interval could not be kept: {e:#}");
            return;
        }
    };
    // What the frame was built from goes before it is serialised: this is the close's peak.
    drop((samples, report));
    let hint = LINE_HINT.load(Ordering::Relaxed);
    let line = match protocol::line_with_capacity(&Message::Frame(Box::new(frame)), hint + hint / 8) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("observer daemon: an interval could not be kept: {e}");
            return;
        }
    };
    LINE_HINT.store(line.len(), Ordering::Relaxed);
    let (seq, notes) = shared.flight.lock().unwrap_or_else(|e| e.into_inner()).push(end_ms, &line, &changes);
    for n in notes {
        eprintln!("observer daemon: {n}");
    }
    // No client attached is not an error.
    let _ = shared.live.send((seq, line.into()));
    heap::trim();
    cost.closed(started, cpu);
}
