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
use bytes::BytesMut;
use tokio::io::unix::AsyncFd;

use super::{live::BATCH, monotonic_ns};
use crate::events::{Event, Input, Mono, decode_dns};

pub struct DnsRings {
    pub rings: [AsyncFd<RingBuf<MapData>>; 2],
    /// What each ring gave at a read, kept between reads for its capacity: under a flood a
    /// read is thousands of events, and a vector that large, allocated and freed at each
    /// read, was mapped and faulted in anew every time.
    read: [Vec<Event>; 2],
    /// Events newer than the start of the last read, in time order, for the next.
    held: Vec<Event>,
    /// `held`'s last vector, empty, for the next.
    spare: Vec<Event>,
    /// Where the messages' bytes are copied (see [`decode_dns`]).
    room: BytesMut,
}

impl DnsRings {
    pub fn new(rings: [AsyncFd<RingBuf<MapData>>; 2]) -> DnsRings {
        DnsRings { rings, read: [Vec::new(), Vec::new()], held: Vec::new(), spare: Vec::new(), room: BytesMut::new() }
    }

    /// Everything in both rings that is complete, in time order, queued on `ready` in
    /// batches of at most [`BATCH`]; what cannot be decoded is counted in `bad`.
    pub fn drain_into(&mut self, bad: &mut u64, ready: &mut VecDeque<Input>) {
        let start = Mono(monotonic_ns());
        for (ring, out) in self.rings.iter_mut().zip(&mut self.read) {
            let ring = ring.get_mut();
            while let Some(item) = ring.next() {
                match decode_dns(&item, &mut self.room) {
                    Some(m) => out.push(Event::Dns(m)),
                    None => *bad += 1,
                }
            }
            // One CPU writes its records in time order; a ring that several CPUs write is
            // nearly in order, and a stable sort only merges its runs.
            if !out.is_sorted_by_key(at) {
                out.sort_by_key(at);
            }
        }
        // The held events are merged from a vector that is kept, emptied, as the next `held`:
        // its room is not allocated again at every read.
        let mut earlier = std::mem::replace(&mut self.held, std::mem::take(&mut self.spare));
        let [even, odd] = &mut self.read;
        merge_into([&mut earlier, even, odd], start, ready, &mut self.held);
        self.spare = earlier;
    }

    /// At exit, after the last drain: the events it held back for a next read that will not
    /// come, queued before the final tick (nothing newer will be read, so they are complete
    /// as far as observer will ever know).
    pub fn release_held(&mut self, ready: &mut VecDeque<Input>) {
        before_last_tick(std::mem::take(&mut self.held), ready);
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

/// `runs`, each in time order, merged into one (on equal times the earlier run's event
/// first, as a stable sort of their concatenation would) and emptied: the events up to
/// `start` are queued on `ready` in batches of at most [`BATCH`] (each small enough to come
/// from the heap, not a mapping of its own); the newer ones go to `held`.
fn merge_into(mut runs: [&mut Vec<Event>; 3], start: Mono, ready: &mut VecDeque<Input>, held: &mut Vec<Event>) {
    let mut left: usize = runs.iter().map(|r| r.len()).sum();
    // Each run's next event is looked at where it lies: an event is moved once, into its
    // batch (a peeked-at iterator would move each one twice, and they are 152 bytes).
    let mut heads = runs.each_mut().map(|r| r.drain(..));
    let mut batch: Vec<Event> = Vec::new();
    loop {
        let mut earliest: Option<(usize, Mono)> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(t) = head.as_slice().first().map(at)
                && earliest.is_none_or(|(_, e)| t < e)
            {
                earliest = Some((i, t));
            }
        }
        let Some((i, t)) = earliest else { break };
        let Some(event) = heads[i].next() else { break };
        left -= 1;
        if t > start {
            held.push(event);
            continue;
        }
        if batch.capacity() == 0 {
            batch.reserve_exact((left + 1).min(BATCH));
        }
        batch.push(event);
        if batch.len() == BATCH {
            ready.push_back(Input::Events(std::mem::take(&mut batch)));
        }
    }
    if !batch.is_empty() {
        ready.push_back(Input::Events(batch));
    }
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
            bytes: vec![at as u8].into(),
        })
    }

    fn times(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| at(e).0).collect()
    }

    /// The events queued on `ready`, batch by batch.
    fn batches(ready: &VecDeque<Input>) -> Vec<Vec<u64>> {
        ready
            .iter()
            .map(|i| match i {
                Input::Events(e) => times(e),
                Input::Tick(_) => vec![],
            })
            .collect()
    }

    /// [`merge_into`] of what was held and the two rings' reads, in one batch or none.
    fn merged(held: &mut Vec<Event>, mut even: Vec<Event>, mut odd: Vec<Event>, start: u64) -> Vec<u64> {
        let mut earlier = std::mem::take(held);
        let mut ready = VecDeque::new();
        merge_into([&mut earlier, &mut even, &mut odd], Mono(start), &mut ready, held);
        assert!(earlier.is_empty() && even.is_empty() && odd.is_empty(), "every run is emptied");
        batches(&ready).concat()
    }

    #[test]
    fn two_rings_read_one_after_the_other_come_out_in_time_order_and_newer_ones_wait() {
        // Ring 0 read first: queries at 10 and 30. Ring 1 read next: the response at 20 to
        // the query at 10, and one at 40 to a query at 35 that went to ring 0 after its read
        // (it is not here); the read started at 36.
        let mut held = Vec::new();
        let ready = merged(&mut held, vec![msg(10, false), msg(30, false)], vec![msg(20, true), msg(40, true)], 36);
        assert_eq!(ready, [10, 20, 30]);
        assert_eq!(times(&held), [40], "after the read's start: its query may be unread");
        // The next read has the query at 35: the held response comes after it.
        let ready = merged(&mut held, vec![msg(35, false)], vec![], 50);
        assert_eq!(ready, [35, 40]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_large_read_is_queued_in_batches_in_order() {
        let even: Vec<Event> = (0..BATCH as u64 + 10).map(|t| msg(2 * t, false)).collect();
        let odd: Vec<Event> = (0..BATCH as u64 + 10).map(|t| msg(2 * t + 1, true)).collect();
        let mut held = Vec::new();
        let mut earlier = Vec::new();
        let (mut e, mut o) = (even, odd);
        let mut ready = VecDeque::new();
        merge_into([&mut earlier, &mut e, &mut o], Mono(u64::MAX), &mut ready, &mut held);
        let b = batches(&ready);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [BATCH, BATCH, 20]);
        let all = b.concat();
        assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "every time once, in order");
        assert!(ready.iter().all(|i| matches!(i, Input::Events(e) if e.capacity() <= BATCH)), "no batch above its size");
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
        // Equal times: what was held first, then the even ring, then the odd one.
        let mut held = vec![msg(5, false)];
        let mut earlier = std::mem::take(&mut held);
        let (mut even, mut odd) = (vec![msg(5, true)], vec![msg(5, false), msg(6, true)]);
        let mut ready = VecDeque::new();
        merge_into([&mut earlier, &mut even, &mut odd], Mono(6), &mut ready, &mut held);
        let Some(Input::Events(e)) = ready.front() else { panic!("one batch") };
        let kinds: Vec<bool> = e.iter().map(|e| matches!(e, Event::Dns(m) if m.is_response)).collect();
        assert_eq!(kinds, [false, true, false, true]);
    }
}
