//! A plain text report per interval (`--format text`), and the final summary after the TUI.

use std::{fmt::Write as _, io::Write};

use super::report::Report;
use crate::verdict::Layer;

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let lost = r.lost.get("total").copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "{} {}  up {:.0}s  window {:.0}s  lost events {}{}",
        r.ts,
        r.host,
        r.uptime_s,
        r.window_s,
        lost,
        if r.is_final { "  (final)" } else { "" }
    );
    for d in &r.disabled {
        let _ = writeln!(s, "  disabled: {} ({}): {}", d.signals, d.source, d.reason);
    }
    let verdicts: Vec<String> = Layer::ALL
        .iter()
        .map(|l| format!("{} {}", l.key(), r.verdicts.get(*l).verdict.word()))
        .collect();
    let _ = writeln!(s, "  verdicts: {}", verdicts.join(", "));
    match &r.cause {
        Some(c) => {
            let since = c.since.as_deref().map(|t| format!(", since {t}")).unwrap_or_default();
            let _ = writeln!(s, "  likely cause: {} (confidence {}{since})", c.layer.title(), c.confidence);
            for l in Layer::ALL {
                for e in &r.verdicts.get(l).evidence {
                    let _ = writeln!(s, "    {e}");
                }
            }
        }
        None => {
            let _ = writeln!(s, "  no suspect layer");
        }
    }
    for section in &r.sections.0 {
        for line in section.text() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

pub fn write(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    out.write_all(render(r).as_bytes())?;
    out.flush()
}
