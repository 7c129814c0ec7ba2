//! The monitored interfaces as a scrape needs them, built once for each set of
//! interfaces and reused by every scrape until the set changes: their order by name and
//! the text of every per-interface series up to its value
//! (`rstmon_wire_resets_total{direction="egress",…,interface="eth0"} `), so that a
//! scrape of thousands of interfaces appends numbers to ready-made text instead of
//! building, sorting and escaping label sets. The text is exactly what [`FamilyBuilder`]
//! writes for the same families (a test compares the two).
//!
//! [`FamilyBuilder`]: super::family::FamilyBuilder

use std::ops::Range;

use super::family::{Kind, escape, write_header};
use crate::{
    attach::controller::Interfaces,
    classify::Family,
    sources::{egress, verdict, wire},
};

/// One monitored interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub ifindex: u32,
    pub name: String,
    /// XDP mode: `native` or `generic`.
    pub mode: &'static str,
    /// TC egress: `tcx` or `clsact`, `None` when not attached.
    pub tc: Option<&'static str>,
}

pub const XDP_ATTACHED: &str = "rstmon_xdp_attached";
pub const TC_ATTACHED: &str = "rstmon_tc_attached";
const XDP_ATTACHED_HELP: &str =
    "1 for each interface with rstmon's XDP program attached, by XDP mode.";
const TC_ATTACHED_HELP: &str = "1 for each interface with rstmon's TC egress program attached, by how (tcx link, or clsact filter on kernels before 6.6).";

/// Row prefixes, concatenated: row `i` is `text[ends[i - 1]..ends[i]]`.
#[derive(Debug, Default)]
struct Rows {
    text: String,
    ends: Vec<usize>,
}

