//! Hysteresis: a layer turns suspect as soon as a rule fires, and turns back only after its
//! rules have stayed quiet for `verdict.clear_after_s`. Meanwhile it stays suspect with the
//! evidence of its last suspect interval, and its note says how long it has been quiet. A
//! rule that hovers at its threshold then makes one change, not one per interval.

use std::time::Duration;

use super::{Layer, State, Verdict, Verdicts};
use crate::events::Mono;

#[derive(Debug, Default)]
pub struct Hold {
    /// Per layer (in [`Layer::ALL`] order): when its rules last fired, and that verdict.
    last: [Option<(Mono, Verdict)>; 4],
}

impl Hold {
    pub fn apply(&mut self, v: &mut Verdicts, now: Mono, clear_after: Duration) {
        for (i, layer) in Layer::ALL.into_iter().enumerate() {
            let current = v.get_mut(layer);
            if current.verdict == State::Suspect {
                self.last[i] = Some((now, current.clone()));
                continue;
            }
            let Some((at, held)) = &self.last[i] else { continue };
            let quiet = now.since(*at);
            if quiet >= clear_after {
                self.last[i] = None;
                continue;
            }
            let mut kept = held.clone();
            let line = format!(
                "rules quiet for {:.1} s: clears after {:.0} s quiet (verdict.clear_after_s)",
                quiet.as_secs_f64(),
                clear_after.as_secs_f64()
            );
            kept.note = Some(match kept.note.take() {
                Some(n) => format!("{line}; {n}"),
                None => line,
            });
            *current = kept;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(tcp: State) -> Verdicts {
        let mut v = Verdicts {
            dns: Verdict::empty(State::Healthy),
            tcp_tls: Verdict::empty(tcp),
            routing: Verdict::empty(State::NoSignal),
            l7: Verdict::empty(State::NoSignal),
        };
        if tcp == State::Suspect {
            v.tcp_tls.evidence.push("TCP: 3/3 connects refused".into());
        }
        v
    }

    #[test]
    fn a_suspect_layer_stays_suspect_until_quiet_for_the_hold_time() {
        let mut h = Hold::default();
        let s = |secs: u64| Mono(secs * 1_000_000_000);
        let hold = Duration::from_secs(5);
        let mut v = verdicts(State::Suspect);
        h.apply(&mut v, s(10), hold);
        // Quiet, then firing again, then quiet: suspect all along.
        for (at, state) in [(11, State::Healthy), (12, State::Suspect), (13, State::Healthy), (16, State::NoSignal)] {
            let mut v = verdicts(state);
            h.apply(&mut v, s(at), hold);
            assert_eq!(v.tcp_tls.verdict, State::Suspect, "at {at}");
            assert_eq!(v.tcp_tls.evidence, vec!["TCP: 3/3 connects refused".to_owned()]);
            assert_eq!(v.dns.verdict, State::Healthy, "another layer is untouched");
        }
        let mut v = verdicts(State::Healthy);
        h.apply(&mut v, s(13), hold);
        assert!(v.tcp_tls.note.as_deref().unwrap_or("").contains("quiet for 1.0 s"), "{:?}", v.tcp_tls.note);
        let mut v = verdicts(State::Healthy);
        h.apply(&mut v, s(17), hold);
        assert_eq!(v.tcp_tls.verdict, State::Healthy, "5 s quiet since 12 s");
    }
}
