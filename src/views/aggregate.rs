//! Grouped aggregates that support removal: running count and sum, and a
//! multiset of values per group for min and max.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::query::window::Agg;

/// A finite f64 ordered by its IEEE total order.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Default, Clone)]
struct Group {
    rows: u64,
    numbers: u64,
    sum: f64,
    values: BTreeMap<Key, u64>,
}

/// Per-group running aggregates over rows.
#[derive(Debug, Default)]
pub struct Groups {
    groups: HashMap<Bytes, Group>,
}

impl Groups {
    /// Whether there is no group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds a row to `group` (`x`: its field, if a number).
    pub fn add(&mut self, group: Bytes, x: Option<f64>) {
        let g = self.groups.entry(group).or_default();
        g.rows += 1;
        if let Some(x) = x {
            g.numbers += 1;
            g.sum += x;
            *g.values.entry(Key(x)).or_insert(0) += 1;
        }
    }

    /// Removes a row added with the same arguments.
    pub fn remove(&mut self, group: &Bytes, x: Option<f64>) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.rows = g.rows.saturating_sub(1);
        if let Some(x) = x {
            g.numbers = g.numbers.saturating_sub(1);
            g.sum -= x;
            if let Some(c) = g.values.get_mut(&Key(x)) {
                *c -= 1;
                if *c == 0 {
                    g.values.remove(&Key(x));
                }
            }
            if g.numbers == 0 {
                g.sum = 0.0;
            }
        }
        if g.rows == 0 {
            self.groups.remove(group);
        }
    }

    fn value_of(g: &Group, agg: Agg) -> Option<f64> {
        match agg {
            Agg::Count => Some(g.rows as f64),
            _ if g.numbers == 0 => None,
            Agg::Sum => Some(g.sum),
            Agg::Avg => Some(g.sum / g.numbers as f64),
            Agg::Min => g.values.keys().next().map(|k| k.0),
            Agg::Max => g.values.keys().next_back().map(|k| k.0),
        }
    }

    /// The aggregate of one group.
    #[must_use]
    pub fn value(&self, group: &[u8], agg: Agg) -> Option<f64> {
        self.groups.get(group).and_then(|g| Self::value_of(g, agg))
    }

    /// Every group with its aggregate, sorted by group.
    #[must_use]
    pub fn all(&self, agg: Agg) -> Vec<(Bytes, Option<f64>)> {
        let mut v: Vec<(Bytes, Option<f64>)> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), Self::value_of(g, agg)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
