//! The spill directory: every interval appended to a segment file (`frames-<unix ms>.gz`, one
//! gzip member per interval: `<end ms> <line>`), a new segment every few minutes. Past its
//! cap, or when the disk is full, the oldest segment goes, and the daemon says so. Segments
//! from an earlier run stay, so that history survives a restart.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};

use super::flight::rfc3339;

/// A segment covers at most this long, and at most a sixteenth of the cap (from 64 KiB to
/// 4 MiB), so that dropping the oldest frees a bounded slice.
const SEGMENT_MS: u64 = 5 * 60 * 1000;

fn segment_bytes(cap: u64) -> u64 {
    (cap / 16).clamp(64 << 10, 4 << 20)
}

struct Segment {
    path: PathBuf,
    start_ms: u64,
    bytes: u64,
}

pub struct Spill {
    dir: PathBuf,
    cap: u64,
    segments: VecDeque<Segment>,
    current: Option<File>,
    /// Set once writing failed for good: the line that says so.
    stopped: Option<String>,
}

impl Spill {
    /// Open DIR (created when missing) and take stock of the segments an earlier run left.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Spill, String> {
        fs::create_dir_all(dir).map_err(|e| format!("--spill {}: {e}", dir.display()))?;
        let mut segments: Vec<Segment> = fs::read_dir(dir)
            .map_err(|e| format!("--spill {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let start_ms = name.strip_prefix("frames-")?.strip_suffix(".gz")?.parse().ok()?;
                Some(Segment { path: e.path(), start_ms, bytes: e.metadata().ok()?.len() })
            })
            .collect();
        segments.sort_by_key(|s| s.start_ms);
        Ok(Spill { dir: dir.to_path_buf(), cap: cap_bytes, segments: segments.into(), current: None, stopped: None })
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Append one interval; returns what to tell the operator.
    pub fn write(&mut self, end_ms: u64, line: &[u8]) -> Vec<String> {
        if self.stopped.is_some() {
            return vec![];
        }
        let mut gz = GzEncoder::new(Vec::with_capacity(line.len() / 4 + 32), Compression::fast());
        let _ = gz.write_all(format!("{end_ms} ").as_bytes());
        let _ = gz.write_all(line);
        let member = gz.finish().unwrap_or_default();
        let mut notes = Vec::new();
        if let Err(e) = self.rotate(end_ms) {
            let line = format!("spilling to {} stopped: {e}; the flight recorder keeps memory only", self.dir.display());
            self.stopped = Some(line.clone());
            return vec![line];
        }
        // Room first: past the cap the oldest segment goes (never the one being written).
        while self.bytes() + member.len() as u64 > self.cap && self.segments.len() > 1 {
            notes.push(self.drop_oldest("it reached its cap"));
        }
        for attempt in 0..2 {
            match self.rotate(end_ms).and_then(|()| self.append(&member)) {
                Ok(()) => return notes,
                // A full disk (or another writer): make room once, then give up.
                Err(e) if attempt == 0 && self.segments.len() > 1 => {
                    notes.push(self.drop_oldest(&format!("writing failed ({e})")));
                }
                Err(e) => {
                    let line = format!("spilling to {} stopped: {e}; the flight recorder keeps memory only", self.dir.display());
                    self.stopped = Some(line.clone());
                    notes.push(line);
                    return notes;
                }
            }
        }
        notes
    }

    /// A new segment when there is none open or the open one is old enough.
    fn rotate(&mut self, end_ms: u64) -> std::io::Result<()> {
        let rotate = match self.segments.back() {
            Some(s) => self.current.is_none() || end_ms >= s.start_ms + SEGMENT_MS || s.bytes >= segment_bytes(self.cap),
            None => true,
        };
        if rotate {
            let path = self.dir.join(format!("frames-{end_ms}.gz"));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            if self.segments.back().is_none_or(|s| s.path != path) {
                self.segments.push_back(Segment { path, start_ms: end_ms, bytes: 0 });
            }
            self.current = Some(f);
        }
        Ok(())
    }

