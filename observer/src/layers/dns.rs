//! Layer 1, DNS: per resolver and per (qname, qtype), from every DNS message on the wire.
//!
//! The kernel counts queries and responses by rcode exactly (those survive ring-buffer
//! overflow). Userspace parses each copied message with simple-dns, matches a response to its
//! query by client, resolver, id and qname, and adds what needs both halves: latency,
//! unanswered queries, NODATA, answer sets, malformed messages and divergent resolvers.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque, hash_map::Entry},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use observer_common::{
    counter_set,
    dns::{dns_counter as kc, iface_counter as ic},
    lost,
};
use serde::Serialize;

use super::{
    Aggregator, Map,
    dense::DenseMap,
    counts::Counts,
    latency::{LatencySummary, LatencyWindow},
    small_set::SmallSet,
    window::{Tally, WindowedCounts},
};
use crate::events::{DnsMessage, DnsSnapshot, Event, Mono, Tick};
use parse::{QType, dns_id, is_nxdomain};

counter_set! {
    /// Per-resolver counters that only userspace can know.
    pub mod resolver_counter {
        UNANSWERED = "unanswered",
        MALFORMED = "malformed",
        NODATA = "nodata",
        /// Responses with no query seen (sent before observer started, or the query was lost).
        UNMATCHED_RESPONSES = "unmatched_responses",
        /// Messages over 512 bytes: only their first 512 bytes are copied, so they are matched by
        /// client, resolver and id, and not parsed further.
        OVERSIZE = "oversize",
        /// NXDOMAINs that were search-list expansions of a name that then resolved
        /// (see `search`): context, not errors.
        SEARCH_NXDOMAIN = "search_nxdomain",
        /// NXDOMAIN responses read from the ring. The kernel's `nxdomain` counts each one in
        /// the interval of its reading; this one, like `search_nxdomain`, in the interval in
        /// which it is read: the excuses are subtracted from this one (see the DNS rules).
        NXDOMAIN_SEEN = "nxdomain_seen",
    }
}
use resolver_counter as rc;

counter_set! {
    /// Per interface: messages and first fragments from the events, the rest from the kernel.
    pub mod iface_view_counter {
        /// DNS messages counted here (their first sighting on any hook).
        DNS_MESSAGES = "dns_messages",
        DNS_DUPLICATES = "dns_duplicates",
        /// DNS messages that were the first fragment of a fragmented datagram.
        DNS_FRAGMENTED = "dns_fragmented",
        UDP_FRAGMENTS = "udp_fragments",
        EXT_HEADERS_TOO_DEEP = "ext_headers_too_deep",
    }
}
use iface_view_counter as ivc;

/// Interfaces remembered by index for the event counts (interfaces come and go on a busy node).
const MAX_IFACES: usize = 4096;

counter_set! {
    /// Per-(qname, qtype) counters, from parsed messages.
    pub mod name_counter {
        QUERIES = "queries",
        NOERROR = "noerror",
        NXDOMAIN = "nxdomain",
        SERVFAIL = "servfail",
        REFUSED = "refused",
        OTHER_RCODE = "other_rcode",
        NODATA = "nodata",
        TRUNCATED = "truncated",
        UNANSWERED = "unanswered",
        /// Of `nxdomain`: search-list expansions of a name that then resolved.
        SEARCH_NXDOMAIN = "search_nxdomain",
    }
}
use name_counter as nc;

/// How long a query must have waited to count towards a resolver's silence: longer than
/// any answer in flight takes.
/// Lookup latency is judged over this much recent time as well as over the window.
pub const RECENT: Duration = Duration::from_secs(2);

const SILENT_MIN_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub window: Duration,
    /// A query with no response after this long is unanswered.
    pub unanswered_after: Duration,
    /// Names kept (the least recently seen go first).
    pub max_names: usize,
    /// Queries waiting for a response, at most; more are counted in `pending_dropped`.
    pub max_pending: usize,
    /// (qname, qtype) entries per report, the most troubled first.
    pub top_names: usize,
}

