//! One SVG per troubled destination: its latency p50 and p99 per interval above, its
//! failures per interval below, and the verdict changes as vertical lines on both.

use std::path::Path;

use plotters::prelude::*;

use super::recording::Series;

/// What one plot shows.
pub struct PlotData<'a> {
    pub title: String,
    pub latency: Option<&'a Series>,
    pub failures: Option<&'a [(f64, u64)]>,
    /// (seconds, turned suspect): the layer's verdict changes.
    pub changes: Vec<(f64, bool)>,
    pub length_s: f64,
    pub interval_s: f64,
}

pub fn draw(path: &Path, d: &PlotData<'_>) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(300);
    let x = 0f64..d.length_s.max(1.0);

    let ms = |us: u64| us as f64 / 1000.0;
    let top = d.latency.map_or(1.0, |s| s.iter().map(|p| ms(p.2)).fold(1.0, f64::max)) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(&d.title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), 0f64..top)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().y_desc("latency (ms)").x_desc("seconds since the recording started").draw().map_err(|e| err(&e))?;
    if let Some(s) = d.latency {
        chart
            .draw_series(LineSeries::new(s.iter().map(|p| (p.0, ms(p.1))), &BLUE))
            .map_err(|e| err(&e))?
            .label("p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(s.iter().map(|p| (p.0, ms(p.2))), &RED))
            .map_err(|e| err(&e))?
            .label("p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    }
    for (t, suspect) in &d.changes {
        let color = if *suspect { RED.mix(0.6) } else { GREEN.mix(0.6) };
        chart.draw_series(std::iter::once(PathElement::new(vec![(*t, 0.0), (*t, top)], color.stroke_width(2)))).map_err(|e| err(&e))?;
    }
    if d.latency.is_some() {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    }

    let most = d.failures.map_or(1, |f| f.iter().map(|p| p.1).max().unwrap_or(1)).max(1) as f64 * 1.1;
    let mut bars = ChartBuilder::on(&lower)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0f64..most)
        .map_err(|e| err(&e))?;
    bars.configure_mesh().y_desc("failures per interval").draw().map_err(|e| err(&e))?;
    if let Some(f) = d.failures {
        let w = d.interval_s;
        bars.draw_series(f.iter().map(|(t, n)| Rectangle::new([(t - w, 0.0), (*t, *n as f64)], RED.filled()))).map_err(|e| err(&e))?;
    }
    for (t, suspect) in &d.changes {
        let color = if *suspect { RED.mix(0.6) } else { GREEN.mix(0.6) };
        bars.draw_series(std::iter::once(PathElement::new(vec![(*t, 0.0), (*t, most)], color.stroke_width(2)))).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
