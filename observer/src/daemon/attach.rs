//! `observer` attached to a daemon: the same outputs, drawn from the daemon's intervals, with
//! the history it holds. No privileges: only the socket.

use std::{io::ErrorKind, os::unix::net::UnixStream, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use tokio::io::BufReader;

use super::protocol::{self, Hello, Message, Op, PROTOCOL, Reply, Request};
use crate::{
    cli::Cli,
    present::{
        report::Report,
        tui::{Input as Key, app::Effect},
    },
    run::{Sink, Stops, next_key},
};

/// The daemon to attach to, if observer should: `--standalone` never, `--attach` always (an
/// error when none runs), otherwise when one answers on the socket.
pub fn connect(cli: &Cli) -> anyhow::Result<Option<UnixStream>> {
    // A recording, metrics or redacted names of this run's own need a probe of its own: the
    // daemon's intervals carry what the daemon was started with.
    if cli.standalone || cli.record.is_some() || cli.prometheus.is_some() || cli.redact {
        return Ok(None);
    }
    match UnixStream::connect(&cli.socket) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(denied(&cli.socket)),
        Err(e) if cli.attach => bail!(
            "--attach: no observer daemon answers on {} ({e}); start one (systemctl start observer, or sudo observer daemon), or run without --attach",
            cli.socket.display()
        ),
        // None runs: observer starts its own probe.
        Err(_) => Ok(None),
    }
}

pub fn denied(socket: &Path) -> anyhow::Error {
    use std::os::unix::fs::MetadataExt as _;
    // The socket's group when it can be seen (its directory may hide it).
    let group = std::fs::metadata(socket).ok().and_then(|m| super::socket::group_name(m.gid())).unwrap_or_else(|| "observer".to_owned());
    anyhow::anyhow!(
        "permission denied on {}: the daemon's socket belongs to root and the group {group}. Join the group (sudo usermod -aG {group} $USER, then log in again), run with sudo, or start a probe of your own (sudo observer --standalone)",
        socket.display()
    )
}

/// Send the request and read the hello (or the refusal).
pub async fn open(stream: UnixStream, op: Op) -> anyhow::Result<(Hello, BufReader<tokio::net::unix::OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf)> {
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    protocol::send(&mut w, &Request { observer: protocol::version(), protocol: PROTOCOL, op }).await.context("cannot talk to the daemon")?;
    let raw: serde_json::Value = match tokio::time::timeout(Duration::from_secs(10), protocol::receive(&mut r)).await {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => bail!("the daemon closed the connection without a word"),
        Ok(Err(e)) if e.downcast_ref::<std::io::Error>().is_some() => bail!("the daemon closed the connection: {e:#}"),
        Ok(Err(e)) => bail!("the daemon's answer is not observer's protocol ({e:#})"),
        Err(_) => bail!("the daemon did not answer in 10 s"),
    };
    // The version first, from whatever shape a hello of another version has.
    if let Some(protocol) = raw["hello"]["protocol"].as_u64()
        && protocol != u64::from(PROTOCOL)
    {
        bail!("{}", protocol::mismatch(raw["hello"]["observer"].as_str().unwrap_or("of another version"), protocol as u32));
    }
    match serde_json::from_value::<Reply>(raw) {
        Ok(Reply::Refused { reason }) => bail!("the daemon refused: {reason}"),
        Ok(Reply::Hello(h)) => Ok((*h, r, w)),
        Err(e) => bail!(
            "the daemon's hello is not one this client reads ({e}): it may be another version of observer; use the client that came with the daemon (this one is observer {}, protocol {PROTOCOL})",
            protocol::version()
        ),
    }
}

pub fn run(cli: Cli, stream: UnixStream) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(watch(cli, stream))
}

async fn watch(cli: Cli, stream: UnixStream) -> anyhow::Result<()> {
    let mut stops = Stops::new()?;
    let (hello, mut r, _w) = open(stream, Op::Watch).await?;
    eprintln!(
        "observer: attached to the daemon on {} (observer {}, pid {}, up since {}; history from {}: {} intervals in {} KiB of its {} MiB cap, {} dropped for the cap)",
        cli.socket.display(),
        hello.observer,
        hello.pid,
        hello.started,
        hello.oldest.as_deref().unwrap_or("now"),
        hello.held_intervals,
        hello.held_bytes >> 10,
        hello.cap_bytes >> 20,
        hello.dropped_for_cap
    );
    let mut sink = Sink::start(cli.format)?;
    let draws = matches!(sink, Sink::Tui(_));
    if let Sink::Tui(tui) = &mut sink {
        tui.app.status = Some("attached to the daemon: history included; recordings: observer export --last 15m DIR".to_owned());
    }
    stops.run_for(cli.duration());
    let mut live = false;
    // The newest report, held back during the history (JSON and text print the last one).
    let mut last: Option<Report> = None;
    let mut ended: Option<String> = None;
    loop {
        tokio::select! {
            m = protocol::receive::<_, Message>(&mut r) => match m? {
                Some(Message::Changes(changes)) => {
                    if let Sink::Tui(tui) = &mut sink {
                        tui.app.timeline.extend(changes);
                    }
                }
                Some(Message::Frame(frame)) => {
                    let (mut report, changes) = frame.into_report()?;
                    // The daemon's last interval is final for its recording; this session's
                    // final line is its own, printed once at the end.
                    report.is_final = false;
                    match (&mut sink, live) {
                        (_, true) => sink.emit(report.clone(), changes, false)?,
                        // History: into the TUI's sparklines and timeline, and out as verdict
                        // changes; JSON and text print only its newest report.
                        (Sink::Tui(tui), false) => tui.app.update(report.clone(), changes),
                        (Sink::Events, false) => sink.emit(report.clone(), changes, false)?,
                        _ => {}
                    }
                    last = Some(report);
                }
                Some(Message::Live) => {
                    live = true;
                    match (&mut sink, &last) {
                        (Sink::Tui(tui), _) => tui.draw()?,
                        (Sink::Json | Sink::Text, Some(r)) => sink.emit(r.clone(), vec![], false)?,
                        _ => {}
                    }
                }
                Some(Message::End { reason }) => {
                    ended = Some(reason);
                    break;
                }
                None => {
                    ended = Some("the daemon closed the connection".to_owned());
                    break;
                }
            },
            key = next_key(&mut sink) => {
                let quit = match (key, &mut sink) {
                    (Some(Key::Action(a)), Sink::Tui(tui)) => match tui.apply(a)? {
                        Effect::Quit => true,
                        Effect::ToggleRecording | Effect::WriteReport => {
                            tui.app.status = Some("the daemon records: observer export --last 15m DIR writes its recording".to_owned());
                            tui.draw()?;
                            false
                        }
                        _ => false,
                    },
                    (Some(Key::Redraw), Sink::Tui(tui)) if draws => { tui.draw()?; false }
                    _ => false,
                };
                if quit {
                    break;
                }
            }
            _ = stops.wait() => break,
        }
    }
    // As a standalone run ends: the TUI gives the terminal back, then the last report is
    // printed as the final one.
    if let Sink::Tui(tui) = sink {
        drop(tui);
        sink = Sink::Text;
    }
    if let Some(mut r) = last {
        r.is_final = true;
        sink.emit(r, vec![], true)?;
    }
    match ended {
        Some(reason) => bail!("the daemon ended this session: {reason}"),
        None => Ok(()),
    }
}
