//! The flight recorder: the last minutes of intervals (each the line the daemon sends, kept
//! deflated), within a memory cap, and the verdict changes behind them. With a spill
//! directory every interval also goes to disk, for exports older than memory holds.

use std::{
    collections::VecDeque,
    io::{Read, Write},
    time::Duration,
};

use flate2::{Compression, read::DeflateDecoder, write::DeflateEncoder};

use super::spill::Spill;
use crate::verdict::Change;

/// One interval as held: when it ended, and its message line, deflated.
struct Held {
    seq: u64,
    end_ms: u64,
    deflated: Box<[u8]>,
}

/// What a client that attaches is sent first.
pub struct History {
    /// Changes older than the first frame, oldest first.
    pub changes: Vec<Change>,
    /// The newest intervals' lines, oldest first, deflated (inflated one at a time as they
    /// are sent: 120 busy intervals are tens of MiB).
    pub lines: Vec<Box<[u8]>>,
    /// The sequence number of the last of them: live lines up to it are skipped.
    pub last_seq: u64,
}

pub struct Flight {
    held: VecDeque<Held>,
    /// Every verdict change of the kept span: the timeline reaches back before the frames
    /// a client is sent.
    changes: VecDeque<(u64, Change)>,
    bytes: usize,
    cap: usize,
    keep: Duration,
    seq: u64,
    /// Intervals that went for the memory cap before their time was up.
    pub dropped_for_cap: u64,
    said_cap: bool,
    pub spill: Option<Spill>,
}

/// Changes kept at most, whatever the span (a flapping verdict).
const MAX_CHANGES: usize = 10_000;

impl Flight {
    pub fn new(keep: Duration, cap_bytes: usize, spill: Option<Spill>) -> Flight {
        Flight {
            held: VecDeque::new(),
            changes: VecDeque::new(),
            bytes: 0,
            cap: cap_bytes,
            keep,
            seq: 0,
            dropped_for_cap: 0,
            said_cap: false,
            spill,
        }
    }