type PendingKey = (SocketAddr, SocketAddr, u16);
/// (qname, qtype), the qname lower-cased without the trailing dot; shared with the parsed
/// messages that name it.
type NameKey = (Arc<str>, QType);
/// A resolver's last address answer for a name: when, and which addresses.
type AnswerSet = (SocketAddr, Mono, SmallSet<IpAddr>);

#[derive(Debug, Clone)]
struct Pending {
    at: Mono,
    qname: Arc<str>,
    qtype: QType,
}

/// The queries waiting under one (client, resolver, id): one, unless a stub sends its A and
/// AAAA queries with one id (musl does).
type Waiting = smallvec::SmallVec<[Pending; 1]>;

/// Addresses remembered per resolver that answered for it through NAT.
const MAX_ANSWERERS: usize = 8;

#[derive(Debug, Default)]
struct ResolverState {
    /// Where its answers really came from, when NAT rewrote the address the client used.
    answered_by: SmallSet<SocketAddr>,
    kernel: WindowedCounts<{ kc::COUNT }>,
    user: Tally<{ rc::COUNT }>,
    latency: LatencyWindow,
    /// When it last answered anything.
    last_response: Option<Mono>,
    /// At the last reading: queries waiting for it that it has answered nothing since, and
    /// how long the oldest of them has waited.
    silent: (u64, Duration),
    /// Per-interval p99 lookup latencies (µs) over [`TYPICAL_SPAN`]: their median is what
    /// is usual for this resolver, and an episode of slowness does not move it.
    interval_p99s: VecDeque<(Mono, u64)>,
}

/// How far back the resolver's usual p99 looks.
const TYPICAL_SPAN: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct NameState {
    counts: Tally<{ nc::COUNT }>,
    latency: LatencyWindow,
    answers: SmallSet<String>,
    resolvers: SmallSet<SocketAddr>,
    /// The reading it was last seen at, plus one (0: none yet), in 8 bytes where an
    /// `Option<Mono>` takes 16 (50,000 names).
    last_seen: u64,
    /// Each resolver's latest address answer within the window, sorted by resolver: for
    /// divergence.
    answer_sets: Box<[AnswerSet]>,
}

impl NameState {
    fn answered(&mut self, resolver: SocketAddr, at: Mono, addresses: &SmallSet<IpAddr>) {
        match self.answer_sets.binary_search_by_key(&resolver, |a| a.0) {
            Ok(i) => {
                let set = &mut self.answer_sets[i];
                set.1 = at;
                if set.2 != *addresses {
                    set.2 = addresses.clone();
                }
            }
            Err(i) => super::exact::insert(&mut self.answer_sets, i, (resolver, at, addresses.clone())),
        }
    }
}

#[derive(Debug)]
pub struct DnsLayer {
    cfg: DnsConfig,
    resolvers: Map<SocketAddr, ResolverState>,
    names: DenseMap<NameKey, NameState>,
    pending: Map<PendingKey, Waiting>,
    cache: cache::ParseCache,
    pending_len: usize,
    /// The time of the last reading, stamped on answers seen since.
    now: Option<Mono>,
    /// Interfaces watched, as of the last reading.
    interfaces: Vec<String>,
    search: search::SearchList,
    per_interface: Map<String, WindowedCounts<{ ivc::COUNT }>>,
    /// Since-start (messages, first fragments) per interface index, from the events.
    iface_events: Map<u32, [u64; 2]>,
    /// Interface index -> name, as of the last reading.
    iface_names: Map<u32, String>,
    pub pending_dropped: u64,
    /// Resolver entries seen evicted from the kernel table (LRU).
    pub evictions: u64,
    /// DNS messages the kernel counted but could not hand to userspace (ring full, copy
    /// failed), over the window.
    events_lost: WindowedCounts<1>,
}

