//! Layer 2 rules (TLS half): handshakes that fail (a fatal alert, a close or reset before
//! completion, no ServerHello), per destination and SNI, over a share of the finished ones.

use super::{Evaluation, Hit, Hits, Layer, Rules, secs};
use crate::{
    config::Config,
    layers::tls::{TlsView, tls_counter as tc},
};

impl Rules for TlsView {
    fn layer(&self) -> Layer {
        Layer::TcpTls
    }

    fn covers(&self) -> &'static str {
        "TLS handshakes"
    }

    fn evaluate(&self, window_s: f64, cfg: &Config) -> Evaluation {
        let t = &cfg.tls;
        let w = secs(window_s);
        let mut hits = Hits::default();
        let mut had_signal = false;
        let mut context = Vec::new();
        for target in &self.targets {
            let c = &target.window;
            let malformed = c.get(tc::MALFORMED);
            if c.get(tc::HANDSHAKES) == 0 {
                continue;
            }
            had_signal = true;
            if malformed > 0 {
                context.push(format!("TLS: {malformed} malformed handshakes with {} in the last {w}", target.label()));
            }
            let failures = c.failures();
            let finished = failures + c.get(tc::COMPLETED);
            if finished == 0 || failures < t.min_failures || (failures as f64 / finished as f64) < t.failure_share {
                continue;
            }
            let mut evidence = format!("TLS: {failures}/{finished} handshakes with {} failed in the last {w}", target.label());
            if let Some(f) = &target.last_failure {
                evidence.push_str(&format!(": {}", f.reason));
            }
            if let Some(cert) = &target.certificate {
                evidence.push_str(&format!(" ({})", cert.fact(&target.sni)));
            } else if let Some(note) = target.certificate_note
                && target.last_failure.as_ref().is_some_and(|f| f.outcome == "aborted")
            {
                evidence.push_str(&format!(" ({note})"));
            }
            if let Some(p) = target.last_failure.as_ref().and_then(|f| f.process.as_ref()) {
                evidence.push_str(&format!("; process {p}"));
            }
            hits.push(Hit { count: 1, margin: 1.0, rule: "tls.handshake_failures", destination: target.dest, evidence: Some(evidence) }.strength(failures, failures as f64 / finished as f64, t.failure_share));
        }
        Evaluation { hits, had_signal, quiet_note: "no TLS handshakes in the window", context, upstreams: vec![] }
    }

    /// A failing handshake explains HTTP trouble with the same addresses.
    fn explains(&self, suspect: &[std::net::SocketAddr]) -> std::collections::BTreeSet<std::net::IpAddr> {
        suspect.iter().map(|d| d.ip()).collect()
    }
}
