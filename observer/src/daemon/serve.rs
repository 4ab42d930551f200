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

pub async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(client(stream, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors, for example: wait rather than spin.
                eprintln!("observer daemon: cannot accept a client: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
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
    let mut line = serde_json::to_vec(m)?;
    line.push(b'\n');
    write(w, &line).await
}

async fn serve(stream: UnixStream, shared: &Shared) -> anyhow::Result<String> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let request: Request = match timeout(Duration::from_secs(10), protocol::receive(&mut r)).await {
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
        write(w, l).await?;
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