    fn append(&mut self, member: &[u8]) -> std::io::Result<()> {
        let Some(f) = self.current.as_mut() else { return Err(std::io::Error::other("no segment open")) };
        if let Err(e) = f.write_all(member) {
            // A partial member would spoil the segment for readers: cut it off, and start a
            // new segment next time.
            if let Some(s) = self.segments.back() {
                let _ = f.set_len(s.bytes);
            }
            self.current = None;
            return Err(e);
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += member.len() as u64;
        }
        Ok(())
    }

    fn drop_oldest(&mut self, why: &str) -> String {
        let Some(s) = self.segments.pop_front() else { return String::new() };
        let _ = fs::remove_file(&s.path);
        let until = self.segments.front().map_or_else(|| "now".to_owned(), |n| rfc3339(n.start_ms));
        format!("spill directory {}: {why}; dropped its oldest data ({} to {until}, {} KiB)", self.dir.display(), rfc3339(s.start_ms), s.bytes >> 10)
    }

    /// The segments as they are now, to read without holding the recorder.
    pub fn segments(&self) -> Vec<SegmentRef> {
        self.segments.iter().map(|s| SegmentRef { path: s.path.clone(), start_ms: s.start_ms }).collect()
    }
}

/// A segment to read.
pub struct SegmentRef {
    path: PathBuf,
    start_ms: u64,
}

/// The lines of intervals that ended within [from_ms, to_ms], oldest first, and what was
/// unreadable (a segment dropped meanwhile, one cut short by a kill).
pub fn read(segs: &[SegmentRef], from_ms: u64, to_ms: u64) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    {
        for (i, s) in segs.iter().enumerate() {
            let ends_before = segs.get(i + 1).map_or(u64::MAX, |n| n.start_ms);
            if s.start_ms > to_ms || ends_before <= from_ms {
                continue;
            }
            let f = match File::open(&s.path) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(format!("{}: {e}", s.path.display()));
                    continue;
                }
            };
            for line in BufReader::new(MultiGzDecoder::new(f)).split(b'\n') {
                let Ok(line) = line else {
                    // A member cut short (the daemon was killed mid-write): the rest is lost.
                    problems.push(format!("{}: cut short", s.path.display()));
                    break;
                };
                let Some(space) = line.iter().position(|b| *b == b' ') else { continue };
                let Some(end_ms) = std::str::from_utf8(&line[..space]).ok().and_then(|t| t.parse::<u64>().ok()) else { continue };
                if (from_ms..=to_ms).contains(&end_ms) {
                    let mut l = line[space + 1..].to_vec();
                    l.push(b'\n');
                    out.push(l);
                }
            }
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_reads_back_and_drops_the_oldest_past_its_cap() {
        let dir = std::env::temp_dir().join(format!("observer-spill-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spill::open(&dir, 1 << 30).unwrap();
        // One interval a minute for an hour: 12 segments of 5 minutes.
        for i in 0..60u64 {
            assert!(s.write(i * 60_000, format!("{{\"i\":{i}}}\n").as_bytes()).is_empty());
        }
        assert_eq!(s.segments.len(), 12);
        let (lines, problems) = read(&s.segments(), 10 * 60_000, 12 * 60_000);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(lines, vec![b"{\"i\":10}\n".to_vec(), b"{\"i\":11}\n".to_vec(), b"{\"i\":12}\n".to_vec()]);

        // A new run finds the segments, and a small cap drops the oldest with a line each.
        drop(s);
        let mut s = Spill::open(&dir, 1).unwrap();
        assert_eq!(s.segments.len(), 12);
        let notes = s.write(3_600_000, b"{\"i\":60}\n");
        assert_eq!(notes.len(), 12, "{notes:?}");
        assert!(notes[0].contains("dropped its oldest data (1970-01-01T00:00:00.000Z to 1970-01-01T00:05:00.000Z"), "{notes:?}");
        assert_eq!(read(&s.segments(), 0, u64::MAX).0, vec![b"{\"i\":60}\n".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