impl Rows {
    fn end_row(&mut self) {
        self.ends.push(self.text.len());
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// Rows `from..`, in order.
    fn from(&self, from: usize) -> impl Iterator<Item = &str> {
        let mut start = if from == 0 { 0 } else { self.ends[from - 1] };
        self.ends[from..].iter().map(move |&end| {
            let row = &self.text[start..end];
            start = end;
            row
        })
    }
}

/// One `(direction, family, flags)` combination of the wire family, in label order.
#[derive(Clone, Copy, Debug)]
struct WireCombo {
    direction: &'static str,
    family: &'static str,
    flags: &'static str,
    /// Index of the counter within a slot (`wire_slot_index(0, …)`).
    index: usize,
}

/// A per-interface family labelled `family`, `interface` and one more label that sorts
/// after them (`verdict`, `signal`), from [`verdict::Rows`].
#[derive(Debug, Default)]
struct ByFamily {
    metric: &'static str,
    help: &'static str,
    /// Column within a family's [`verdict::PER_FAMILY`] counters of each value of the
    /// last label, in label order.
    columns: Vec<usize>,
    /// Family-major, then by group: row `(family * groups + group) * columns + k`.
    rows: Rows,
}

impl ByFamily {
    fn new(
        metric: &'static str,
        help: &'static str,
        label: &'static str,
        values: &[(usize, &'static str)],
        groups: &[(String, Range<usize>)],
    ) -> Self {
        debug_assert!(
            label > "interface",
            "{metric}: rows are written in label order"
        );
        let mut values = values.to_vec();
        values.sort_by_key(|(_, l)| *l);
        let mut rows = Rows::default();
        for fam in Family::ALL {
            for (name, _) in groups {
                for (_, value) in &values {
                    let labels = [
                        ("family", fam.label()),
                        ("interface", name.as_str()),
                        (label, value),
                    ];
                    open_row(&mut rows.text, metric, &labels);
                    rows.end_row();
                }
            }
        }
        Self {
            metric,
            help,
            columns: values.into_iter().map(|(c, _)| c).collect(),
            rows,
        }
    }
}

/// The monitored interfaces and the text of their series.
#[derive(Debug, Default)]
pub struct IfaceTable {
    /// By ifindex, as the controller holds them.
    ifaces: Vec<Iface>,
    /// Distinct names in name order, each a range of `by_name`.
    groups: Vec<(String, Range<usize>)>,
    /// Positions in `ifaces`, by (name, ifindex).
    by_name: Vec<usize>,
    /// Groups whose name sorts before `other` (where an `interface="other"` row goes).
    other_pos: usize,
    /// The group named `other`, if an interface has that name.
    other_group: Option<usize>,
    /// Groups with at least one interface with TC egress (`rstmon_forwarded_resets_total`).
    tc_groups: Vec<usize>,
    wire_combos: Vec<WireCombo>,
    /// Combo-major: row `combo * groups + group`.
    wire_rows: Rows,
    /// The `interface="other"` row of each combo.
    wire_other: Rows,
    /// Family-major: row `family * tc_groups + k`.
    forwarded_rows: Rows,
    forwarded_other: Rows,
    /// `rstmon_wire_reset_verdicts_total` and `rstmon_suspect_resets_total`.
    verdicts: ByFamily,
    suspects: ByFamily,
    /// The whole `rstmon_xdp_attached` and `rstmon_tc_attached` families (empty when no
    /// interface has one).
    xdp_attached: String,
    tc_attached: String,
}

/// Appends `prefix{label="value",…,last="` with the values escaped.
fn open_row(out: &mut String, metric: &str, labels: &[(&str, &str)]) {
    out.push_str(metric);
    out.push('{');
    for (k, (name, value)) in labels.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(out, value, true);
        out.push('"');
    }
    out.push_str("} ");
}

impl IfaceTable {
    /// The table of `ifaces` (any order; kept by ifindex).
    pub fn new(ifaces: impl IntoIterator<Item = Iface>) -> Self {
        let mut ifaces: Vec<Iface> = ifaces.into_iter().collect();
        ifaces.sort_by_key(|i| i.ifindex);
        let mut by_name: Vec<usize> = (0..ifaces.len()).collect();
        by_name.sort_by(|&a, &b| {
            (ifaces[a].name.as_str(), ifaces[a].ifindex)
                .cmp(&(ifaces[b].name.as_str(), ifaces[b].ifindex))
        });
        let mut groups: Vec<(String, Range<usize>)> = Vec::new();
        for (k, &i) in by_name.iter().enumerate() {
            match groups.last_mut() {
                Some((name, r)) if *name == ifaces[i].name => r.end = k + 1,
                _ => groups.push((ifaces[i].name.clone(), k..k + 1)),
            }
        }
        let other_pos = groups.partition_point(|(n, _)| n.as_str() < wire::OTHER);
        let other_group = groups
            .get(other_pos)
            .filter(|(n, _)| n == wire::OTHER)
            .map(|_| other_pos);
        let tc_groups: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| by_name[r.clone()].iter().any(|&i| ifaces[i].tc.is_some()))
            .map(|(g, _)| g)
            .collect();