/// The DNS layer in one interval: the report's `dns` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsView {
    /// Interfaces the DNS programs are attached to.
    pub interfaces: Vec<String>,
    /// DNS figures per interface, sorted by name.
    pub per_interface: Vec<IfaceView>,
    /// Sorted by address.
    pub resolvers: Vec<ResolverView>,
    /// The most troubled first.
    pub names: Vec<NameView>,
    pub names_omitted: usize,
    /// The names past the top ones, per resolver that answered them: for the rules.
    #[serde(skip)]
    pub rest_names: BTreeMap<SocketAddr, RestNames>,
    pub divergences: Vec<Divergence>,
    /// A query with no response after this long counts as unanswered.
    #[serde(skip)]
    pub unanswered_after: Duration,
    #[serde(skip)]
    pub top_names: usize,
    /// DNS messages the kernel counted that userspace never read, in the window.
    #[serde(skip)]
    pub events_lost: u64,
}

impl DnsView {
    /// Keep the `top_names` most troubled names (after the rules have seen them all).
    pub fn limit(&mut self) {
        self.names_omitted += self.names.len().saturating_sub(self.top_names);
        self.names.truncate(self.top_names);
        self.rest_names = BTreeMap::new();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IfaceView {
    pub interface: String,
    pub window: Counts<{ ivc::COUNT }>,
    pub total: Counts<{ ivc::COUNT }>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverView {
    /// The resolver as clients addressed it (a service address, before DNAT).
    pub resolver: SocketAddr,
    /// The addresses that actually answered for it, when NAT rewrote them.
    pub answered_by: Vec<SocketAddr>,
    /// NXDOMAINs too fresh to judge: a search-list success may still explain them.
    #[serde(skip)]
    pub nxdomain_in_grace: u64,
    /// Queries waiting for it, at the last reading, that it has answered nothing since they
    /// were sent; and how long the oldest of them has waited (ms).
    pub silent_queries: u64,
    pub silent_for_ms: u64,
    /// The resolver's usual p99 lookup latency (µs): the median of its per-interval p99s
    /// over the last 5 minutes (the since-start p99 before it has any).
    pub typical_p99_us: u64,
    /// Lookup latency over the last [`RECENT`]: a resolver that just turned slow is named
    /// before its slow lookups are 5 % of the window.
    pub recent_latency_us: LatencySummary,
    pub window: DnsPeriod,
    pub total: DnsPeriod,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsPeriod {
    #[serde(flatten)]
    pub kernel: Counts<{ kc::COUNT }>,
    #[serde(flatten)]
    pub parsed: Counts<{ rc::COUNT }>,
    pub latency_us: LatencySummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameView {
    pub qname: String,
    pub qtype: String,
    pub window: NamePeriod,
    pub total: NamePeriod,
    /// The last answer: addresses and CNAME targets.
    pub answers: Vec<String>,
    pub resolvers: Vec<SocketAddr>,
}

/// What the rules need of the names one resolver answered, past the top ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestNames {
    /// The addresses those names last resolved to.
    pub addresses: BTreeSet<IpAddr>,
    /// The first three with errors or unanswered queries in the window.
    pub troubled: Vec<NameView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamePeriod {
    #[serde(flatten)]
    pub counts: Counts<{ nc::COUNT }>,
    pub latency_us: LatencySummary,
}

impl NamePeriod {
    /// Error rcodes and unanswered queries: what makes a name troubled.
    pub fn trouble(&self) -> u64 {
        trouble(&self.counts.values)
    }
}

/// See [`NamePeriod::trouble`]; on a name's raw counts, to order names before their views
/// are built.
fn trouble(c: &[u64; nc::COUNT]) -> u64 {
    c[nc::NXDOMAIN].saturating_sub(c[nc::SEARCH_NXDOMAIN]) + c[nc::SERVFAIL] + c[nc::REFUSED] + c[nc::UNANSWERED]
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub qname: String,
    pub qtype: String,
    pub answers: Vec<ResolverAnswer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverAnswer {
    pub resolver: SocketAddr,
    pub addresses: Vec<IpAddr>,
}

impl DnsLayer {
    pub fn new(cfg: DnsConfig) -> DnsLayer {
        DnsLayer {
            cfg,
            resolvers: Map::default(),
            names: DenseMap::default(),
            pending: Map::default(),
            cache: cache::ParseCache::default(),
            pending_len: 0,
            now: None,
            interfaces: Vec::new(),
            search: search::SearchList::default(),
            per_interface: Map::default(),
            iface_events: Map::default(),
            iface_names: Map::default(),
            pending_dropped: 0,
            evictions: 0,
            events_lost: WindowedCounts::default(),
        }
    }

    fn bump_resolver(&mut self, resolver: SocketAddr, counter: usize) {
        self.resolvers.entry(resolver).or_default().user.bump(counter);
    }

    fn name(&mut self, key: NameKey) -> &mut NameState {
        name_in(&mut self.names, self.now, key)
    }

    pub fn on_message(&mut self, msg: &DnsMessage) {
        // One lookup per table where one does: this runs for every message on the host.
        if let Some(c) = self.iface_events.get_mut(&msg.ifindex) {
            c[0] += 1;
            c[1] += u64::from(msg.fragmented);
        } else if self.iface_events.len() < MAX_IFACES {
            self.iface_events.insert(msg.ifindex, [1, u64::from(msg.fragmented)]);
        }
        let oversize = msg.dns_len > msg.bytes.len();
        let parsed = self.cache.parse(&msg.bytes).ok();
        // Every resolver a message names is reported, whether or not the kernel's table had it.
        let r = self.resolvers.entry(msg.resolver).or_default();
        if msg.is_response {
            r.last_response = Some(r.last_response.map_or(msg.at, |t| t.max(msg.at)));
        }
        if let Some(a) = msg.answerer
            && r.answered_by.len() < MAX_ANSWERERS
        {
            r.answered_by.insert(a);
        }
        if msg.is_response && is_nxdomain(&msg.bytes) {
            r.user.bump(rc::NXDOMAIN_SEEN);
        }
        if parsed.is_none() && !oversize {
            r.user.bump(rc::MALFORMED);
            return;
        }
        if oversize {
            r.user.bump(rc::OVERSIZE);
        }
        // The message's own id: a parse may come from the cache, from a repeat with another.
        let Some(id) = dns_id(&msg.bytes) else { return };
        let key = (msg.client, msg.resolver, id);
        if !msg.is_response {
            let Some((qname, qtype)) = parsed.and_then(|p| p.qname.clone()) else { return };
            name_in(&mut self.names, self.now, (qname.clone(), qtype)).counts.bump(nc::QUERIES);
            if self.pending_len >= self.cfg.max_pending {
                self.pending_dropped += 1;
                return;
            }
            self.pending.entry(key).or_default().push(Pending { at: msg.at, qname, qtype });
            self.pending_len += 1;
            return;
        }
        // A response: find its query by client, resolver, id and (when parsed) qname.
        let question = parsed.as_ref().and_then(|p| p.qname.as_ref());
        let matched = match self.pending.entry(key) {
            Entry::Occupied(mut e) => {
                let waiting = e.get_mut();
                let at = match question {
                    Some((q, t)) => waiting.iter().position(|p| p.qname == *q && p.qtype == *t),
                    None => Some(0),
                };
                let query = at.map(|i| waiting.remove(i));
                if waiting.is_empty() {
                    e.remove();
                }
                query
            }
            Entry::Vacant(_) => None,
        };
        let Some(query) = matched else {
            r.user.bump(rc::UNMATCHED_RESPONSES);
            return;
        };
        self.pending_len -= 1;
        let latency = msg.at.since(query.at);
        r.latency.record(latency);
        let Some(p) = parsed else {
            self.name((query.qname, query.qtype)).latency.record(latency);
            return;
        };
        if p.nodata {
            r.user.bump(rc::NODATA);
        }
        let name_key = (query.qname, query.qtype);
        self.note_search_list(msg, &name_key, p.rcode);
        // Answers before the first reading are stamped with the message's own time.
        let stamp = self.now.unwrap_or(msg.at);
        let n = self.name(name_key);
        if !p.addresses.is_empty() {
            n.answered(msg.resolver, stamp, &p.addresses);
        }
        n.latency.record(latency);
        n.counts.bump(p.rcode);
        if p.nodata {
            n.counts.bump(nc::NODATA);
        }
        if p.truncated {
            n.counts.bump(nc::TRUNCATED);
        }
        // The same answer as last time (the usual case) is not copied again.
        if p.rcode == nc::NOERROR && n.answers != p.answers {
            n.answers = p.answers.clone();
        }
        n.resolvers.insert(msg.resolver);
    }

    /// Remember an NXDOMAIN, or count the ones a success explains as search-list expansions.
    fn note_search_list(&mut self, msg: &DnsMessage, (qname, qtype): &NameKey, rcode: usize) {
        let client = msg.client.ip();
        if rcode == nc::NXDOMAIN {
            self.search.on_nxdomain(client, msg.resolver, qname, *qtype, msg.at);
        } else if rcode == nc::NOERROR {
            for (resolver, name, qtype) in self.search.on_success(client, qname, msg.at) {
                self.bump_resolver(resolver, rc::SEARCH_NXDOMAIN);
                self.name((name.into(), qtype)).counts.bump(nc::SEARCH_NXDOMAIN);
            }
        }
    }

    /// A reading of the kernel's counters at `now`: expire unanswered queries and close the
    /// interval.
    pub fn on_snapshot(&mut self, now: Mono, snap: &DnsSnapshot) {
        self.now = Some(now);
        self.search.expire(now);
        self.interfaces = snap.names.iter().map(|(_, n)| n.clone()).collect();
        self.interfaces.sort();
        let timeout = self.cfg.unanswered_after;
        let mut expired = Vec::new();
        self.pending.retain(|(_, resolver, _), waiting| {
            waiting.retain(|p| {
                let late = now.since(p.at) >= timeout;
                if late {
                    expired.push((*resolver, p.qname.clone(), p.qtype));
                }
                !late
            });
            !waiting.is_empty()
        });
        self.pending_len -= expired.len();
        for (resolver, qname, qtype) in expired {
            self.bump_resolver(resolver, rc::UNANSWERED);
            self.name((qname, qtype)).counts.bump(nc::UNANSWERED);
        }
        // Queries still waiting that their resolver has answered nothing since: a resolver
        // gone silent shows here long before the unanswered timeout.
        for r in self.resolvers.values_mut() {
            r.silent = (0, Duration::ZERO);
        }
        for ((_, resolver, _), waiting) in &self.pending {
            let Some(r) = self.resolvers.get_mut(resolver) else { continue };
            for p in waiting {
                // A query still in flight is not evidence of silence yet.
                if r.last_response.is_none_or(|t| t < p.at) && now.since(p.at) >= SILENT_MIN_WAIT {
                    r.silent.0 += 1;
                    r.silent.1 = r.silent.1.max(now.since(p.at));
                }
            }
        }

        let window = self.cfg.window;
        self.iface_names.extend(snap.names.iter().cloned());
        // One reading per interface name: the events' counts and the kernel's together, both
        // keyed by interface index and named here.
        let name_of = |ifindex: &u32| self.iface_names.get(ifindex).cloned().unwrap_or_else(|| format!("ifindex {ifindex}"));
        let mut readings: Map<String, [u64; ivc::COUNT]> = Map::default();
        for (ifindex, k) in &snap.per_interface {
            let r = readings.entry(name_of(ifindex)).or_default();
            r[ivc::DNS_DUPLICATES] = k[ic::DNS_DUPLICATES];
            r[ivc::UDP_FRAGMENTS] = k[ic::UDP_FRAGMENTS];
            r[ivc::EXT_HEADERS_TOO_DEEP] = k[ic::EXT_HEADERS_TOO_DEEP];
        }
        for (ifindex, [messages, fragmented]) in &self.iface_events {
            let r = readings.entry(name_of(ifindex)).or_default();
            r[ivc::DNS_MESSAGES] = *messages;
            r[ivc::DNS_FRAGMENTED] = *fragmented;
        }
        for name in readings.keys() {
            self.per_interface.entry(name.clone()).or_default();
        }
        for (name, w) in self.per_interface.iter_mut() {
            w.observe(now, readings.get(name.as_str()), window);
        }
        let kernel: Map<SocketAddr, _> = snap.resolvers.iter().map(|(a, c)| (*a, c)).collect();
        for a in kernel.keys() {
            self.resolvers.entry(*a).or_default();
        }
        for (addr, r) in self.resolvers.iter_mut() {
            if r.kernel.observe(now, kernel.get(addr).copied(), window) {
                self.evictions += 1;
            }
            r.user.close(now, window);
            r.latency.close(now, window);
            if let Some(p99) = r.latency.last_interval_p99() {
                r.interval_p99s.push_back((now, p99));
            }
            while r.interval_p99s.front().is_some_and(|(at, _)| now.since(*at) > TYPICAL_SPAN) {
                r.interval_p99s.pop_front();
            }
        }
        for n in self.names.values_mut() {
            n.counts.close(now, window);
            n.latency.close(now, window);
        }
        if self.names.len() > self.cfg.max_names {
            let mut by_age: Vec<(u64, NameKey)> =
                self.names.iter().map(|(k, n)| (n.last_seen, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(self.names.len() - self.cfg.max_names) {
                self.names.remove(&k);
            }
            self.names.compact();
        }
        for n in self.names.values_mut().filter(|n| !n.answer_sets.is_empty()) {
            if n.answer_sets.iter().any(|(_, at, _)| now.since(*at) >= window) {
                super::exact::retain(&mut n.answer_sets, |(_, at, _)| now.since(*at) < window);
            }
        }
    }

    /// NXDOMAINs not judged yet (see [`search::SearchList::awaiting`]): the follow-up
    /// queries still pending, by client, are gathered only when some NXDOMAIN needs them.
    fn nxdomains_awaiting(&self, now: Mono) -> Map<SocketAddr, u64> {
        let mut by_client: Map<IpAddr, Vec<(Mono, &str)>> = Map::default();
        if self.search.has_unexplained_past_grace(now) {
            for ((client, _, _), waiting) in &self.pending {
                by_client.entry(client.ip()).or_default().extend(waiting.iter().map(|p| (p.at, &*p.qname)));
            }
        }
        self.search.awaiting(now, |client, at, nx_name| {
            by_client.get(&client).is_some_and(|qs| qs.iter().any(|(sent, q)| *sent >= at && search::is_expansion(nx_name, q)))
        })
    }

    pub fn resolvers(&self) -> Vec<ResolverView> {
        let period = |kernel: [u64; kc::COUNT], parsed: [u64; rc::COUNT], latency_us| DnsPeriod {
            kernel: Counts { values: kernel, names: &kc::NAMES },
            parsed: Counts { values: parsed, names: &rc::NAMES },
            latency_us,
        };
        let in_grace = self.now.map(|now| self.nxdomains_awaiting(now)).unwrap_or_default();
        let mut v: Vec<ResolverView> = self
            .resolvers
            .iter()
            .map(|(a, r)| ResolverView {
                resolver: *a,
                answered_by: r.answered_by.iter().copied().collect(),
                nxdomain_in_grace: in_grace.get(a).copied().unwrap_or(0),
                silent_queries: r.silent.0,
                silent_for_ms: r.silent.1.as_millis() as u64,
                typical_p99_us: {
                    let mut v: Vec<u64> = r.interval_p99s.iter().map(|(_, p)| *p).collect();
                    let mid = v.len() / 2;
                    if v.is_empty() { r.latency.total().p99 } else { *v.select_nth_unstable(mid).1 }
                },
                recent_latency_us: self.now.map(|now| r.latency.recent(now, RECENT)).unwrap_or_default(),
                window: period(r.kernel.window(), r.user.window(), r.latency.window()),
                total: period(r.kernel.total(), r.user.total(), r.latency.total()),
            })
            .collect();
        v.sort_by_key(|r| r.resolver);
        v
    }

    /// All names, the most troubled first (error rcodes and unanswered in the window), then
    /// the busiest.
    pub fn names(&self) -> Vec<NameView> {
        self.split_names(usize::MAX).0
    }

    /// The `top` most troubled names whole, and what the rules need of the others, per
    /// resolver: building a view of each of 50,000 names every interval was a fifth of
    /// observer's memory at that scale.
    pub fn split_names(&self, top: usize) -> (Vec<NameView>, BTreeMap<SocketAddr, RestNames>, usize) {
        // In order: the top names, and the troubled ones past them (the rules name three per
        // resolver); the healthy rest in no order (sorting 50,000 names by text was costly).
        let troubled_first = |a: &RankedName, b: &RankedName| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        // Selected, not ranked all: ranking every name was 2 MB at the close.
        let listed = super::best_of(self.names.iter().map(rank_name), top, troubled_first);
        let chosen = super::Picked::of(listed.iter().map(|(_, _, n)| *n));
        let mut by_resolver: BTreeMap<SocketAddr, RestNames> = BTreeMap::new();
        let mut troubled: Vec<RankedName> = Vec::new();
        let mut omitted = 0;
        for (t, k, n) in self.names.iter().filter(|(_, n)| !chosen.contains(n)).map(rank_name) {
            omitted += 1;
            for r in &n.resolvers {
                by_resolver.entry(*r).or_default().addresses.extend(n.answers.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
            }
            if t.0 > 0 {
                troubled.push((t, k, n));
            }
        }
        troubled.sort_unstable_by(troubled_first);
        for (_, k, n) in troubled {
            for r in &n.resolvers {
                let e = by_resolver.entry(*r).or_default();
                if e.troubled.len() < 3 {
                    e.troubled.push(name_view(k, n));
                }
            }
        }
        (listed.iter().map(|(_, k, n)| name_view(k, n)).collect(), by_resolver, omitted)
    }

    /// Names for which two resolvers gave disjoint address sets within the window.
    pub fn divergences(&self) -> Vec<Divergence> {
        let mut out = Vec::new();
        for ((qname, qtype), n) in self.names.iter().filter(|(_, n)| n.answer_sets.len() > 1) {
            let rs = &n.answer_sets; // sorted by resolver
            let disjoint = rs.iter().enumerate().any(|(i, (_, _, a))| rs[i + 1..].iter().any(|(_, _, b)| a.is_disjoint(b)));
            if disjoint {
                out.push(Divergence {
                    qname: qname.to_string(),
                    qtype: qtype.to_string(),
                    answers: rs.iter().map(|(r, _, a)| ResolverAnswer { resolver: *r, addresses: a.iter().copied().collect() }).collect(),
                });
            }
        }
        out.sort_by(|a, b| (&a.qname, &a.qtype).cmp(&(&b.qname, &b.qtype)));
        out
    }

    pub fn samples_dropped(&self) -> u64 {
        self.resolvers.values().map(|r| r.latency.dropped()).sum::<u64>()
            + self.names.values().map(|n| n.latency.dropped()).sum::<u64>()
    }
}

/// A name with its rank: window trouble, window queries, since-start queries.
type RankedName<'a> = ((u64, u64, u64), &'a NameKey, &'a NameState);

fn rank_name<'a>((k, n): (&'a NameKey, &'a NameState)) -> RankedName<'a> {
    let w = n.counts.window();
    ((trouble(&w), w[nc::QUERIES], n.counts.total()[nc::QUERIES]), k, n)
}

/// A name's state, made when new, and marked seen at `now` (the last reading).
fn name_in(names: &mut DenseMap<NameKey, NameState>, now: Option<Mono>, key: NameKey) -> &mut NameState {
    let n = names.get_or_insert_with(key, NameState::default);
    if let Some(now) = now {
        n.last_seen = now.0.saturating_add(1);
    }
    n
}

impl Aggregator for DnsLayer {
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        // As the rules judge NXDOMAINs (see verdict::dns): the ones read, less those excused
        // and those not judged yet, so that a total never goes down and up again; the
        // kernel's once DNS events were lost.
        let in_grace = self.now.map(|now| self.nxdomains_awaiting(now)).unwrap_or_default();
        let lost = self.events_lost.total()[0];
        self.resolvers
            .iter()
            .map(|(a, r)| {
                let (k, u) = (r.kernel.total(), r.user.total());
                let counted = nxdomains_counted(u[rc::NXDOMAIN_SEEN], k[kc::NXDOMAIN], lost);
                let nx = counted.saturating_sub(u[rc::SEARCH_NXDOMAIN] + in_grace.get(a).copied().unwrap_or(0));
                ("dns_lookup", a.to_string(), nx + k[kc::SERVFAIL] + k[kc::REFUSED] + u[rc::UNANSWERED])
            })
            .collect()
    }

    fn interval_samples(&self) -> Vec<super::IntervalSamples<'_>> {
        self.resolvers.iter().filter_map(|(a, r)| super::samples_of("dns_lookup", || a.to_string(), &r.latency)).collect()
    }

    type View = DnsView;

    fn on_event(&mut self, event: &Event) {
        if let Event::Dns(msg) = event {
            self.on_message(msg);
        }
    }

    fn on_tick(&mut self, tick: &Tick) {
        self.on_snapshot(tick.at, &tick.counters.dns);
        let lost_names = [lost::NAMES[lost::DNS_RINGBUF_FULL], lost::NAMES[lost::DNS_COPY_FAILED]];
        let lost: u64 = tick.lost.iter().filter(|(name, _)| lost_names.contains(name)).map(|(_, n)| n).sum();
        self.events_lost.observe(tick.at, Some(&[lost]), self.cfg.window);
    }

    fn lost(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("dns_latency_samples_dropped", self.samples_dropped()),
            ("dns_pending_dropped", self.pending_dropped),
        ]
    }

    fn view(&self) -> DnsView {
        let mut per_interface: Vec<IfaceView> = self
            .per_interface
            .iter()
            .map(|(name, w)| IfaceView {
                interface: name.clone(),
                window: Counts { values: w.window(), names: &ivc::NAMES },
                total: Counts { values: w.total(), names: &ivc::NAMES },
            })
            .collect();
        per_interface.sort_by(|a, b| a.interface.cmp(&b.interface));
        let (names, rest_names, names_omitted) = self.split_names(self.cfg.top_names);
        DnsView {
            interfaces: self.interfaces.clone(),
            per_interface,
            resolvers: self.resolvers(),
            names,
            names_omitted,
            rest_names,
            divergences: self.divergences(),
            unanswered_after: self.cfg.unanswered_after,
            top_names: self.cfg.top_names,
            events_lost: self.events_lost.window()[0],
        }
    }
}

/// The NXDOMAINs to judge: the ones userspace read, and of the ones only the kernel counted
/// as many as DNS events were lost (the rest are read early or late, not missing: see the
/// DNS rules).
pub fn nxdomains_counted(read: u64, kernel: u64, events_lost: u64) -> u64 {
    read + kernel.saturating_sub(read).min(events_lost)
}

fn name_view((qname, qtype): &NameKey, n: &NameState) -> NameView {
    NameView {
        qname: qname.to_string(),
        qtype: qtype.to_string(),
        window: NamePeriod { counts: Counts { values: n.counts.window(), names: &nc::NAMES }, latency_us: n.latency.window() },
        total: NamePeriod { counts: Counts { values: n.counts.total(), names: &nc::NAMES }, latency_us: n.latency.total() },
        answers: n.answers.iter().cloned().collect(),
        resolvers: n.resolvers.iter().copied().collect(),
    }
}

mod cache;
pub mod parse;
mod search;
#[cfg(test)]
mod tests;
