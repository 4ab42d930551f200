//! HdrHistogram interval logs (the format of HdrHistogram's HistogramLogWriter, readable by
//! its HistogramLogAnalyzer and by the `hdrhistogram` crate's IntervalLogIterator), written
//! and read back.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer, V2DeflateSerializer,
        interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag},
    },
};

/// The latency series, one log each.
pub const SERIES: [&str; 5] = ["tcp_connect", "dns_lookup", "tls_handshake", "http_response", "tcp_rtt"];

/// A tag the format accepts: no commas or whitespace.
pub fn tag_of(s: &str) -> String {
    s.chars().map(|c| if c == ',' || c.is_whitespace() { '_' } else { c }).collect()
}

/// One interval log file.
pub struct LogFile {
    out: io::BufWriter<std::fs::File>,
    builder: IntervalLogWriterBuilder,
    header_len: usize,
    serializer: V2DeflateSerializer,
}

impl LogFile {
    /// Write the header: the start time (also the base time: interval timestamps are offsets
    /// from it) and what the values are.
    pub fn begin(mut out: io::BufWriter<std::fs::File>, start: SystemTime, series: &str) -> io::Result<LogFile> {
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment(&format!("observer {series}: latency in microseconds, one histogram per interval and destination (the tag)"))
            .with_start_time(start)
            .with_base_time(start)
            // The max column in milliseconds, for people reading the file.
            .with_max_value_divisor(1000.0);
        let mut serializer = V2DeflateSerializer::new();
        let header = header(&builder, &mut serializer)?;
        out.write_all(&header)?;
        Ok(LogFile { out, builder, header_len: header.len(), serializer })
    }

    /// One histogram: `offset` from the start, lasting `duration`.
    pub fn write(&mut self, h: &Histogram<u64>, offset: Duration, duration: Duration, tag: &str) -> io::Result<()> {
        // The crate's writer borrows its output and writes the header first: write through
        // it into memory, and keep what follows the header.
        let mut buf = Vec::new();
        {
            let mut w = self.builder.begin_log_with(&mut buf, &mut self.serializer)?;
            let tag = tag_of(tag);
            w.write_histogram(h, offset, duration, Tag::new(&tag)).map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
        self.out.write_all(buf.get(self.header_len..).unwrap_or_default())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn header(builder: &IntervalLogWriterBuilder, serializer: &mut V2DeflateSerializer) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    builder.begin_log_with(&mut buf, serializer)?;
    Ok(buf)
}

/// One interval read back: when it started (absolute), how long, its tag, its histogram.
#[derive(Debug)]
pub struct Interval {
    pub start: SystemTime,
    pub duration: Duration,
    pub tag: Option<String>,
    pub histogram: Histogram<u64>,
}

/// Every interval in a log. Lines that do not parse end the reading with an error.
pub fn read(text: &[u8]) -> Result<Vec<Interval>, String> {
    let mut base = SystemTime::UNIX_EPOCH;
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| format!("not an interval log: {e:?}"))? {
            LogEntry::StartTime(t) | LogEntry::BaseTime(t) => base = SystemTime::UNIX_EPOCH + t,
            LogEntry::Interval(i) => {
                let bytes = base64_decode(i.encoded_histogram()).ok_or("a histogram that is not base64")?;
                let histogram: Histogram<u64> =
                    deserializer.deserialize(&mut bytes.as_slice()).map_err(|e| format!("a histogram that does not decode: {e:?}"))?;
                out.push(Interval { start: base + i.start_timestamp(), duration: i.duration(), tag: i.tag().map(|t| t.as_str().to_owned()), histogram });
            }
        }
    }
    Ok(out)
}

/// Every interval of every series' log in a recording directory, with its series; `None`
/// when the directory holds no log at all.
pub fn read_dir(dir: &std::path::Path) -> Result<Option<Vec<(&'static str, Interval)>>, String> {
    let mut found = false;
    let mut out = Vec::new();
    for series in SERIES {
        let path = dir.join(format!("{series}.hlog"));
        let Ok(text) = std::fs::read(&path) else { continue };
        found = true;
        out.extend(read(&text).map_err(|e| format!("{}: {e}", path.display()))?.into_iter().map(|i| (series, i)));
    }
    Ok(found.then_some(out))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::latency::new_histogram;

    #[test]
    fn histograms_written_come_back_with_their_tags_counts_and_times() {
        let dir = std::env::temp_dir().join(format!("observer-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.hlog");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut log = LogFile::begin(io::BufWriter::new(std::fs::File::create(&path).unwrap()), start, "tcp_connect").unwrap();
        let mut h = new_histogram();
        for us in [100, 200, 300, 40_000] {
            h.record(us).unwrap();
        }
        log.write(&h, Duration::from_secs(3), Duration::from_secs(1), "10.0.0.2:80").unwrap();
        log.write(&h, Duration::from_secs(4), Duration::from_secs(1), "[fe80::1]:443|api internal,x").unwrap();
        log.flush().unwrap();
        let text = std::fs::read(&path).unwrap();
        let s = String::from_utf8_lossy(&text);
        assert!(s.starts_with("#observer tcp_connect"), "{s}");
        assert_eq!(s.matches("#[StartTime:").count(), 1, "one header: {s}");
        let back = read(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].tag.as_deref(), Some("10.0.0.2:80"));
        assert_eq!(back[1].tag.as_deref(), Some("[fe80::1]:443|api_internal_x"));
        assert_eq!(back[0].start, start + Duration::from_secs(3));
        assert_eq!(back[0].duration, Duration::from_secs(1));
        assert_eq!(back[0].histogram.len(), 4);
        assert_eq!(back[0].histogram.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(read(b"Tag=x,1.0,1.0,1.0,not base64\n").is_err(), "garbage is an error, not an empty log");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
