//! The two DNS rings (the kernel's DNS_EVENTS, written by the even CPUs, and DNS_EVENTS_1,
//! by the odd ones), read as one stream in the order of the messages' times.
//!
//! A query and its response may sit in different rings, and one ring read after the other
//! can hold the response without its query: the query was written after its ring was read.
//! But a response is always written after its query: the program that copies a query runs
//! before the packet leaves (or, arriving, before a socket sees it), so the answer starts
//! later. Everything read whose time is up to the start of the read is therefore complete,
//! queries included; what is newer waits for the next read.

use std::collections::VecDeque;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::monotonic_ns;
use crate::events::{Event, Input, Mono, decode_dns};

pub struct DnsRings {
    pub rings: [AsyncFd<RingBuf<MapData>>; 2],
    /// Events newer than the start of the last read, for the next.
    held: Vec<Event>,
    /// How many the last read gave: the next one's vector is sized by it, not grown.
    last_len: usize,
}

impl DnsRings {
    pub fn new(rings: [AsyncFd<RingBuf<MapData>>; 2]) -> DnsRings {
        DnsRings { rings, held: Vec::new(), last_len: 0 }
    }

    /// Everything in both rings that is complete, in time order; what cannot be decoded is
    /// counted in `bad`.
    pub fn drain(&mut self, bad: &mut u64) -> Vec<Event> {
        let start = Mono(monotonic_ns());
        let mut events = Vec::with_capacity(self.last_len.max(64) + self.held.len());
        events.append(&mut self.held);
        for ring in &mut self.rings {
            let ring = ring.get_mut();
            while let Some(item) = ring.next() {
                match decode_dns(&item) {
                    Some(m) => events.push(Event::Dns(m)),
                    None => *bad += 1,
                }
            }
        }
        let ready = in_time_order(events, &mut self.held, start);
        self.last_len = ready.len();
        ready
    }

    /// At exit, after the last drain: the events it held back for a next read that will not
    /// come, queued before the final tick (nothing newer will be read, so they are complete
    /// as far as observer will ever know).
    pub fn release_held(&mut self, ready: &mut VecDeque<Input>) {
        before_last_tick(std::mem::take(&mut self.held), ready);
    }

    /// [`DnsRings::drain`], queued on `ready` when there is anything.
    pub fn drain_into(&mut self, bad: &mut u64, ready: &mut VecDeque<Input>) {
        let events = self.drain(bad);
        if !events.is_empty() {
            ready.push_back(Input::Events(events));
        }
    }
}

/// `events` queued just before the last tick in `ready` (at the end if there is none).
fn before_last_tick(events: Vec<Event>, ready: &mut VecDeque<Input>) {
    if events.is_empty() {
        return;
    }
    let at = ready.iter().rposition(|i| matches!(i, Input::Tick(_))).unwrap_or(ready.len());
    ready.insert(at, Input::Events(events));
}

fn at(e: &Event) -> Mono {
    match e {
        Event::Dns(m) => m.at,
        _ => Mono(0),
    }
}

/// `events` sorted by time, up to `start`; the newer ones go to `held`. Each ring is written
/// almost in order, so the stable sort only merges a few runs.
fn in_time_order(mut events: Vec<Event>, held: &mut Vec<Event>, start: Mono) -> Vec<Event> {
    events.sort_by_key(at);
    let complete = events.partition_point(|e| at(e) <= start);
    *held = events.split_off(complete);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DnsMessage;

    fn msg(at: u64, is_response: bool) -> Event {
        Event::Dns(DnsMessage {
            at: Mono(at),
            client: "10.0.0.1:40000".parse().unwrap(),
            resolver: "10.0.0.53:53".parse().unwrap(),
            answerer: None,
            is_response,
            ifindex: 2,
            fragmented: false,
            dns_len: 0,
            ttl: None,
            bytes: vec![at as u8],
        })
    }

    fn times(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| at(e).0).collect()
    }

    #[test]
    fn two_rings_read_one_after_the_other_come_out_in_time_order_and_newer_ones_wait() {
        // Ring 0 read first: queries at 10 and 30. Ring 1 read next: the response at 20 to
        // the query at 10, and one at 40 to a query at 35 that went to ring 0 after its read
        // (it is not here); the read started at 36.
        let events = vec![msg(10, false), msg(30, false), msg(20, true), msg(40, true)];
        let mut held = Vec::new();
        let ready = in_time_order(events, &mut held, Mono(36));
        assert_eq!(times(&ready), [10, 20, 30]);
        assert_eq!(times(&held), [40], "after the read's start: its query may be unread");
        // The next read has the query at 35: the held response comes after it.
        let mut next = std::mem::take(&mut held);
        next.push(msg(35, false));
        let ready = in_time_order(next, &mut held, Mono(50));
        assert_eq!(times(&ready), [35, 40]);
        assert!(held.is_empty());
    }

    #[test]
    fn events_held_at_exit_go_before_the_final_tick() {
        let tick = || Input::Tick(crate::source::Scripted::tick(1.0, Default::default(), vec![]));
        let mut ready = VecDeque::from([Input::Events(vec![msg(10, false)]), tick()]);
        before_last_tick(vec![msg(40, true)], &mut ready);
        let shape: Vec<String> = ready
            .iter()
            .map(|i| match i {
                Input::Events(e) => format!("events {:?}", times(e)),
                Input::Tick(_) => "tick".to_owned(),
            })
            .collect();
        assert_eq!(shape, ["events [10]", "events [40]", "tick"]);
        before_last_tick(vec![], &mut ready);
        assert_eq!(ready.len(), 3, "nothing held, nothing queued");
        let mut no_tick = VecDeque::new();
        before_last_tick(vec![msg(5, false)], &mut no_tick);
        assert!(matches!(no_tick.front(), Some(Input::Events(e)) if times(e) == [5]));
    }

    #[test]
    fn messages_with_one_time_keep_their_order() {
        let events = vec![msg(5, false), msg(5, true)];
        let mut held = Vec::new();
        let ready = in_time_order(events, &mut held, Mono(5));
        assert!(matches!((&ready[0], &ready[1]), (Event::Dns(a), Event::Dns(b)) if !a.is_response && b.is_response));
    }
}
