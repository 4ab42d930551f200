//! JSON lines: one report per line, flushed at once so that `| jq` and tests see it live.

use std::io::Write;

use super::report::Report;

pub fn write_line(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, report)?;
    out.write_all(b"\n")?;
    out.flush()
}
