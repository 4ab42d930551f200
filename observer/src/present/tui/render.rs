//! Drawing: a pure function of [`App`]. Readable at 80x24; a larger terminal gets more rows
//! for destinations and the timeline.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Bar, BarChart, BarGroup, Block, Borders, Paragraph, Sparkline, Wrap},
};

use super::app::{App, rows};
use crate::{
    present::{Detail, ms, report::Report},
    verdict::{Layer, State, Verdict},
};

fn state_style(s: State) -> Style {
    match s {
        State::Suspect => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        State::Healthy => Style::default().fg(Color::Green),
        State::NoSignal => Style::default().fg(Color::DarkGray),
    }
}

fn uptime(s: f64) -> String {
    let s = s as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let Some(report) = &app.report else {
        f.render_widget(Paragraph::new("observer: waiting for the first report…"), area);
        return;
    };
    let timeline_h = if app.drill.is_some() { 0 } else if area.height >= 40 { 8 } else { 4 };
    let [header, body, timeline, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(6), Constraint::Length(timeline_h), Constraint::Length(1)])
            .areas(area);
    draw_header(f, header, app, report);
    match &app.drill {
        Some(key) => draw_drill(f, body, app, report, key),
        None => draw_panels(f, body, app, report),
    }
    if timeline_h > 0 {
        draw_timeline(f, timeline, app, report);
    }
    draw_footer(f, footer, app);
}

