//! Where the layers' input comes from. The live probe is one source (`probe::live`); a
//! scripted source replays recorded or synthetic inputs with their own clock, for tests,
//! snapshots and, later, offline replay and the daemon's socket.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use crate::events::{Counters, Input, Mono, Tick};

/// A stream of inputs: events as they arrive and a tick at the end of each interval. Every
/// timestamp comes from the source.
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait Source {
    /// The next input, or `None` when the source has ended. Cancel-safe: the runtime selects
    /// on it beside signals and key presses.
    async fn next(&mut self) -> anyhow::Result<Option<Input>>;

    /// What is left at exit, without waiting: the last events, then one last tick.
    fn finish(&mut self) -> Vec<Input>;
}

/// What [`Source::finish`] left, each with whether it is the final tick: only the last tick
/// is. A signal can arrive while a tick read earlier still waits to be handed out, and then
/// `finish` holds two; both marked final made two "final" reports, the first of them older.
pub fn with_final(rest: Vec<Input>) -> impl Iterator<Item = (Input, bool)> {
    let last_tick = rest.iter().rposition(|i| matches!(i, Input::Tick(_)));
    rest.into_iter().enumerate().map(move |(i, input)| (input, Some(i) == last_tick))
}

/// Inputs given up front, yielded in order. Tests drive whole scenarios with it; an offline
/// replay of a recording will be one.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Default)]
pub struct Scripted {
    inputs: VecDeque<Input>,
    last_tick: Option<Tick>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl Scripted {
    pub fn new(inputs: impl IntoIterator<Item = Input>) -> Scripted {
        Scripted { inputs: inputs.into_iter().collect(), last_tick: None }
    }

    /// A tick `secs` after the script's start, with a fixed wall-clock origin
    /// (2026-11-25T17:00:00Z) so that reports from a script are reproducible.
    pub fn tick(secs: f64, counters: Counters, disabled: Vec<crate::events::Disabled>) -> Tick {
        let at = Duration::from_secs_f64(secs);
        Tick {
            at: Mono(0).after(at),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_626_000) + at,
            counters,
            lost: vec![],
            disabled,
            notes: vec![],
        }
    }
}

impl Source for Scripted {
    async fn next(&mut self) -> anyhow::Result<Option<Input>> {
        let input = self.inputs.pop_front();
        if let Some(Input::Tick(t)) = &input {
            self.last_tick = Some(t.clone());
        }
        Ok(input)
    }

    fn finish(&mut self) -> Vec<Input> {
        let mut rest: Vec<Input> = self.inputs.drain(..).collect();
        if !matches!(rest.last(), Some(Input::Tick(_)))
            && let Some(t) = self.last_tick.take()
        {
            rest.push(Input::Tick(t));
        }
        rest
    }
}