        let mut wire_combos = Vec::new();
        for (dir, direction) in wire::DIRECTIONS.iter().enumerate() {
            for (v6, fam) in Family::ALL.iter().enumerate() {
                for (ack, flags) in wire::FLAGS.iter().enumerate() {
                    wire_combos.push(WireCombo {
                        direction,
                        family: fam.label(),
                        flags,
                        index: rst_common::wire_slot_index(0, dir as u8, v6 as u32, ack as u32)
                            as usize,
                    });
                }
            }
        }
        wire_combos.sort_by_key(|c| (c.direction, c.family, c.flags));
        let wire_labels = |c: &WireCombo, iface: &str| {
            [
                ("direction", c.direction),
                ("family", c.family),
                ("flags", c.flags),
                ("interface", iface),
            ]
            .map(|(k, v)| (k, v.to_string()))
        };
        let mut wire_rows = Rows::default();
        let mut wire_other = Rows::default();
        let mut forwarded_rows = Rows::default();
        let mut forwarded_other = Rows::default();
        let row = |rows: &mut Rows, metric: &str, labels: &[(&str, String)]| {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            open_row(&mut rows.text, metric, &l);
            rows.end_row();
        };
        for c in &wire_combos {
            for (name, _) in &groups {
                row(&mut wire_rows, wire::METRIC, &wire_labels(c, name));
            }
            row(&mut wire_other, wire::METRIC, &wire_labels(c, wire::OTHER));
        }
        for fam in Family::ALL {
            let labels = |iface: &str| {
                [("family", fam.label()), ("interface", iface)].map(|(k, v)| (k, v.to_string()))
            };
            for &g in &tc_groups {
                row(
                    &mut forwarded_rows,
                    egress::FORWARDED_METRIC,
                    &labels(&groups[g].0),
                );
            }
            row(
                &mut forwarded_other,
                egress::FORWARDED_METRIC,
                &labels(wire::OTHER),
            );
        }
        let attached = |metric: &str, help: &str, mode: &dyn Fn(&Iface) -> Option<&'static str>| {
            let mut rows: Vec<(&str, &str)> = ifaces
                .iter()
                .filter_map(|i| Some((i.name.as_str(), mode(i)?)))
                .collect();
            let mut out = String::new();
            if rows.is_empty() {
                return out;
            }
            rows.sort();
            write_header(&mut out, metric, help, Kind::Gauge);
            for (name, mode) in rows {
                open_row(&mut out, metric, &[("interface", name), ("mode", mode)]);
                out.push_str("1\n");
            }
            out
        };
        let columns = |kind, values: &[(u8, &'static str)]| -> Vec<(usize, &'static str)> {
            values
                .iter()
                .filter_map(|(v, l)| Some((verdict::column(0, kind, *v)?, *l)))
                .collect()
        };
        let verdicts = ByFamily::new(
            verdict::VERDICT_METRIC,
            verdict::VERDICT_HELP,
            "verdict",
            &columns(rst_common::KIND_VERDICT, &verdict::VERDICTS),
            &groups,
        );
        let suspects = ByFamily::new(
            verdict::SUSPECT_METRIC,
            verdict::SUSPECT_HELP,
            "signal",
            &columns(rst_common::KIND_SIGNAL, &verdict::SIGNALS),
            &groups,
        );
        let xdp_attached = attached(XDP_ATTACHED, XDP_ATTACHED_HELP, &|i| Some(i.mode));
        let tc_attached = attached(TC_ATTACHED, TC_ATTACHED_HELP, &|i| i.tc);
        Self {
            ifaces,
            groups,
            by_name,
            other_pos,
            other_group,
            tc_groups,
            wire_combos,
            wire_rows,
            wire_other,
            forwarded_rows,
            forwarded_other,
            verdicts,
            suspects,
            xdp_attached,
            tc_attached,
        }
    }

    /// The table of the interfaces the controller monitors now.
    pub fn of(state: &Interfaces) -> Self {
        Self::new(state.iter().map(|(ifindex, a)| Iface {
            ifindex,
            name: a.name.clone(),
            mode: a.mode,
            tc: a.tc,
        }))
    }

    /// Whether this is the table of what the controller monitors now (compared without
    /// copying anything).
    pub fn matches(&self, state: &Interfaces) -> bool {
        self.ifaces.len() == state.len()
            && self
                .ifaces
                .iter()
                .zip(state.iter())
                .all(|(i, (ifindex, a))| {
                    i.ifindex == ifindex && i.name == a.name && i.mode == a.mode && i.tc == a.tc
                })
    }

    /// The interfaces, by ifindex: what per-interface counts are aligned with.
    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Position of `ifindex` in [`IfaceTable::ifaces`].
    pub fn position(&self, ifindex: u32) -> Option<usize> {
        self.ifaces
            .binary_search_by_key(&ifindex, |i| i.ifindex)
            .ok()
    }

    pub fn len(&self) -> usize {
        self.ifaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ifaces.is_empty()
    }

    /// Sum of `value(counts[i])` over the interfaces `i` of group `g`.
    fn group_sum<T>(&self, g: usize, counts: &[T], value: impl Fn(&T) -> u64) -> u64 {
        let members = &self.groups[g].1;
        if members.len() == 1 {
            // Nearly always: a name is one interface's.
            return counts.get(self.by_name[members.start]).map_or(0, value);
        }
        self.by_name[members.clone()]
            .iter()
            .filter_map(|&i| counts.get(i))
            .map(value)
            .sum()
    }

