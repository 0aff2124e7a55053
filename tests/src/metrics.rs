//! sip-lb's `/metrics` text, parsed with `prometheus-parse`, and the sums the tests and the
//! lab read off it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use prometheus_parse::{Scrape, Value};

/// One scrape: the text as served and its samples.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    text: String,
    /// (name, labels, value) per sample; histograms and summaries are not used by sip-lb.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Result<Metrics> {
        // sip-lb writes unlabelled samples as `name{} value`, which prometheus-parse skips.
        let lines = text.lines().map(|l| Ok(l.replacen("{} ", " ", 1)));
        let scrape = Scrape::parse(lines).context("parsing /metrics")?;
        let samples = scrape
            .samples
            .into_iter()
            .filter_map(|s| {
                let v = match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    Value::Histogram(_) | Value::Summary(_) => return None,
                };
                let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Some((s.metric, labels, v))
            })
            .collect();
        Ok(Metrics { text: text.to_owned(), samples })
    }

    /// The exposition as served (for failure messages and `# TYPE` checks).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Sum of `name` over the samples whose labels include every `(k, v)` of `labels`;
    /// `None` when no sample matches.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Sum of `name` grouped by the value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if let (true, Some(l)) = (n == name, labels.get(label)) {
                *out.entry(l.clone()).or_insert(0) += *v as u64;
            }
        }
        out
    }

    /// Per worker: `(worker, cpu) -> value` of a per-worker counter.
    pub fn per_worker(&self, name: &str) -> BTreeMap<(u32, String), u64> {
        let mut out = BTreeMap::new();
        for (_, labels, v) in self.samples.iter().filter(|(n, _, _)| n == name) {
            if let (Some(w), Some(c)) = (labels.get("worker").and_then(|w| w.parse().ok()), labels.get("cpu")) {
                *out.entry((w, c.clone())).or_insert(0) += *v as u64;
            }
        }
        out
    }

    /// Sum of `name` over the samples whose `label` is `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> u64 {
        self.sum(name, &[(label, value)]).unwrap_or(0.0) as u64
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP sip_lb_worker_rx_datagrams Datagrams received.\n\
        # TYPE sip_lb_worker_rx_datagrams counter\n\
        sip_lb_worker_rx_datagrams_total{worker=\"0\",cpu=\"0\"} 3\n\
        sip_lb_worker_rx_datagrams_total{worker=\"1\",cpu=\"1\"} 4\n\
        sip_lb_backend_up{backend=\"127.0.0.1:5060\"} 1\n\
        sip_lb_config_generation{} 2\n\
        sip_lb_worker_drops_total{worker=\"0\",reason=\"keep_alive\"} 1\n\
        # EOF\n";

    #[test]
    fn sums_by_label() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.sum("sip_lb_worker_rx_datagrams_total", &[]), Some(7.0));
        assert_eq!(m.sum("sip_lb_worker_rx_datagrams_total", &[("worker", "1")]), Some(4.0));
        assert_eq!(m.sum("sip_lb_backend_up", &[("backend", "127.0.0.1:5060")]), Some(1.0));
        assert_eq!(m.sum("sip_lb_backend_up", &[("backend", "127.0.0.1:5061")]), None);
        assert_eq!(m.sum("sip_lb_config_generation", &[]), Some(2.0));
        assert_eq!(m.per_worker("sip_lb_worker_rx_datagrams_total").len(), 2);
        assert_eq!(m.sum_where("sip_lb_worker_rx_datagrams_total", "cpu", "0"), 3);
        assert!(m.has("sip_lb_backend_up") && !m.has("nope"));
        assert_eq!(m.sum("sip_lb_worker_drops_total", &[("reason", "keep_alive")]), Some(1.0));
    }
}
