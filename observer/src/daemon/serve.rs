//! One task per client: read its request, check its version, then send history and live
//! intervals (watch) or a span (export). A client that dies, stalls or falls behind ends its
//! own task and nothing else.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast::error::RecvError,
    time::timeout,
};

use super::{
    Shared,
    flight::rfc3339,
    protocol::{self, Message, Op, PROTOCOL, Reply, Request},
};

/// Intervals of history a watching client gets in full: what the TUI's sparklines hold.
/// Older verdict changes come as changes only.
const HISTORY_FRAMES: usize = 120;
/// A client that takes longer than this to take one message is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once; one more is told so. Each may hold the history it is being sent.
pub const MAX_CLIENTS: usize = 32;

pub async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        client(stream, shared).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    tokio::spawn(turn_away(stream));
                }
            },
            Err(e) => {
                // Out of descriptors, for example: wait rather than spin.
                eprintln!("observer daemon: cannot accept a client: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One client too many: told why, after its request (so that it reads the answer).
async fn turn_away(stream: UnixStream) {
    let who = peer(&stream);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let _ = timeout(Duration::from_secs(2), protocol::receive_at_most::<_, serde_json::Value>(&mut r, protocol::MAX_REQUEST)).await;
    let reason = format!("{MAX_CLIENTS} clients are attached already; try again when one has gone");
    let _ = timeout(Duration::from_secs(2), send(&mut w, &Reply::Refused { reason: reason.clone() })).await;
    eprintln!("observer daemon: {who}: refused: {reason}");
}

async fn client(stream: UnixStream, shared: Arc<Shared>) {
    let who = peer(&stream);
    match serve(stream, &shared).await {
        Ok(what) => eprintln!("observer daemon: {who}: {what}"),
        Err(e) => eprintln!("observer daemon: {who}: {e:#}"),
    }
}

/// The client's process, for the daemon's log.
fn peer(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(c) => format!("client pid {} uid {}", c.pid().unwrap_or(0), c.uid()),
        Err(_) => "client".to_owned(),
    }
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> anyhow::Result<()> {
    match timeout(WRITE_TIMEOUT, w.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("dropped: it took no data for {} s", WRITE_TIMEOUT.as_secs()),
    }
}

async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(w: &mut W, m: &T) -> anyhow::Result<()> {
    write(w, &protocol::line(m)?).await
}

async fn serve(stream: UnixStream, shared: &Shared) -> anyhow::Result<String> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let request: Request = match timeout(Duration::from_secs(10), protocol::receive_at_most(&mut r, protocol::MAX_REQUEST)).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return Ok("went before asking".to_owned()),
        Ok(Err(e)) => {
            // Something that is not observer, or an observer whose request we cannot read.
            let reason = format!("this is observer {} (protocol {PROTOCOL}) and cannot read your request ({e:#}); use the observer client of the same version", protocol::version());
            let _ = send(&mut w, &Reply::Refused { reason: reason.clone() }).await;
            anyhow::bail!("refused: {reason}");
        }
        Err(_) => return Ok("sent no request in 10 s".to_owned()),
    };
    if request.protocol != PROTOCOL {
        let reason = format!(
            "the daemon is observer {} (protocol {PROTOCOL}) and your client is observer {} (protocol {}): use the client that came with the daemon",
            protocol::version(),
            request.observer,
            request.protocol
        );
        let _ = send(&mut w, &Reply::Refused { reason: reason.clone() }).await;
        return Ok(format!("refused: {reason}"));
    }
    let mut hello = shared.hello.clone();
    {
        let f = shared.flight.lock().unwrap_or_else(|e| e.into_inner());
        hello.oldest = f.oldest().map(rfc3339);
        (hello.held_intervals, hello.held_bytes) = f.held();
        hello.dropped_for_cap = f.dropped_for_cap;
    }
    send(&mut w, &Reply::Hello(Box::new(hello))).await?;
    match request.op {
        Op::Watch => watch(&mut r, &mut w, shared).await,
        Op::Export { from_ms, to_ms } => {
            let span = shared.flight.lock().unwrap_or_else(|e| e.into_inner()).span(from_ms, to_ms);
            // Reading the spill directory may take a while: not on the runtime's thread.
            let (lines, notes) = tokio::task::spawn_blocking(move || span.read()).await?;
            let n = lines.len();
            for l in lines {
                write(&mut w, &l).await?;
            }
            let mut reason = format!("{n} intervals from {} to {}", rfc3339(from_ms), rfc3339(to_ms));
            if !notes.is_empty() {
                reason.push_str(&format!("; not readable: {}", notes.join("; ")));
            }
            send(&mut w, &Message::End { reason: reason.clone() }).await?;
            Ok(format!("exported {reason}"))
        }
    }
}

