//! report.md: the postmortem page of a recording, with its plots, from the recording's files
//! alone (so `observer report DIR` draws the same page offline).

use std::{fmt::Write as _, path::Path};

use crate::verdict::Layer;

use super::{
    hgrm,
    plot::{self, PlotData},
    recording::Recording,
};

/// Plots drawn at most: the most troubled destinations first.
const MAX_PLOTS: usize = 8;

/// The verdict layer a latency series speaks for.
fn layer_of(series: &str) -> &'static str {
    match series {
        "dns_lookup" => "dns",
        "tcp_rtt" => "routing",
        "http_response" => "l7",
        _ => "tcp_tls",
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Write DIR/report.md and DIR/plots/*.svg. Returns how many plots.
pub fn render(dir: &Path) -> Result<usize, String> {
    let r = Recording::load(dir)?;
    let mut md = String::new();
    let m = &r.meta;
    let host = m["host"].as_str().unwrap_or("?");
    let start = m["start"].as_str().unwrap_or("?");
    let length = r.length_s();
    let end = humantime::format_rfc3339_millis(r.start + std::time::Duration::from_secs_f64(length));
    let interval = m["interval_s"].as_f64().unwrap_or(1.0);
    let _ = writeln!(md, "# observer recording: {host}\n");
    let _ = writeln!(md, "- From {start} to {end} ({length:.1} s); interval {interval} s, window {} s", m["window_s"]);
    let _ = writeln!(md, "- Kernel {}, observer {}", m["kernel"].as_str().unwrap_or("?"), m["observer"].as_str().unwrap_or("?"));
    let _ = writeln!(md, "- Latency in milliseconds; histograms in `*.hlog` (HdrHistogram interval logs) and `hgrm/`\n");

    // The cause: every layer that turned suspect, when, and why; then how it ended.
    let _ = writeln!(md, "## Cause\n");
    let suspect: Vec<&(f64, serde_json::Value)> = r.timeline.iter().filter(|(_, c)| c["to"] == "suspect").collect();
    if suspect.is_empty() {
        let _ = writeln!(md, "No layer turned suspect during the recording.\n");
    }
    for (at, c) in &suspect {
        let of = c["consequence_of"].as_str().map(|l| format!(" (a consequence of {l})")).unwrap_or_default();
        let _ = writeln!(md, "### {} suspect at {at:.1} s ({}){of}\n", c["layer"].as_str().unwrap_or("?"), c["ts"].as_str().unwrap_or("?"));
        for e in c["evidence"].as_array().into_iter().flatten() {
            let _ = writeln!(md, "    {}", e.as_str().unwrap_or(""));
        }
        md.push('\n');
    }
    if let Some(last) = &r.last {
        let cause = last["cause"]["layer"].as_str().map_or("no suspect layer".to_owned(), |l| format!("the cause named is {l}"));
        let states: Vec<String> =
            Layer::ALL.iter().map(|l| format!("{} {}", l.key(), last["verdicts"][l.key()]["verdict"].as_str().unwrap_or("?"))).collect();
        let _ = writeln!(md, "At the end: {}; {cause}.\n", states.join(", "));
    }

    let _ = writeln!(md, "## Verdict timeline\n");
    if r.timeline.is_empty() {
        let _ = writeln!(md, "No verdict changed.\n");
    } else {
        let _ = writeln!(md, "| at (s) | layer | from | to | evidence |\n|---:|---|---|---|---|");
        for (at, c) in &r.timeline {
            let first = c["evidence"][0].as_str().unwrap_or("").replace('|', "\\|");
            let _ = writeln!(md, "| {at:.1} | {} | {} | {} | {first} |", c["layer"].as_str().unwrap_or(""), c["from"].as_str().unwrap_or(""), c["to"].as_str().unwrap_or(""));
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Troubled destinations\n");
    let troubled = r.troubled();
    if troubled.is_empty() {
        let _ = writeln!(md, "None: no failures, and no destination named in a suspect verdict.\n");
    }
    let plots_dir = dir.join("plots");
    let mut plots = 0;
    for (series, tag) in troubled.iter().take(MAX_PLOTS) {
        let failures = r.failures.get(&(series.clone(), tag.clone()));
        let failed: u64 = failures.map_or(0, |f| f.iter().map(|p| p.1).sum());
        let layer = layer_of(series);
        let changes = r.timeline.iter().filter(|(_, c)| c["layer"] == layer).map(|(t, c)| (*t, c["to"] == "suspect")).collect();
        let data = PlotData {
            title: format!("{series} {tag}"),
            latency: r.histograms.get(&(series.clone(), tag.clone())).map(|(s, _)| s),
            failures: failures.map(Vec::as_slice),
            changes,
            length_s: length,
            interval_s: interval,
        };
        std::fs::create_dir_all(&plots_dir).map_err(|e| format!("{}: {e}", plots_dir.display()))?;
        let name = format!("{series}-{}.svg", hgrm::file_name(tag));
        plot::draw(&plots_dir.join(&name), &data)?;
        plots += 1;
        let _ = writeln!(md, "### {series} {tag}\n\n{failed} failures in the recording ({layer} layer; red lines: turned suspect, green: cleared).\n\n![{series} {tag}](plots/{name})\n");
    }

    let _ = writeln!(md, "## Latency\n");
    let mut rows: Vec<(&(String, String), &hdrhistogram::Histogram<u64>)> = r.histograms.iter().map(|(k, (_, h))| (k, h)).collect();
    rows.sort_by_key(|(_, h)| std::cmp::Reverse(h.value_at_quantile(0.99)));
    let _ = writeln!(md, "| series | destination | count | p50 | p90 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|");
    for ((series, tag), h) in rows.iter().take(30) {
        let _ = writeln!(
            md,
            "| {series} | {} | {} | {} | {} | {} | {} |",
            tag.replace('|', "\\|"),
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    if rows.len() > 30 {
        let _ = writeln!(md, "\n{} more in the interval logs (`observer report DIR`).", rows.len() - 30);
    }
    md.push('\n');

    let _ = writeln!(md, "## Lost events\n");
    let lost: Vec<String> = r
        .last
        .as_ref()
        .and_then(|l| l["lost"].as_object())
        .map(|o| o.iter().filter(|(k, v)| *k != "total" && v.as_u64().unwrap_or(0) > 0).map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let _ = writeln!(md, "{}\n", if lost.is_empty() { "None.".to_owned() } else { lost.join(", ") });

    let _ = writeln!(md, "## Thresholds in force\n\n```toml\n{}```", toml::to_string(&m["thresholds"]).unwrap_or_default());
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(plots)
}