    /// Rows of one combination: each group's, and `interface="other"` in its place in
    /// name order when `other` is not zero (added to an interface named `other`).
    fn write_rows<'t>(
        &'t self,
        out: &mut String,
        groups: &[usize],
        mut rows: impl Iterator<Item = &'t str>,
        other_row: &str,
        value: impl Fn(usize) -> u64,
        other: u64,
    ) {
        let merge = self.other_group.filter(|g| groups.binary_search(g).is_ok());
        let mut other_left = other > 0 && merge.is_none();
        for &g in groups {
            if other_left && g >= self.other_pos {
                write_row(out, other_row, other);
                other_left = false;
            }
            let mut v = value(g);
            if Some(g) == merge {
                v += other;
            }
            write_row(out, rows.next().unwrap_or_default(), v);
        }
        if other_left {
            write_row(out, other_row, other);
        }
    }

    /// `rstmon_wire_resets_total` of these interfaces, `counts` aligned with
    /// [`IfaceTable::ifaces`] (the counters within a slot), plus `interface="other"`
    /// where `unattributed` is not zero. Nothing when there is no series.
    pub fn write_wire(
        &self,
        out: &mut String,
        counts: &[[u64; wire::COUNTERS]],
        unattributed: &[u64; wire::COUNTERS],
    ) {
        if self.groups.is_empty() && unattributed.iter().all(|v| *v == 0) {
            return;
        }
        write_header(out, wire::METRIC, wire::HELP, Kind::Counter);
        let all: Vec<usize> = (0..self.groups.len()).collect();
        let n = self.groups.len();
        for (c, combo) in self.wire_combos.iter().enumerate() {
            self.write_rows(
                out,
                &all,
                self.wire_rows.from(c * n),
                self.wire_other.get(c),
                |g| self.group_sum(g, counts, |v| v[combo.index]),
                unattributed[combo.index],
            );
        }
    }

    /// `rstmon_forwarded_resets_total` of the interfaces with TC egress, `counts`
    /// aligned with [`IfaceTable::ifaces`] (by family), plus `interface="other"` where
    /// `unattributed` is not zero. Nothing when there is no series.
    pub fn write_forwarded(&self, out: &mut String, counts: &[[u64; 2]], unattributed: &[u64; 2]) {
        if self.tc_groups.is_empty() && unattributed.iter().all(|v| *v == 0) {
            return;
        }
        write_header(
            out,
            egress::FORWARDED_METRIC,
            egress::FORWARDED_HELP,
            Kind::Counter,
        );
        let n = self.tc_groups.len();
        for v6 in 0..Family::ALL.len() {
            self.write_rows(
                out,
                &self.tc_groups,
                self.forwarded_rows.from(v6 * n),
                self.forwarded_other.get(v6),
                |g| self.group_sum(g, counts, |v| v[v6]),
                unattributed[v6],
            );
        }
    }

    /// `rstmon_wire_reset_verdicts_total` of these interfaces, `rows` aligned with
    /// [`IfaceTable::ifaces`]. Nothing without interfaces.
    pub fn write_verdicts(&self, out: &mut String, rows: &[[u64; verdict::COUNTERS]]) {
        self.write_by_family(out, &self.verdicts, rows);
    }

    /// `rstmon_suspect_resets_total` of these interfaces, as [`Self::write_verdicts`].
    pub fn write_suspects(&self, out: &mut String, rows: &[[u64; verdict::COUNTERS]]) {
        self.write_by_family(out, &self.suspects, rows);
    }

    fn write_by_family(&self, out: &mut String, f: &ByFamily, rows: &[[u64; verdict::COUNTERS]]) {
        if self.groups.is_empty() {
            return;
        }
        write_header(out, f.metric, f.help, Kind::Counter);
        let mut text = f.rows.from(0);
        for v6 in 0..Family::ALL.len() {
            let at = v6 * verdict::PER_FAMILY;
            for g in 0..self.groups.len() {
                for &c in &f.columns {
                    let v = self.group_sum(g, rows, |r| r[at + c]);
                    write_row(out, text.next().unwrap_or_default(), v);
                }
            }
        }
    }