async fn watch<R, W>(r: &mut BufReader<R>, w: &mut W, shared: &Shared) -> anyhow::Result<String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Subscribe before the history is taken: nothing falls between the two.
    let mut rx = shared.live.subscribe();
    let history = shared.flight.lock().unwrap_or_else(|e| e.into_inner()).history(HISTORY_FRAMES);
    if !history.changes.is_empty() {
        send(w, &Message::Changes(history.changes)).await?;
    }
    let sent = history.lines.len();
    for l in &history.lines {
        write(w, &super::flight::inflate(l)).await?;
    }
    send(w, &Message::Live).await?;
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok((seq, _)) if seq <= history.last_seq => continue,
                Ok((_, line)) => write(w, &line).await?,
                Err(RecvError::Lagged(n)) => {
                    let reason = format!("this client fell {n} intervals behind; attach again");
                    let _ = send(w, &Message::End { reason: reason.clone() }).await;
                    return Ok(format!("dropped: {reason}"));
                }
                Err(RecvError::Closed) => return Ok("the daemon stops".to_owned()),
            },
            // A client says nothing after its request: a read that ends means it went.
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Ok(format!("detached (sent {sent} intervals of history)")),
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::BufReader;

    use super::*;
    use crate::{
        config::Config,
        daemon::{
            flight::Flight,
            protocol::{Hello, Message},
        },
    };

    fn shared() -> Arc<Shared> {
        let hello = Hello {
            observer: protocol::version(),
            protocol: PROTOCOL,
            pid: 1,
            host: "test".into(),
            kernel: "6.18".into(),
            interval_s: 1.0,
            window_s: 10.0,
            config: Config::default(),
            started: "2026-11-26T00:00:00.000Z".into(),
            oldest: None,
            held_intervals: 0,
            held_bytes: 0,
            cap_bytes: 1 << 20,
            dropped_for_cap: 0,
        };
        let (live, _) = tokio::sync::broadcast::channel(64);
        Arc::new(Shared { flight: Mutex::new(Flight::new(Duration::from_secs(60), 1 << 20, None)), hello, live })
    }

    /// A client on `path`: its request sent, the reply read.
    async fn ask(path: &std::path::Path, request: &str) -> (BufReader<tokio::net::unix::OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf, serde_json::Value) {
        let s = UnixStream::connect(path).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        // A request the daemon stops reading fails to be written whole: the reply still comes.
        let _ = w.write_all(format!("{request}\n").as_bytes()).await;
        let reply = protocol::receive::<_, serde_json::Value>(&mut r).await.unwrap().unwrap();
        (r, w, reply)
    }

    #[test]
    fn history_then_live_other_versions_refused_and_one_client_too_many_told_so() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("observer-serve-test-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("s.sock");
            let shared = shared();
            let frame = |i: u64| format!("{{\"live\":null,\"i\":{i}}}\n").into_bytes();
            for i in 0..3 {
                shared.flight.lock().unwrap().push(i * 1000, &frame(i), &[]);
            }
            tokio::spawn(accept(UnixListener::bind(&path).unwrap(), shared.clone()));
            let watch = format!(r#"{{"observer":"{}","protocol":{PROTOCOL},"op":"watch"}}"#, protocol::version());

            // History: the three intervals held, then `live`, then a new one.
            let (mut r, _w, hello) = ask(&path, &watch).await;
            assert_eq!(hello["hello"]["held_intervals"], 3, "{hello}");
            for i in 0..3 {
                let m: serde_json::Value = protocol::receive(&mut r).await.unwrap().unwrap();
                assert_eq!(m["i"], i);
            }
            assert!(matches!(protocol::receive::<_, Message>(&mut r).await.unwrap(), Some(Message::Live)));
            let (seq, _) = shared.flight.lock().unwrap().push(3000, &frame(3), &[]);
            shared.live.send((seq, frame(3).into())).unwrap();
            let m: serde_json::Value = protocol::receive(&mut r).await.unwrap().unwrap();
            assert_eq!(m["i"], 3);

            // Another protocol: refused with both versions named.
            let (_, _, reply) = ask(&path, r#"{"observer":"0.0.1","protocol":0,"op":"watch"}"#).await;
            assert!(reply["refused"]["reason"].as_str().unwrap().contains("your client is observer 0.0.1 (protocol 0)"), "{reply}");
            // A request of 1 MiB is not read whole.
            let (_, _, reply) = ask(&path, &"x".repeat(1 << 20)).await;
            assert!(reply["refused"]["reason"].as_str().unwrap().contains("cannot read your request"), "{reply}");

            // MAX_CLIENTS attached (one above, and the rest here), then one more is told so.
            let mut held = Vec::new();
            for _ in 1..MAX_CLIENTS {
                let (r, w, reply) = ask(&path, &watch).await;
                assert!(reply.get("hello").is_some(), "{reply}");
                held.push((r, w));
            }
            let (_, _, reply) = ask(&path, &watch).await;
            assert!(reply["refused"]["reason"].as_str().unwrap().contains(&format!("{MAX_CLIENTS} clients are attached already")), "{reply}");
            // One goes: there is room again.
            drop(held.pop());
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, _, reply) = ask(&path, &watch).await;
            assert!(reply.get("hello").is_some(), "{reply}");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
