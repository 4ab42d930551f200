//! The `.hgrm` percentile distribution table, as HdrHistogram's
//! `outputPercentileDistribution` prints it (and HistogramLogProcessor writes, and the
//! online plotters read): five ticks per half distance, values divided by a unit ratio.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// A file name for a tag: no path separators or characters that shells trip on.
pub fn file_name(tag: &str) -> String {
    tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// Write `h` (values in µs) as a table in µs / `ratio` (1000: milliseconds).
pub fn write(out: &mut impl Write, h: &Histogram<u64>, ratio: f64) -> io::Result<()> {
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / ratio;
            if q < 1.0 {
                writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q))?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / ratio, h.stdev() / ratio)?;
    writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / ratio, h.len())?;
    writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values())
}

/// The total count and the (value, quantile) rows of a table written by [`write`].
#[cfg(test)]
pub fn parse(text: &str) -> Option<(u64, Vec<(f64, f64)>)> {
    let mut rows = Vec::new();
    let mut total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#[Max") {
            total = rest.split("Total count").nth(1)?.trim_matches(|c: char| c == '=' || c == ']' || c.is_whitespace()).parse().ok();
        } else if !line.starts_with('#') && !line.trim_start().starts_with("Value") {
            let mut f = line.split_whitespace();
            if let (Some(v), Some(q)) = (f.next(), f.next()) {
                rows.push((v.parse().ok()?, q.parse().ok()?));
            }
        }
    }
    Some((total?, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::latency::new_histogram;

    #[test]
    fn a_table_has_the_distribution_and_the_footer_in_milliseconds() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            h.record(ms * 1000).unwrap();
        }
        let mut out = Vec::new();
        write(&mut out, &h, 1000.0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"), "{text}");
        let (total, rows) = parse(&text).unwrap();
        assert_eq!(total, 100);
        let (first, last) = (rows[0], *rows.last().unwrap());
        assert_eq!(first, (1.0, 0.0), "{text}");
        assert!((99.9..=100.1).contains(&last.0) && last.1 == 1.0, "{text}");
        let median = rows.iter().find(|(_, q)| *q >= 0.5).unwrap().0;
        assert!((49.9..=50.1).contains(&median), "{text}");
        assert!(text.contains(", Total count    =          100]"), "{text}");
        assert_eq!(file_name("[fe80::1]:443|api.internal"), "_fe80__1__443_api.internal");
    }
}
