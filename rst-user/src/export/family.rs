//! Building one Prometheus metric family directly, without a registry of metric vectors.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One metric family under construction: samples are added with their labels and sorted
/// the way a prometheus `Registry` sorts them, so the exposition is stable.
pub struct FamilyBuilder {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    metrics: Vec<Metric>,
    label_names: &'static [&'static str],
    /// Positions of `label_names` in name order (the order of the exposition).
    order: Vec<usize>,
}

impl FamilyBuilder {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        label_names: &'static [&'static str],
    ) -> Self {
        let mut order: Vec<usize> = (0..label_names.len()).collect();
        order.sort_by_key(|&i| label_names[i]);
        Self {
            name,
            help,
            kind,
            metrics: Vec::new(),
            label_names,
            order,
        }
    }

    /// Adds one sample; `values` are in the order of `label_names`.
    pub fn add(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.label_names.len());
        let labels = self
            .order
            .iter()
            .map(|&i| {
                let mut l = LabelPair::default();
                l.set_name(self.label_names[i].to_string());
                l.set_value(values[i].to_string());
                l
            })
            .collect();
        let mut m = Metric::from_label(labels);
        match self.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    /// Sorts the samples by label values, as a prometheus `Registry` does.
    pub fn build(mut self) -> MetricFamily {
        let by_values = |a: &Metric, b: &Metric| {
            a.get_label()
                .iter()
                .map(LabelPair::value)
                .cmp(b.get_label().iter().map(LabelPair::value))
        };
        if !self.metrics.is_sorted_by(|a, b| by_values(a, b).is_le()) {
            self.metrics.sort_by(by_values);
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_string());
        mf.set_help(self.help.to_string());
        mf.set_field_type(self.kind);
        mf.set_metric(self.metrics);
        mf
    }

    /// The metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether any sample was added.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}
