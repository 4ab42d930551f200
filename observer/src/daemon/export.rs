//! `observer export`: a span of the daemon's flight recorder written as a recording (the
//! `--record` format), after the fact. It runs as whoever typed it: the files are theirs.

use std::{
    os::unix::net::UnixStream,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

use super::protocol::{self, Message, Op};
use crate::{
    cli::{Cli, ExportArgs},
    present::record::{Meta, Recorder},
};

pub fn run(cli: &Cli, args: &ExportArgs) -> anyhow::Result<String> {
    let (from, to) = span(args, SystemTime::now())?;
    if let Ok(mut entries) = std::fs::read_dir(&args.dir)
        && entries.next().is_some()
    {
        bail!("{} is not empty; export writes a new recording into a new or empty directory", args.dir.display());
    }
    let stream = match UnixStream::connect(&cli.socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(super::attach::denied(&cli.socket)),
        Err(e) => bail!("no observer daemon answers on {} ({e}): export reads a running daemon's flight recorder", cli.socket.display()),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(export(stream, args, from, to))
}

/// [from, to] from --last or --from/--to.
fn span(args: &ExportArgs, now: SystemTime) -> anyhow::Result<(SystemTime, SystemTime)> {
    let parse = |flag: &str, t: &str| humantime::parse_rfc3339_weak(t).with_context(|| format!("{flag} {t}: not a time like 2026-11-26T14:02:00Z"));
    let (from, to) = match (&args.last, &args.from) {
        (Some(last), _) => (now.checked_sub(Duration::from(*last)).unwrap_or(SystemTime::UNIX_EPOCH), now),
        (None, Some(from)) => (parse("--from", from)?, args.to.as_deref().map(|t| parse("--to", t)).transpose()?.unwrap_or(now)),
        (None, None) => bail!("say which span: --last 15m, or --from T [--to T]"),
    };
    if to < from {
        bail!("--to is before --from");
    }
    Ok((from, to))
}

async fn export(stream: UnixStream, args: &ExportArgs, from: SystemTime, to: SystemTime) -> anyhow::Result<String> {
    let (hello, mut r, _w) = super::attach::open(stream, Op::Export { from_ms: protocol::unix_ms(from), to_ms: protocol::unix_ms(to) }).await?;
    let interval = Duration::from_secs_f64(hello.interval_s);
    let mut recorder: Option<Recorder> = None;
    let mut intervals = 0usize;
    let end = loop {
        match protocol::receive::<_, Message>(&mut r).await? {
            Some(Message::Frame(frame)) => {
                let histograms = frame.decode_histograms()?;
                let failures: Vec<(&'static str, String, u64)> = frame
                    .failures
                    .iter()
                    .filter_map(|(series, tag, n)| Some((crate::present::record::hlog::SERIES.iter().find(|s| **s == &**series)?, tag, n)))
                    .map(|(s, t, n)| (*s, t.clone(), *n))
                    .collect();
                let (report, changes) = frame.into_report()?;
                let rec = match &mut recorder {
                    Some(rec) => rec,
                    None => {
                        // The recording starts where its first interval does.
                        let first_end = humantime::parse_rfc3339_weak(&report.ts).unwrap_or(from);
                        let meta = Meta {
                            start: first_end.checked_sub(interval).unwrap_or(first_end),
                            host: &hello.host,
                            kernel: &hello.kernel,
                            interval,
                            window: Duration::from_secs_f64(hello.window_s),
                            config: &hello.config,
                        };
                        recorder.insert(Recorder::create(&args.dir, &meta, true, None).map_err(anyhow::Error::msg)?)
                    }
                };
                let failed: Vec<(&'static str, &str, u64)> = failures.iter().map(|(s, t, n)| (*s, t.as_str(), *n)).collect();
                if let Some(stopped) = rec.interval_prepared(&report, &changes, interval, &histograms, &failed) {
                    bail!("{stopped}");
                }
                intervals += 1;
            }
            Some(Message::End { reason }) => break reason,
            Some(_) => {}
            None => bail!("the daemon closed the connection before the export was complete"),
        }
    };
    match recorder {
        Some(rec) => Ok(format!("{} ({intervals} intervals; the daemon sent {end})", rec.finish())),
        None => bail!(
            "the daemon holds no interval from {} to {} (it holds from {} in memory)",
            humantime::format_rfc3339_seconds(from),
            humantime::format_rfc3339_seconds(to),
            hello.oldest.as_deref().unwrap_or("nothing yet")
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Command;

    fn args(argv: &[&str]) -> Result<ExportArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Some(Command::Export(a)) => Ok(a),
            _ => panic!("not export"),
        }
    }

    #[test]
    fn the_span_comes_from_last_or_from_and_to() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = args(&["observer", "export", "--last", "15m", "/tmp/x"]).unwrap();
        assert_eq!(span(&a, now).unwrap(), (now - Duration::from_secs(900), now));
        let a = args(&["observer", "export", "--from", "2027-01-15T08:00:00Z", "--to", "2027-01-15T08:30:00Z", "/tmp/x"]).unwrap();
        let (f, t) = span(&a, now).unwrap();
        assert_eq!(t.duration_since(f).unwrap(), Duration::from_secs(1800));
        let a = args(&["observer", "export", "--from", "2027-01-15T08:30:00Z", "--to", "2027-01-15T08:00:00Z", "/tmp/x"]).unwrap();
        assert!(span(&a, now).unwrap_err().to_string().contains("before --from"));
        let a = args(&["observer", "export", "--from", "yesterday", "/tmp/x"]).unwrap();
        assert!(span(&a, now).unwrap_err().to_string().contains("not a time"));
        assert!(args(&["observer", "export", "/tmp/x"]).is_err(), "a span is required");
        assert!(args(&["observer", "export", "--last", "15m", "--from", "2027-01-15T08:00:00Z", "/tmp/x"]).is_err());
    }
}
