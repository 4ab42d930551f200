//! The live terminal view. State and drawing are pure ([`app`], [`render`]); this module owns
//! the terminal: raw mode, the alternate screen, a panic hook that restores both, and a thread
//! that turns key presses into actions so the main loop never blocks on the terminal.

pub mod app;
pub mod render;
#[cfg(test)]
mod tests;

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use crossterm::{
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};
use tokio::sync::mpsc;

pub use app::{Action, App, Effect};

/// Something from the keyboard or the terminal.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    Action(Action),
    Redraw,
}

pub fn key_action(code: KeyCode, modifiers: KeyModifiers) -> Option<Action> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Tab => Action::NextPanel,
        KeyCode::BackTab => Action::PrevPanel,
        KeyCode::Char(c @ '1'..='4') => Action::Panel(c as usize - '1' as usize),
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        KeyCode::Char('p') | KeyCode::Char(' ') => Action::Pause,
        KeyCode::Char('c') => Action::Copy,
        KeyCode::Char('r') => Action::Record,
        KeyCode::Char('w') => Action::WriteReport,
        _ => return None,
    })
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

pub struct Tui {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
    pub app: App,
    inputs: mpsc::UnboundedReceiver<Input>,
    evidence_dir: PathBuf,
}

impl Tui {
    pub fn start() -> anyhow::Result<Tui> {
        // Restore the terminal before any panic message is printed.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        execute!(std::io::stdout(), EnterAlternateScreen, crossterm::cursor::Hide).context("cannot set up the terminal")?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout())).context("cannot draw on the terminal")?;
        let (tx, inputs) = mpsc::unbounded_channel();
        // crossterm's read() blocks; a thread of its own keeps the event loop free.
        std::thread::spawn(move || {
            while let Ok(ev) = event::read() {
                let input = match ev {
                    Event::Key(k) if k.kind != KeyEventKind::Release => key_action(k.code, k.modifiers).map(Input::Action),
                    Event::Resize(..) => Some(Input::Redraw),
                    _ => None,
                };
                if let Some(i) = input
                    && tx.send(i).is_err()
                {
                    break;
                }
            }
        });
        let evidence_dir = std::env::var_os("OBSERVER_EVIDENCE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(std::env::temp_dir);
        Ok(Tui { terminal, app: App::new(), inputs, evidence_dir })
    }

    pub fn draw(&mut self) -> anyhow::Result<()> {
        let app = &self.app;
        self.terminal.draw(|f| render::draw(f, app)).context("drawing the TUI failed")?;
        Ok(())
    }

    pub async fn next_input(&mut self) -> Option<Input> {
        self.inputs.recv().await
    }

    /// Apply an action; true when the user asked to quit.
    /// Apply a key's action; what only the runner can do (quit, recordings) comes back.
    pub fn apply(&mut self, action: Action) -> anyhow::Result<Effect> {
        let effect = match self.app.handle(action) {
            Effect::Copy(text) => {
                self.app.status = Some(self.copy(&text));
                Effect::None
            }
            other => other,
        };
        self.draw()?;
        Ok(effect)
    }

    /// Where evidence copies and recordings started here go.
    pub fn evidence_dir(&self) -> &std::path::Path {
        &self.evidence_dir
    }

    /// Write the evidence to a file and offer it to the terminal's clipboard (OSC 52).
    fn copy(&mut self, text: &str) -> String {
        let stamp = self.app.report.as_ref().map(|r| r.ts.replace(':', "-")).unwrap_or_default();
        let path = self.evidence_dir.join(format!("observer-evidence-{stamp}.txt"));
        let saved = std::fs::write(&path, text);
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        let out = self.terminal.backend_mut();
        let _ = write!(out, "\x1b]52;c;{b64}\x07");
        let _ = out.flush();
        match saved {
            Ok(()) => format!("evidence copied (OSC 52) and saved to {}", path.display()),
            // The clipboard offer cannot be confirmed, so a failed save is the headline.
            Err(e) => format!(
                "evidence NOT saved: cannot write {}: {e} (observer runs as uid {} after attach; set OBSERVER_EVIDENCE_DIR); offered to the terminal's clipboard (OSC 52) only",
                path.display(),
                unsafe { libc::geteuid() }
            ),
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}