    /// `rstmon_xdp_attached` (nothing without interfaces).
    pub fn write_xdp_attached(&self, out: &mut String) {
        out.push_str(&self.xdp_attached);
    }

    /// `rstmon_tc_attached` (nothing without TC egress anywhere).
    pub fn write_tc_attached(&self, out: &mut String) {
        out.push_str(&self.tc_attached);
    }
}

/// A row prefix, its value and the end of the line.
fn write_row(out: &mut String, prefix: &str, v: u64) {
    out.push_str(prefix);
    push_u64(out, v);
    out.push('\n');
}

/// Appends `v` in decimal (what `{}` writes, without the formatting machinery).
pub fn push_u64(out: &mut String, mut v: u64) {
    if v < 10 {
        // Most counters of most interfaces.
        out.push(char::from(b'0' + v as u8));
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::family::FamilyBuilder;

    fn iface(ifindex: u32, name: &str, tc: Option<&'static str>) -> Iface {
        Iface {
            ifindex,
            name: name.into(),
            mode: if ifindex.is_multiple_of(2) {
                "native"
            } else {
                "generic"
            },
            tc,
        }
    }

    /// What the generic family builder writes for the same data: the reference.
    fn reference(
        t: &IfaceTable,
        wire_counts: &[[u64; 8]],
        wire_un: &[u64; 8],
        fwd: &[[u64; 2]],
        fwd_un: &[u64; 2],
        verdicts: &[[u64; verdict::COUNTERS]],
    ) -> String {
        let mut out = String::new();
        // As the verdict families were built before they had cached text.
        for (metric, help, label, kind, values) in [
            (
                verdict::VERDICT_METRIC,
                verdict::VERDICT_HELP,
                "verdict",
                rst_common::KIND_VERDICT,
                &verdict::VERDICTS,
            ),
            (
                verdict::SUSPECT_METRIC,
                verdict::SUSPECT_HELP,
                "signal",
                rst_common::KIND_SIGNAL,
                &verdict::SIGNALS,
            ),
        ] {
            let labels: &'static [&'static str] = if label == "verdict" {
                &["interface", "family", "verdict"]
            } else {
                &["interface", "family", "signal"]
            };
            let mut f = FamilyBuilder::new(metric, help, Kind::Counter, labels);
            let mut rows: std::collections::BTreeMap<(&str, &str, &str), u64> = Default::default();
            for (i, x) in t.ifaces().iter().enumerate() {
                for (v6, fam) in Family::ALL.iter().enumerate() {
                    for (v, l) in values {
                        let c = verdict::column(v6, kind, *v).unwrap();
                        *rows.entry((fam.label(), x.name.as_str(), l)).or_default() +=
                            verdicts[i][c];
                    }
                }
            }
            for ((fam, iface, l), n) in rows {
                f.add(&[iface, fam, l], n);
            }
            if !f.is_empty() {
                f.write(&mut out);
            }
        }
        let mut w = FamilyBuilder::new(
            wire::METRIC,
            wire::HELP,
            Kind::Counter,
            &["interface", "family", "flags", "direction"],
        );
        let mut by_name: std::collections::BTreeMap<(String, usize), u64> = Default::default();
        for (i, f) in t.ifaces().iter().enumerate() {
            for c in &t.wire_combos {
                *by_name.entry((f.name.clone(), c.index)).or_default() += wire_counts[i][c.index];
            }
        }
        for c in &t.wire_combos {
            if wire_un[c.index] > 0 {
                *by_name.entry((wire::OTHER.into(), c.index)).or_default() += wire_un[c.index];
            }
        }
        let combos = t.wire_combos.clone();
        for ((name, index), v) in &by_name {
            let c = combos.iter().find(|c| c.index == *index).unwrap();
            w.add(&[name.as_str(), c.family, c.flags, c.direction], *v);
        }
        if !w.is_empty() {
            w.write(&mut out);
        }
        let mut f = FamilyBuilder::new(
            egress::FORWARDED_METRIC,
            egress::FORWARDED_HELP,
            Kind::Counter,
            &["interface", "family"],
        );
        let mut fwd_by_name: std::collections::BTreeMap<(String, usize), u64> = Default::default();
        for (i, x) in t.ifaces().iter().enumerate() {
            if t.ifaces()
                .iter()
                .any(|y| y.name == x.name && y.tc.is_some())
            {
                for (v6, v) in fwd[i].iter().enumerate() {
                    *fwd_by_name.entry((x.name.clone(), v6)).or_default() += v;
                }
            }
        }
        for (v6, v) in fwd_un.iter().enumerate() {
            if *v > 0 {
                *fwd_by_name.entry((wire::OTHER.into(), v6)).or_default() += v;
            }
        }
        for ((name, v6), v) in &fwd_by_name {
            f.add(&[name.as_str(), Family::ALL[*v6].label()], *v);
        }
        if !f.is_empty() {
            f.write(&mut out);
        }
        for (metric, help, tc) in [
            (XDP_ATTACHED, XDP_ATTACHED_HELP, false),
            (TC_ATTACHED, TC_ATTACHED_HELP, true),
        ] {
            let mut a = FamilyBuilder::new(metric, help, Kind::Gauge, &["interface", "mode"]);
            for i in t.ifaces() {
                let mode = if tc { i.tc } else { Some(i.mode) };
                if let Some(m) = mode {
                    a.add(&[i.name.as_str(), m], 1.0);
                }
            }
            if !a.is_empty() {
                a.write(&mut out);
            }
        }
        out
    }

    fn ours(
        t: &IfaceTable,
        wire_counts: &[[u64; 8]],
        wire_un: &[u64; 8],
        fwd: &[[u64; 2]],
        fwd_un: &[u64; 2],
        verdicts: &[[u64; verdict::COUNTERS]],
    ) -> String {
        let mut out = String::new();
        t.write_verdicts(&mut out, verdicts);
        t.write_suspects(&mut out, verdicts);
        t.write_wire(&mut out, wire_counts, wire_un);
        t.write_forwarded(&mut out, fwd, fwd_un);
        t.write_xdp_attached(&mut out);
        t.write_tc_attached(&mut out);
        out
    }

    /// The cached text is the family builder's, byte for byte: names that sort before
    /// and after `other`, one named `other`, a name shared by two ifindexes (a rename
    /// race), names that need escaping, interfaces without TC, unattributed counts.
    #[test]
    fn same_text_as_the_family_builder() {
        let sets: Vec<Vec<Iface>> = vec![
            vec![],
            vec![iface(3, "veth0", Some("tcx"))],
            vec![
                iface(9, "zz", None),
                iface(2, "eth0", Some("tcx")),
                iface(5, "p4if10", Some("clsact")),
                iface(4, "p4if9", Some("tcx")),
                iface(7, "a\"b\\c", Some("tcx")),
                iface(8, "eth0", None),
            ],
            vec![iface(1, "other", Some("tcx")), iface(6, "lo", None)],
            vec![iface(1, "other", None), iface(6, "zz", Some("tcx"))],
        ];
        for set in sets {
            let t = IfaceTable::new(set.clone());
            let n = t.len();
            let wire_counts: Vec<[u64; 8]> = (0..n)
                .map(|i| std::array::from_fn(|k| (i * 10 + k) as u64 * 7 % 5))
                .collect();
            let fwd: Vec<[u64; 2]> = (0..n).map(|i| [i as u64, 2 * i as u64 + 1]).collect();
            let verdicts: Vec<[u64; verdict::COUNTERS]> = (0..n)
                .map(|i| std::array::from_fn(|k| (i * 13 + k * 3) as u64 % 7))
                .collect();
            for (wire_un, fwd_un) in [([0; 8], [0; 2]), ([0, 4, 0, 0, 0, 0, 1, 0], [3, 0])] {
                let want = reference(&t, &wire_counts, &wire_un, &fwd, &fwd_un, &verdicts);
                let got = ours(&t, &wire_counts, &wire_un, &fwd, &fwd_un, &verdicts);
                assert_eq!(got, want, "interfaces {set:?}");
            }
        }
    }

    #[test]
    fn integers_as_fmt_writes_them() {
        for v in [0, 1, 9, 10, 12345, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }
}
