//! The pipeline: the layers, fed from a source, judged by the verdict rules and put into a
//! report once per interval. The runtime, the tests and later replays drive the same code.
//!
//! Adding a layer means one line in [`layers`]; nothing else here changes.

use std::time::Duration;

use crate::{
    config::Config,
    events::{Event, Input, Mono, Tick},
    layers::{
        Aggregator, IntervalSamples,
        connect::ConnectLayer,
        counts::Growth,
        dns::{DnsConfig, DnsLayer},
        http::{HttpConfig, HttpLayer},
        icmp::IcmpLayer,
        routing::{RoutingConfig, RoutingLayer},
        tls::{TlsConfig, TlsLayer},
        window::WindowedCounts,
    },
    present::{
        Section,
        redact::Redactor,
        report::{self, Report, Sections},
    },
    verdict::{self, Change, Hold, Rules, Tracker},
};

/// What the layers are built with (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    pub window: Duration,
    pub max_destinations: usize,
    pub top: usize,
    pub dns_timeout: Duration,
    pub max_dns_names: usize,
    pub dns_top_names: usize,
    pub http_timeout: Duration,
}

#[cfg(test)]
impl Options {
    /// The command line's defaults: 1 s interval, 10 s window, 5 s DNS timeout.
    pub fn for_tests() -> Options {
        Options {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(10),
            max_destinations: 100,
            top: 100,
            dns_timeout: Duration::from_secs(5),
            max_dns_names: 100,
            dns_top_names: 20,
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// Every layer observer runs, in report order.
fn layers(o: &Options, cfg: &Config) -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(ConnectLayer::new(o.window, o.max_destinations, o.top)),
        Box::new(DnsLayer::new(DnsConfig {
            window: o.window,
            unanswered_after: o.dns_timeout,
            max_names: o.max_dns_names,
            max_pending: 65_536,
            top_names: o.dns_top_names,
        })),
        Box::new(TlsLayer::new(TlsConfig {
            window: o.window,
            stall_after: Duration::try_from_secs_f64(cfg.tls.stall_after_s).unwrap_or(Duration::from_secs(10)),
            max_targets: o.max_destinations,
            top: o.top,
        })),
        Box::new(RoutingLayer::new(RoutingConfig {
            window: o.window,
            max_destinations: o.max_destinations,
            max_connections: 65_536,
            top: o.top,
            thresholds: cfg.routing.clone(),
        })),
        Box::new(IcmpLayer::new(o.window, o.max_destinations, o.top)),
        Box::new(HttpLayer::new(HttpConfig {
            window: o.window,
            timeout: o.http_timeout,
            max_targets: o.max_destinations,
            max_connections: 65_536,
            top: o.top,
        })),
    ]
}

/// A layer with its view type erased: what the pipeline needs of it.
trait Stage {
    fn on_event(&mut self, event: &Event);
    fn on_tick(&mut self, tick: &Tick);
    fn lost(&self) -> Vec<(&'static str, u64)>;
    fn section(&self) -> Box<dyn Section>;
    fn interval_samples(&self) -> Vec<IntervalSamples<'_>>;
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)>;
    fn failures_grown(&self) -> Option<Vec<(&'static str, String, u64)>>;
}

impl<A> Stage for A
where
    A: Aggregator,
    A::View: Section + 'static,
{
    fn on_event(&mut self, event: &Event) {
        Aggregator::on_event(self, event);
    }
    fn on_tick(&mut self, tick: &Tick) {
        Aggregator::on_tick(self, tick);
    }
    fn lost(&self) -> Vec<(&'static str, u64)> {
        Aggregator::lost(self)
    }
    fn section(&self) -> Box<dyn Section> {
        Box::new(self.view())
    }
    fn interval_samples(&self) -> Vec<IntervalSamples<'_>> {
        Aggregator::interval_samples(self)
    }
    fn failure_totals(&self) -> Vec<(&'static str, String, u64)> {
        Aggregator::failure_totals(self)
    }
    fn failures_grown(&self) -> Option<Vec<(&'static str, String, u64)>> {
        Aggregator::failures_grown(self)
    }
}

pub struct Pipeline {
    opts: Options,
    config: Config,
    host: String,
    started: Mono,
    layers: Vec<Box<dyn Stage>>,
    /// All losses, windowed: the cause's confidence drops while any were lost recently.
    lost: WindowedCounts<1>,
    /// Keeps a suspect layer suspect until it has been quiet for the hold time.
    hold: Hold,
    pub tracker: Tracker,
    /// `--redact`: names hashed in the views, and in the recording's tags.
    pub redactor: Option<Redactor>,
    /// What the failure totals of the layers that give only totals grew by at the last tick.
    grown: Vec<(&'static str, String, u64)>,
    /// The last failure totals of the layers that give only totals (keys that failed).
    growth: Growth<(&'static str, String)>,
}

impl Pipeline {
    /// `started` is the source's time at start, for the report's uptime.
    pub fn new(opts: Options, config: Config, host: &str, started: Mono) -> Pipeline {
        Pipeline {
            layers: layers(&opts, &config),
            opts,
            config,
            host: host.to_owned(),
            started,
            lost: WindowedCounts::default(),
            hold: Hold::default(),
            tracker: Tracker::new(200),
            redactor: None,
            grown: Vec::new(),
            growth: Growth::default(),
        }
    }

    /// Every layer's latency samples of the interval the last tick closed.
    pub fn interval_samples(&self) -> Vec<IntervalSamples<'_>> {
        let mut v: Vec<IntervalSamples<'_>> = self.layers.iter().flat_map(|l| l.interval_samples()).collect();
        if let Some(r) = &self.redactor {
            v.iter_mut().for_each(|s| s.tag = r.tag(&s.tag));
        }
        v
    }

    /// What each (series, tag)'s failures grew by in the interval the last tick closed. Made
    /// when asked (by the recording, the metrics, the daemon): naming 10,000 destinations
    /// that failed is work a plain run does not need. Layers that keep their readings' growth
    /// give it; the others' totals were diffed at the tick.
    pub fn failures_grown(&self) -> Vec<(&'static str, String, u64)> {
        let mut grown: Vec<(&'static str, String, u64)> = self.layers.iter().filter_map(|l| l.failures_grown()).flatten().collect();
        grown.extend(self.grown.iter().cloned());
        if let Some(r) = &self.redactor {
            grown.iter_mut().for_each(|f| f.1 = r.tag(&f.1));
        }
        grown
    }

    /// The growth of the since-start failure totals of the layers that give only totals (a
    /// key that never failed is not kept: it grows by nothing, present or not). At every
    /// tick, so that each diff is against the last interval.
    fn diff_failure_totals(&mut self) {
        // A layer that gives its growth gives no totals.
        let totals = self
            .layers
            .iter()
            .flat_map(|l| l.failure_totals())
            .filter(|t| t.2 > 0)
            .map(|(series, tag, total)| ((series, tag), total));
        let stepped = self.growth.step(totals.collect::<Vec<_>>());
        self.grown = stepped.into_iter().map(|((series, tag), n)| (series, tag, n)).collect();
    }

    pub fn interval(&self) -> Duration {
        self.opts.interval
    }

    pub fn on_events(&mut self, events: &[Event]) {
        for e in events {
            for l in &mut self.layers {
                l.on_event(e);
            }
        }
    }

    /// Feed one input; a tick closes the interval and gives its report and verdict changes.
    pub fn on_input(&mut self, input: Input, is_final: bool) -> Option<(Report, Vec<Change>)> {
        match input {
            Input::Events(events) => {
                self.on_events(&events);
                None
            }
            Input::Tick(tick) => Some(self.on_tick(tick, is_final)),
        }
    }

    /// Close the interval: every layer takes the reading, the rules judge the views, and the
    /// report is built from the views cut to size.
    pub fn on_tick(&mut self, mut tick: Tick, is_final: bool) -> (Report, Vec<Change>) {
        for l in &mut self.layers {
            l.on_tick(&tick);
        }
        self.diff_failure_totals();
        // The layers have taken the readings: they go before the views and verdicts are
        // built (at a full read of the kernel's tables, 100,000 destinations are 12 MB).
        drop(std::mem::take(&mut tick.counters));
        let mut lost = tick.lost.clone();
        for l in &self.layers {
            lost.extend(l.lost());
        }
        let lost_total = crate::present::report::lost_total(&lost);
        let window = self.opts.window;
        self.lost.observe(tick.at, Some(&[lost_total]), window);

        let mut sections: Vec<Box<dyn Section>> = self.layers.iter().map(|l| l.section()).collect();
        if let Some(r) = &self.redactor {
            // Before the rules: the evidence they write holds names from the views.
            for s in &mut sections {
                s.redact(r);
            }
        }
        let rules: Vec<&dyn Rules> = sections.iter().map(|s| &**s as &dyn Rules).collect();
        let verdicts = verdict::evaluate_held(&rules, window.as_secs_f64(), self.lost.window()[0], &self.config, Some((&mut self.hold, tick.at)));
        for s in &mut sections {
            s.limit();
        }
        let meta = report::Meta {
            now: tick.wall,
            host: &self.host,
            uptime_s: tick.at.since(self.started).as_secs_f64(),
            interval_s: self.opts.interval.as_secs_f64(),
            window_s: window.as_secs_f64(),
            is_final,
            disabled: &tick.disabled,
        };
        let sections = Sections(sections.into_iter().map(|s| std::sync::Arc::from(s as Box<dyn crate::present::Shown>)).collect());
        let mut r = report::build(&meta, sections, verdicts, &lost);
        let changes = self.tracker.update(&r.ts, &r.verdicts);
        if let Some(c) = &mut r.cause {
            c.since = self.tracker.onset(c.layer);
        }
        (r, changes)
    }
}

#[cfg(test)]
mod tests;
