//! TUI state and what each key does. Pure: no terminal, no I/O, so that draws are
//! snapshot-tested from fixed reports.

use std::collections::{HashMap, VecDeque};

use crate::{
    present::report::Report,
    verdict::{Change, Layer},
};

/// Per-interval rates kept for sparklines.
const HISTORY: usize = 120;
/// Verdict changes kept for the timeline.
const TIMELINE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextPanel,
    PrevPanel,
    Panel(usize),
    Up,
    Down,
    Enter,
    Back,
    Pause,
    Copy,
    /// Start a recording, or stop the one running (writing its tables and report).
    Record,
    /// Write the running recording's tables and report now.
    WriteReport,
}

/// What the runner must do after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// Write this evidence to a file and to the clipboard (OSC 52).
    Copy(String),
    ToggleRecording,
    WriteReport,
}

#[derive(Debug, Default)]
pub struct App {
    /// The report on screen (frozen while paused).
    pub report: Option<Report>,
    /// The newest report, kept while paused.
    latest: Option<Report>,
    pub timeline: VecDeque<Change>,
    /// Per destination key: attempts (TCP) or queries (DNS) per interval.
    pub history: HashMap<String, VecDeque<u64>>,
    last_totals: HashMap<String, u64>,
    pub focus: usize,
    pub selected: usize,
    /// Key of the destination shown in detail.
    pub drill: Option<String>,
    pub paused: bool,
    pub status: Option<String>,
    /// Where the running recording goes, if one runs.
    pub recording: Option<String>,
}

/// The selectable rows of a layer panel, as "<section> <row>" keys for history and drill-down.
pub fn rows(report: &Report, layer: Layer) -> Vec<String> {
    report
        .sections_of(layer)
        .flat_map(|s| s.table().rows.into_iter().map(move |(row, _)| format!("{} {row}", s.key())))
        .collect()
}

impl App {
    pub fn new() -> App {
        App::default()
    }

    pub fn focused_layer(&self) -> Layer {
        Layer::ALL[self.focus.min(3)]
    }

    /// A new report and the verdict changes that came with it.
    pub fn update(&mut self, report: Report, changes: Vec<Change>) {
        for (key, total) in totals(&report) {
            let prev = self.last_totals.insert(key.clone(), total).unwrap_or(total);
            let h = self.history.entry(key).or_default();
            h.push_back(total.saturating_sub(prev));
            if h.len() > HISTORY {
                h.pop_front();
            }
        }
        for c in changes {
            self.timeline.push_back(c);
            if self.timeline.len() > TIMELINE {
                self.timeline.pop_front();
            }
        }
        if self.paused {
            self.latest = Some(report);
        } else {
            self.report = Some(report);
            self.clamp_selection();
        }
    }

    fn clamp_selection(&mut self) {
        let n = self.report.as_ref().map_or(0, |r| rows(r, self.focused_layer()).len());
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    pub fn handle(&mut self, action: Action) -> Effect {
        match action {
            Action::Quit => return Effect::Quit,
            Action::NextPanel => self.focus = (self.focus + 1) % 4,
            Action::PrevPanel => self.focus = (self.focus + 3) % 4,
            Action::Panel(i) => self.focus = i.min(3),
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected += 1,
            Action::Enter => {
                if let Some(r) = &self.report {
                    self.drill = rows(r, self.focused_layer()).get(self.selected).cloned();
                }
            }
            Action::Back => self.drill = None,
            Action::Pause => {
                self.paused = !self.paused;
                if !self.paused
                    && let Some(r) = self.latest.take()
                {
                    self.report = Some(r);
                }
            }
            Action::Copy => {
                return match &self.report {
                    Some(r) => Effect::Copy(evidence_text(r)),
                    None => Effect::None,
                };
            }
            Action::Record => return Effect::ToggleRecording,
            Action::WriteReport if self.recording.is_some() => return Effect::WriteReport,
            Action::WriteReport => self.status = Some("no recording to write (r starts one)".to_owned()),
        }
        if matches!(action, Action::NextPanel | Action::PrevPanel | Action::Panel(_)) {
            self.selected = 0;
            self.drill = None;
        }
        self.clamp_selection();
        Effect::None
    }
}

fn totals(r: &Report) -> Vec<(String, u64)> {
    r.sections
        .0
        .iter()
        .flat_map(|s| s.activity().into_iter().map(move |(row, n)| (format!("{} {row}", s.key()), n)))
        .collect()
}

/// The text `c` copies: every layer's verdict with its evidence, each line stamped with the
/// time and host so that it can be pasted into an incident channel as it is.
pub fn evidence_text(r: &Report) -> String {
    let stamp = format!("[{} {}]", r.ts, r.host);
    let mut out = String::new();
    match &r.cause {
        Some(c) => {
            out.push_str(&format!("{stamp} likely cause: {} (confidence {})", c.layer.title(), c.confidence));
            if let Some(since) = &c.since {
                out.push_str(&format!("; suspect since {since}"));
            }
            if !c.consequences.is_empty() {
                let names: Vec<&str> = c.consequences.iter().map(|l| l.title()).collect();
                out.push_str(&format!("; consequences: {}", names.join(", ")));
            }
            if !c.also_suspect.is_empty() {
                let names: Vec<&str> = c.also_suspect.iter().map(|l| l.title()).collect();
                out.push_str(&format!("; also suspect: {}", names.join(", ")));
            }
            out.push('\n');
            if let Some(note) = &c.confidence_note {
                out.push_str(&format!("{stamp} {note}\n"));
            }
        }
        None => out.push_str(&format!("{stamp} no suspect layer in the last {} s\n", r.window_s)),
    }
    for l in Layer::ALL {
        let v = r.verdicts.get(l);
        out.push_str(&format!("{stamp} {} {}", l.title(), v.verdict.word()));
        if let Some(by) = v.consequence_of {
            out.push_str(&format!(" (consequence of {})", by.title()));
        }
        out.push('\n');
        for e in &v.evidence {
            out.push_str(&format!("{stamp}   {e}\n"));
        }
    }
    out
}