fn draw_header(f: &mut Frame, area: Rect, app: &App, r: &Report) {
    let lost = r.lost.get("total").copied().unwrap_or(0);
    let mut spans = vec![
        Span::styled("observer", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}  up {}  lost {}", r.host, uptime(r.uptime_s), lost)),
    ];
    if !r.disabled.is_empty() {
        // What this kernel or host cannot give: listed at the top of the bottom panel.
        spans.push(Span::styled(format!("  disabled {}", r.disabled.len()), Style::default().fg(Color::Yellow)));
    }
    if app.paused {
        spans.push(Span::styled("  PAUSED", Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)));
    }
    spans.push(Span::raw("  │ "));
    match &r.cause {
        Some(c) => {
            spans.push(Span::styled(
                format!("CAUSE: {}", c.layer.title()),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
            // The onset, on the clock of the report's timestamp (UTC).
            if let Some(since) = c.since.as_deref().and_then(|t| t.get(11..19)) {
                spans.push(Span::raw(format!(" since {since}")));
            }
            if c.confidence != "high" {
                spans.push(Span::styled(format!(" ({} confidence)", c.confidence), Style::default().fg(Color::Yellow)));
            }
            if let Some(e) = c.evidence.first() {
                spans.push(Span::raw(format!(" — {e}")));
            }
        }
        None => spans.push(Span::styled("no suspect layer", Style::default().fg(Color::Green))),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_panels(f: &mut Frame, area: Rect, app: &App, r: &Report) {
    // Layers with no signal take one line; the others share the rest.
    let constraints: Vec<Constraint> = Layer::ALL
        .iter()
        .map(|l| if r.verdicts.get(*l).verdict == State::NoSignal && *l as usize >= 2 { Constraint::Length(1) } else { Constraint::Fill(1) })
        .collect();
    let areas = Layout::vertical(constraints).split(area);
    for (i, layer) in Layer::ALL.into_iter().enumerate() {
        draw_panel(f, areas[i], app, r, layer, app.focus == i);
    }
}

fn title(layer: Layer, v: &Verdict, focused: bool) -> Line<'static> {
    let n = layer as usize + 1;
    let mut spans = vec![
        Span::styled(format!(" {n} {} ", layer.title()), if focused { Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED) } else { Style::default().add_modifier(Modifier::BOLD) }),
        Span::styled(format!(" {} ", v.verdict.word().to_uppercase()), state_style(v.verdict)),
    ];
    if let Some(by) = v.consequence_of {
        spans.push(Span::styled(format!("(consequence of {}) ", by.title()), Style::default().fg(Color::Yellow)));
    }
    Line::from(spans)
}

fn draw_panel(f: &mut Frame, area: Rect, app: &App, r: &Report, layer: Layer, focused: bool) {
    let v = r.verdicts.get(layer);
    if area.height <= 1 {
        let mut line = title(layer, v, focused);
        if let Some(note) = &v.note {
            line.spans.push(Span::styled(format!(" {note}"), Style::default().fg(Color::DarkGray)));
        }
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    let border = if focused { Style::default().fg(Color::Yellow) } else { Style::default() };
    let block = Block::default().borders(Borders::ALL).border_style(border).title(title(layer, v, focused));
    let inner = block.inner(area);
    f.render_widget(block, area);

    let table = table_lines(r, layer);
    let mut evidence: Vec<Line> = Vec::new();
    if v.evidence.is_empty() {
        let text = match (&v.note, v.verdict) {
            (Some(n), _) => n.clone(),
            (None, State::Healthy) => format!("no rule fired; {} in the window", plural(rows(r, layer).len(), "destination")),
            _ => String::new(),
        };
        evidence.push(Line::styled(text, Style::default().fg(Color::DarkGray)));
    } else {
        let style = Style::default().fg(Color::Red);
        evidence.extend(v.evidence.iter().map(|e| Line::styled(e.clone(), style)));
    }
    // Evidence wraps; the destination table gets its header and at least two rows.
    let width = inner.width.max(1) as usize;
    let wrapped: usize = evidence.iter().map(|l| l.width().max(1).div_ceil(width)).sum();
    let table_min = table.len().min(3) as u16;
    let evidence_h = (wrapped as u16).min(inner.height.saturating_sub(table_min)).max(1);
    let [ev_area, table_area] = Layout::vertical([Constraint::Length(evidence_h), Constraint::Min(0)]).areas(inner);
    f.render_widget(Paragraph::new(evidence).wrap(Wrap { trim: false }), ev_area);

    let lines: Vec<Line> = table
        .into_iter()
        .map(|line| match line {
            TableLine::Header(text) => Line::styled(text, Style::default().add_modifier(Modifier::UNDERLINED)),
            TableLine::Row(i, text) if focused && i == app.selected => {
                Line::styled(text, Style::default().add_modifier(Modifier::REVERSED))
            }
            TableLine::Row(_, text) | TableLine::Extra(text) => Line::raw(text),
        })
        .collect();
    f.render_widget(Paragraph::new(lines), table_area);
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// The tables of a layer panel, one per section with rows: a header, the rows, then lines
/// shown when there is room. Selectable rows come in the order of [`rows`].
fn table_lines(r: &Report, layer: Layer) -> Vec<TableLine> {
    let mut out = Vec::new();
    let mut index = 0;
    for section in r.sections_of(layer) {
        let t = section.table();
        out.extend(t.lead.into_iter().map(TableLine::Extra));
        if t.rows.is_empty() {
            continue;
        }
        out.push(TableLine::Header(t.header));
        for (_, text) in t.rows {
            out.push(TableLine::Row(index, text));
            index += 1;
        }
        out.extend(t.extra.into_iter().map(TableLine::Extra));
    }
    out
}

enum TableLine {
    Header(String),
    /// The row's index among the panel's selectable rows.
    Row(usize, String),
    Extra(String),
}

fn draw_timeline(f: &mut Frame, area: Rect, app: &App, r: &Report) {
    let block = Block::default().borders(Borders::TOP).title(" verdict changes ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    // Signals not collected come first: a verdict without them says less than it seems to.
    let disabled = r.disabled.iter().map(|d| {
        Line::styled(format!("disabled: {} ({}): {}", d.signals, d.source, d.reason), Style::default().fg(Color::Yellow))
    });
    let changes = app
        .timeline
        .iter()
        .rev()
        .map(|c| {
            let time = c.ts.get(11..19).unwrap_or(&c.ts).to_owned();
            let mut spans = vec![
                Span::raw(format!("{time} {:<8} ", c.layer.key())),
                Span::styled(c.from.word(), state_style(c.from)),
                Span::raw(" → "),
                Span::styled(c.to.word(), state_style(c.to)),
            ];
            if let Some(e) = c.evidence.first() {
                spans.push(Span::raw(format!("  {e}")));
            }
            Line::from(spans)
        });
    let lines: Vec<Line> = disabled.chain(changes).take(inner.height as usize).collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let keys = if app.drill.is_some() {
        "Esc back  p pause  c copy  r record  q quit"
    } else {
        "Tab/1-4 layer  ↑↓ select  Enter details  p pause  c copy  r record  q quit"
    };
    let mut spans = vec![Span::styled(keys, Style::default().fg(Color::DarkGray))];
    if app.recording.is_some() {
        spans.push(Span::styled("  ● REC (w report)", Style::default().fg(Color::Red)));
    }
    if let Some(s) = &app.status {
        spans.push(Span::styled(format!("  {s}"), Style::default().fg(Color::Yellow)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The drill-down's row: its section's layer title, what its activity counts, and details.
fn detail(r: &Report, key: &str) -> Option<(&'static str, &'static str, Option<Detail>)> {
    let (section, row) = key.split_once(' ')?;
    let s = r.section(section)?;
    Some((s.triage_layer().title(), s.activity_label(), s.detail(row)))
}

fn draw_drill(f: &mut Frame, area: Rect, app: &App, r: &Report, key: &str) {
    let addr = key.split_once(' ').map_or(key, |(_, row)| row);
    let (layer_title, activity, found) = detail(r, key).unwrap_or(("?", "events", None));
    let block = Block::default().borders(Borders::ALL).title(format!(" {layer_title} › {addr}  (Esc back) "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(Detail { counters, window: win, total, notes: extra }) = found else {
        f.render_widget(Paragraph::new("this destination left the report (idle or evicted)"), inner);
        return;
    };
    let [top, charts] = Layout::vertical([Constraint::Min(4), Constraint::Length(6)]).areas(inner);
    let [left, right] = Layout::horizontal([Constraint::Length(40), Constraint::Min(20)]).areas(top);
    let mut lines = vec![Line::styled(format!("{:<22} {:>7} {:>7}", "counter", "window", "total"), Style::default().add_modifier(Modifier::UNDERLINED))];
    for (name, w, t) in counters.iter().filter(|(_, w, t)| *w > 0 || *t > 0 || counters.len() <= 11) {
        lines.push(Line::raw(format!("{name:<22} {w:>7} {t:>7}")));
    }
    f.render_widget(Paragraph::new(lines), left);
    let mut lines = vec![Line::styled(
        format!("{:<7}{:>6}{:>6}{:>6}{:>6}{:>6}", "ms", "p50", "p95", "p99", "max", "n"),
        Style::default().add_modifier(Modifier::UNDERLINED),
    )];
    for (label, l) in [("window", win), ("total", total)] {
        lines.push(Line::raw(format!("{label:<7}{:>6}{:>6}{:>6}{:>6}{:>6}", ms(l.p50), ms(l.p95), ms(l.p99), ms(l.max), l.count)));
    }
    lines.push(Line::raw(""));
    lines.extend(extra.into_iter().map(Line::raw));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), right);

    let [spark, hist] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(charts);
    let rate_label = format!(" {activity} per interval ");
    let data: Vec<u64> = app.history.get(key).map(|h| h.iter().copied().collect()).unwrap_or_default();
    let width = spark.width.saturating_sub(2) as usize;
    let data = &data[data.len().saturating_sub(width)..];
    f.render_widget(Sparkline::default().block(Block::default().borders(Borders::ALL).title(rate_label)).data(data), spark);
    let labels = ["≤1", "≤5", "≤10", "≤50", "≤100", "≤500", "≤1s", ">1s"];
    let bars: Vec<Bar> = labels.iter().zip(win.histogram).map(|(l, v)| Bar::default().label(Line::from(*l)).value(v)).collect();
    f.render_widget(
        BarChart::default()
            .block(Block::default().borders(Borders::ALL).title(" window latency, ms "))
            .bar_width(4)
            .bar_gap(1)
            .data(BarGroup::default().bars(&bars)),
        hist,
    );
}
