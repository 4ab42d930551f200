//! What a client and the daemon say on the socket: JSON lines. The client sends one request
//! (its version and what it wants); the daemon answers with a hello (or an error) and then
//! messages until the end.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::{config::Config, present::wire::Frame, verdict::Change};

/// Bumped when a message changes meaning; a client and a daemon must agree on it.
pub const PROTOCOL: u32 = 1;

/// A frame line longer than this is not from observer: the peer is something else.
pub const MAX_LINE: usize = 64 << 20;
/// A request is a few dozen bytes; the daemon reads no more than this of one.
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The client's version (Cargo's), for the message when protocols differ.
    pub observer: String,
    pub protocol: u32,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The recent history, then every new interval until the client goes.
    Watch,
    /// The intervals that end within [from, to] (Unix milliseconds), then the end.
    Export { from_ms: u64, to_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Hello(Box<Hello>),
    /// The request cannot be served; the text says why, for the user.
    Refused { reason: String },
}

/// What the daemon says first: who it is and what it runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub observer: String,
    pub protocol: u32,
    pub pid: u32,
    pub host: String,
    pub kernel: String,
    pub interval_s: f64,
    pub window_s: f64,
    pub config: Config,
    /// When the daemon started (RFC 3339).
    pub started: String,
    /// The oldest interval it still holds in memory (RFC 3339), if any.
    pub oldest: Option<String>,
    /// The flight recorder now: intervals and bytes held, its cap, and how many intervals
    /// went for the cap before their time.
    pub held_intervals: usize,
    pub held_bytes: usize,
    pub cap_bytes: usize,
    pub dropped_for_cap: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Verdict changes older than the frames that follow (the timeline's start).
    Changes(Vec<Change>),
    /// One interval.
    Frame(Box<Frame>),
    /// The history is over; what follows is live.
    Live,
    /// The daemon ends the conversation, and why (an export is complete, the client fell
    /// behind, the daemon stops).
    End { reason: String },
}

pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The line the client shows when the daemon speaks another protocol.
pub fn mismatch(daemon_version: &str, daemon_protocol: u32) -> String {
    format!(
        "the daemon is observer {daemon_version} (protocol {daemon_protocol}) and this client is observer {} (protocol {PROTOCOL}): use the client that came with the daemon, or restart the daemon from this version (systemctl restart observer)",
        version()
    )
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One message as a JSON line, newline included.
pub fn line<T: Serialize>(message: &T) -> serde_json::Result<Vec<u8>> {
    line_with_capacity(message, 128)
}

/// [`line`], into a buffer of `capacity` bytes to start with: a frame's line is most of a
/// megabyte at 100k destinations, and growing to it by doubling holds two buffers at once.
pub fn line_with_capacity<T: Serialize>(message: &T, capacity: usize) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut line, message)?;
    line.push(b'\n');
    Ok(line)
}

/// Write one message as a JSON line.
pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, message: &T) -> std::io::Result<()> {
    w.write_all(&line(message).map_err(std::io::Error::other)?).await
}

/// Read one JSON line; `None` at the end of the stream.
pub async fn receive<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut BufReader<R>) -> anyhow::Result<Option<T>> {
    receive_at_most(r, MAX_LINE).await
}

/// [`receive`], for a line of at most `max` bytes.
pub async fn receive_at_most<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut BufReader<R>, max: usize) -> anyhow::Result<Option<T>> {
    let mut line = Vec::new();
    let n = (&mut *r).take(max as u64).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") && n >= max {
        anyhow::bail!("a line of over {max} bytes: the peer does not speak observer's protocol");
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| anyhow::anyhow!("the peer does not speak observer's protocol ({e})"))
}
