//! One Prometheus metric family, built directly and written as text: no registry of
//! metric vectors, no protobuf structs, label values borrowed from the snapshot, counter
//! values written as exact integers. A scrape of 50 000 series is one pass of string
//! appends.

use std::fmt::Write as _;

/// The metric types rstmon exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Most labels a family of rstmon has.
pub const MAX_LABELS: usize = 4;

/// A sample value: counters are exact integers, gauges may be fractional.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// One metric family under construction: samples are added with their label values and
/// come out sorted by those values in label-name order (what the prometheus crate's
/// registry does), so the exposition is stable.
pub struct FamilyBuilder<'a> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label_names: &'static [&'static str],
    /// Positions of `label_names` in name order (the order of the exposition).
    order: [usize; MAX_LABELS],
    /// Label values in name order, and the value.
    rows: Vec<([&'a str; MAX_LABELS], Value)>,
}

impl<'a> FamilyBuilder<'a> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        label_names: &'static [&'static str],
    ) -> Self {
        assert!(label_names.len() <= MAX_LABELS, "{name}: too many labels");
        let mut order = [0usize; MAX_LABELS];
        let mut idx: Vec<usize> = (0..label_names.len()).collect();
        idx.sort_by_key(|&i| label_names[i]);
        order[..idx.len()].copy_from_slice(&idx);
        Self {
            name,
            help,
            kind,
            label_names,
            order,
            rows: Vec::new(),
        }
    }

    /// Adds one sample; `values` are in the order of the label names given to [`new`].
    ///
    /// [`new`]: FamilyBuilder::new
    pub fn add(&mut self, values: &[&'a str], value: impl Into<Value>) {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let mut row = [""; MAX_LABELS];
        for (slot, &i) in row.iter_mut().zip(&self.order[..self.label_names.len()]) {
            *slot = values.get(i).copied().unwrap_or("");
        }
        self.rows.push((row, value.into()));
    }

    /// The metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether any sample was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Appends the family in the text exposition format (version 0.0.4).
    pub fn write(mut self, out: &mut String) {
        if !self.rows.is_sorted_by(|a, b| a.0 <= b.0) {
            self.rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        write_header(out, self.name, self.help, self.kind);
        let n = self.label_names.len();
        for (values, value) in &self.rows {
            out.push_str(self.name);
            if n > 0 {
                out.push('{');
                for (k, &i) in self.order[..n].iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(self.label_names[i]);
                    out.push_str("=\"");
                    escape(out, values[k], true);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            match value {
                Value::Int(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::Float(v) => write_float(out, *v),
            }
            out.push('\n');
        }
    }
}

/// The `# HELP` and `# TYPE` lines of a family.
pub(crate) fn write_header(out: &mut String, name: &str, help: &str, kind: Kind) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape(out, help, false);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.label());
    out.push('\n');
}

/// Help text escapes `\` and newline; label values also `"`.
pub(crate) fn escape(out: &mut String, s: &str, quote: bool) {
    if !s.contains(['\\', '\n', '"']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sorted_escaped_text() {
        let mut f = FamilyBuilder::new("m_total", "A \\ help\nline.", Kind::Counter, &["z", "a"]);
        f.add(&["2", "x\"y"], 5u64);
        f.add(&["1", "b\\c\n"], u64::MAX);
        f.add(&["0", "b\\c\n"], 0.5);
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(
            out,
            "# HELP m_total A \\\\ help\\nline.\n# TYPE m_total counter\n\
             m_total{a=\"b\\\\c\\n\",z=\"0\"} 0.5\n\
             m_total{a=\"b\\\\c\\n\",z=\"1\"} 18446744073709551615\n\
             m_total{a=\"x\\\"y\",z=\"2\"} 5\n"
        );
        let mut g = FamilyBuilder::new("g", "G.", Kind::Gauge, &[]);
        g.add(&[], 1.0);
        g.add(&[], f64::INFINITY);
        let mut out = String::new();
        g.write(&mut out);
        assert_eq!(out, "# HELP g G.\n# TYPE g gauge\ng 1\ng +Inf\n");
    }
}