    /// Keep one interval that ended at `end_ms`; returns its sequence number and what to tell
    /// the operator (the cap reached for the first time, spill trouble).
    pub fn push(&mut self, end_ms: u64, line: &[u8], changes: &[Change]) -> (u64, Vec<String>) {
        let mut notes = Vec::new();
        self.seq += 1;
        let mut enc = DeflateEncoder::new(Vec::with_capacity(line.len() / 4), Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(line);
        let deflated = enc.finish().unwrap_or_default().into_boxed_slice();
        self.bytes += deflated.len();
        self.held.push_back(Held { seq: self.seq, end_ms, deflated });
        for c in changes {
            self.changes.push_back((end_ms, c.clone()));
        }
        if let Some(spill) = &mut self.spill {
            notes.extend(spill.write(end_ms, line));
        }
        // Older than the span, or over the cap: the oldest go.
        let oldest_kept = end_ms.saturating_sub(self.keep.as_millis() as u64);
        while self.held.front().is_some_and(|h| h.end_ms < oldest_kept) {
            self.pop();
        }
        while self.bytes > self.cap && self.held.len() > 1 {
            self.pop();
            self.dropped_for_cap += 1;
            if !self.said_cap {
                self.said_cap = true;
                notes.push(format!(
                    "the flight recorder reached its memory cap ({} MiB) before its {} minutes: it now holds from {} (--memory-mb raises the cap)",
                    self.cap >> 20,
                    self.keep.as_secs() / 60,
                    self.oldest().map_or_else(|| "now".to_owned(), rfc3339)
                ));
            }
        }
        let first_ms = self.held.front().map_or(end_ms, |h| h.end_ms);
        while self.changes.front().is_some_and(|(t, _)| *t < first_ms) || self.changes.len() > MAX_CHANGES {
            self.changes.pop_front();
        }
        (self.seq, notes)
    }

    fn pop(&mut self) {
        if let Some(h) = self.held.pop_front() {
            self.bytes -= h.deflated.len();
        }
    }

    /// When the oldest held interval ended (Unix ms).
    pub fn oldest(&self) -> Option<u64> {
        self.held.front().map(|h| h.end_ms)
    }

    pub fn held(&self) -> (usize, usize) {
        (self.held.len(), self.bytes)
    }

    /// The newest `frames` intervals, and every change before them.
    pub fn history(&self, frames: usize) -> History {
        let skip = self.held.len().saturating_sub(frames);
        let first_ms = self.held.get(skip).map_or(u64::MAX, |h| h.end_ms);
        let lines: Vec<Box<[u8]>> = self.held.iter().skip(skip).map(|h| h.deflated.clone()).collect();
        History {
            changes: self.changes.iter().filter(|(t, _)| *t < first_ms).map(|(_, c)| c.clone()).collect(),
            lines,
            last_seq: self.held.back().map_or(self.seq, |h| h.seq),
        }
    }

    /// The intervals that ended within [from_ms, to_ms]: from the spill directory for what
    /// memory no longer holds, then from memory. The files are read by [`Span::read`],
    /// outside the lock.
    pub fn span(&self, from_ms: u64, to_ms: u64) -> Span {
        let memory_from = self.oldest().unwrap_or(u64::MAX);
        let spilled = match &self.spill {
            Some(spill) if from_ms < memory_from => Some((spill.segments(), from_ms, to_ms.min(memory_from.saturating_sub(1)))),
            _ => None,
        };
        let memory = self.held.iter().filter(|h| (from_ms..=to_ms).contains(&h.end_ms)).map(|h| inflate(&h.deflated)).collect();
        Span { spilled, memory }
    }
}

/// A span to send: spill segments to read, then lines from memory.
pub struct Span {
    spilled: Option<(Vec<super::spill::SegmentRef>, u64, u64)>,
    memory: Vec<Vec<u8>>,
}

impl Span {
    /// Every line, oldest first, and what could not be read.
    pub fn read(self) -> (Vec<Vec<u8>>, Vec<String>) {
        let (mut out, problems) = match self.spilled {
            Some((segments, from, to)) => super::spill::read(&segments, from, to),
            None => (vec![], vec![]),
        };
        out.extend(self.memory);
        (out, problems)
    }
}

pub fn inflate(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() * 4);
    // Our own deflate output: it decodes.
    let _ = DeflateDecoder::new(b).read_to_end(&mut out);
    out
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> Vec<u8> {
        // Incompressible enough that the cap is reached after a few intervals.
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let noise: String = (0..2000)
            .map(|_| {
                // xorshift: letters deflate cannot squeeze much.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        format!("{{\"frame\":{i},\"noise\":\"{noise}\"}}\n").into_bytes()
    }

    #[test]
    fn keeps_the_span_and_the_cap_and_says_so_once() {
        let mut f = Flight::new(Duration::from_secs(60), 20_000, None);
        let mut notes = Vec::new();
        for i in 0..200u64 {
            notes.extend(f.push(i * 1000, &line(i), &[]).1);
        }
        let (n, bytes) = f.held();
        assert!(bytes <= 20_000, "{bytes}");
        assert!(n > 5 && n < 61, "{n}");
        assert!(f.dropped_for_cap > 0);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("memory cap"), "{notes:?}");
        // The newest are the ones kept, and they come back as they went in.
        let h = f.history(3);
        assert_eq!(h.lines.iter().map(|l| inflate(l)).collect::<Vec<_>>(), vec![line(197), line(198), line(199)]);
        assert_eq!(h.last_seq, 200);

        let mut f = Flight::new(Duration::from_secs(60), 1 << 30, None);
        for i in 0..200u64 {
            f.push(i * 1000, &line(i), &[]);
        }
        assert_eq!(f.held().0, 61, "the last 60 s, both ends included");
        assert_eq!(f.oldest(), Some(139_000));
        assert_eq!(f.dropped_for_cap, 0);
        let (lines, _) = f.span(150_000, 152_000).read();
        assert_eq!(lines, vec![line(150), line(151), line(152)]);
    }
}
