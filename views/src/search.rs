//! Run search: the typed form of a filter, sort, grouping and choice of columns, which every
//! backend compiles to its own parameterised SQL.
//!
//! The query service parses the filter language into these types and checks them against the
//! project's [`Catalog`]; a backend may trust that every comparison is between a field and a
//! literal of one [`Class`]. The semantics below are the contract each backend meets (the
//! property test in query/ holds them to a reference evaluator):
//!
//! - A comparison (`=`, `!=`, `<`, ..., `in`, `between`, `like`, and their `not` forms) holds only
//!   for a run that has the field with a value of the comparison's class: `attr.lr != 0.1` does
//!   not match a run without `lr`, nor one whose `lr` is a string. NaN is no value.
//! - `Not` negates its operand exactly (two-valued logic): `not attr.lr = 0.1` matches runs
//!   without `lr`.
//! - Tags are a set: `tag = 'x'` holds when the run has the tag `x`, `tag != 'x'` when it has not.
//! - Strings compare by their UTF-8 bytes; `like` patterns use `%` (any run of characters), `_`
//!   (one character) and `\` (escape); `ilike` folds ASCII letters.
//! - Sorting: values of a field order numbers (ints, floats, bools as 0/1, datetimes as
//!   milliseconds) before strings; descending reverses the order; runs lacking the field come
//!   last in both directions. Ties break by run id, in the sort's direction, which is what lets a
//!   backend walk one index for both.

use runstream_schema::{ArtifactKind, Direction, Value};
use serde::{Deserialize, Serialize};

use crate::RunRow;

/// A field of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    System(SystemField),
    /// An attribute by path (`params/optimizer/lr`).
    Attr(String),
    /// A float series, summarised.
    Metric(String, MetricAgg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemField {
    Run,
    Name,
    Experiment,
    Owner,
    Description,
    State,
    Parent,
    Created,
    Updated,
    Finished,
    /// Seconds from creation to finish; absent while the run has not finished.
    Duration,
    Deleted,
}

impl SystemField {
    pub const ALL: [SystemField; 12] = [
        SystemField::Run,
        SystemField::Name,
        SystemField::Experiment,
        SystemField::Owner,
        SystemField::Description,
        SystemField::State,
        SystemField::Parent,
        SystemField::Created,
        SystemField::Updated,
        SystemField::Finished,
        SystemField::Duration,
        SystemField::Deleted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemField::Run => "run",
            SystemField::Name => "name",
            SystemField::Experiment => "experiment",
            SystemField::Owner => "owner",
            SystemField::Description => "description",
            SystemField::State => "state",
            SystemField::Parent => "parent",
            SystemField::Created => "created",
            SystemField::Updated => "updated",
            SystemField::Finished => "finished",
            SystemField::Duration => "duration",
            SystemField::Deleted => "deleted",
        }
    }

    /// Whether some runs lack this field (and so sort after those that have it).
    pub fn nullable(self) -> bool {
        matches!(
            self,
            SystemField::Parent | SystemField::Finished | SystemField::Duration
        )
    }

    pub fn class(self) -> Class {
        match self {
            SystemField::Created | SystemField::Updated | SystemField::Finished => Class::Datetime,
            SystemField::Duration => Class::Number,
            SystemField::Deleted => Class::Bool,
            _ => Class::String,
        }
    }

    /// The field's value for a run; `None` when the run lacks it.
    pub fn value(self, r: &RunRow) -> Option<Literal> {
        let s = |v: &str| Some(Literal::Str(v.to_string()));
        match self {
            SystemField::Run => s(&r.run),
            SystemField::Name => s(&r.name),
            SystemField::Experiment => s(&r.experiment),
            SystemField::Owner => s(&r.owner),
            SystemField::Description => s(&r.description),
            SystemField::State => s(&r.state),
            SystemField::Parent => r.parent_run.as_deref().and_then(s),
            SystemField::Created => Some(Literal::Datetime(r.created_ms)),
            SystemField::Updated => Some(Literal::Datetime(r.updated_ms)),
            SystemField::Finished => r.finished_ms.map(Literal::Datetime),
            SystemField::Duration => r
                .finished_ms
                .map(|f| Literal::Number(Number::Float(duration_seconds(r.created_ms, f)))),
            SystemField::Deleted => Some(Literal::Bool(r.deleted)),
        }
    }
}

/// Seconds between two millisecond times, computed the same way by every backend.
pub fn duration_seconds(created_ms: i64, finished_ms: i64) -> f64 {
    (finished_ms - created_ms) as f64 / 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricAgg {
    Last,
    Min,
    Max,
    Mean,
    /// Number of points, NaN included.
    Count,
}

impl MetricAgg {
    pub fn name(self) -> &'static str {
        match self {
            MetricAgg::Last => "last",
            MetricAgg::Min => "min",
            MetricAgg::Max => "max",
            MetricAgg::Mean => "mean",
            MetricAgg::Count => "count",
        }
    }
}

/// The kind of value a comparison is about. Attributes of types outside the class never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// int and float attributes, metrics, duration.
    Number,
    String,
    Bool,
    /// datetime attributes and the created / updated / finished fields, in ms since the epoch.
    Datetime,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Number => "number",
            Class::String => "string",
            Class::Bool => "bool",
            Class::Datetime => "datetime",
        }
    }

    /// The attribute types this class compares with.
    pub fn attribute_types(self) -> &'static [&'static str] {
        match self {
            Class::Number => &["int", "float"],
            Class::String => &["string"],
            Class::Bool => &["bool"],
            Class::Datetime => &["datetime"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Numeric order of an int and a float without rounding the int; `None` when either is NaN.
    pub fn partial_cmp_exact(self, other: Number) -> Option<std::cmp::Ordering> {
        use std::cmp::Ordering;
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
            (Number::Int(a), Number::Float(b)) => {
                if b.is_nan() {
                    return None;
                }
                // Compare the integral parts exactly, then the fraction.
                if b >= 9.223_372_036_854_776e18 {
                    return Some(Ordering::Less);
                }
                if b < -9.223_372_036_854_776e18 {
                    return Some(Ordering::Greater);
                }
                let t = b.trunc();
                match a.cmp(&(t as i64)) {
                    Ordering::Equal => 0.0f64.partial_cmp(&(b - t)),
                    o => Some(o),
                }
            }
            (Number::Float(_), Number::Int(_)) => other.partial_cmp_exact(self).map(Ordering::reverse),
        }
    }
}

/// A literal of one class, as compared and as sorted.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(Number),
    Str(String),
    Bool(bool),
    Datetime(i64),
}

impl Literal {
    pub fn class(&self) -> Class {
        match self {
            Literal::Number(_) => Class::Number,
            Literal::Str(_) => Class::String,
            Literal::Bool(_) => Class::Bool,
            Literal::Datetime(_) => Class::Datetime,
        }
    }

    /// An attribute's value as a literal of its class; string sets and NaN have none.
    pub fn of_value(v: &Value) -> Option<Literal> {
        Some(match v {
            Value::Int(i) => Literal::Number(Number::Int(*i)),
            Value::Float(f) if f.is_nan() => return None,
            Value::Float(f) => Literal::Number(Number::Float(*f)),
            Value::Bool(b) => Literal::Bool(*b),
            Value::String(s) => Literal::Str(s.clone()),
            Value::Datetime(t) => Literal::Datetime(*t),
            Value::StringSet(_) => return None,
        })
    }

    /// The value's place in a sort: numbers of every class, then strings.
    pub fn sort_key(&self) -> SortValue {
        match self {
            Literal::Number(Number::Int(i)) => SortValue::Int(*i),
            Literal::Number(Number::Float(f)) => SortValue::Float(*f),
            Literal::Bool(b) => SortValue::Int(i64::from(*b)),
            Literal::Datetime(t) => SortValue::Int(*t),
            Literal::Str(s) => SortValue::Str(s.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    pub fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => o == Equal,
            Cmp::Ne => o != Equal,
            Cmp::Lt => o == Less,
            Cmp::Le => o != Greater,
            Cmp::Gt => o == Greater,
            Cmp::Ge => o != Less,
        }
    }
}

/// A test on a run's tags.
#[derive(Debug, Clone, PartialEq)]
pub enum TagTest {
    /// The run has at least one tag.
    Any,
    /// The run has one of these tags.
    OneOf(Vec<String>),
    /// The run has a tag matching the `like` pattern.
    Like { pattern: String, fold_case: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    True,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// `field op value`; every literal has the class the check chose for the field.
    Compare {
        field: Field,
        op: Cmp,
        value: Literal,
    },
    In {
        field: Field,
        values: Vec<Literal>,
        negated: bool,
    },
    Between {
        field: Field,
        low: Literal,
        high: Literal,
        negated: bool,
    },
    Like {
        field: Field,
        pattern: String,
        fold_case: bool,
        negated: bool,
    },
    /// The run has the field (with any value, of any type).
    Exists(Field),
    Tag(TagTest),
    /// The run used (input) or produced (output) an artifact of this kind and name, at this
    /// version when given.
    Lineage {
        direction: Direction,
        kind: ArtifactKind,
        name: String,
        version: Option<String>,
    },
}

impl Filter {
    /// Whether every run the filter selects has a value of `field`: a comparison holds only for
    /// a value, so a conjunct comparing that very field implies one. A search sorted by such a
    /// field then has no runs lacking it to list after the others.
    pub fn implies_value_of(&self, field: &Field) -> bool {
        match self {
            Filter::And(v) => v.iter().any(|f| f.implies_value_of(field)),
            Filter::Or(v) => !v.is_empty() && v.iter().all(|f| f.implies_value_of(field)),
            Filter::Compare { field: f, .. }
            | Filter::In { field: f, .. }
            | Filter::Between { field: f, .. }
            | Filter::Like { field: f, .. } => f == field,
            _ => false,
        }
    }

    /// The class of a comparison's literals (every literal of one comparison has the same).
    pub fn literal_class(&self) -> Class {
        match self {
            Filter::Compare { value, .. } => value.class(),
            Filter::In { values, .. } => values.first().map_or(Class::String, Literal::class),
            Filter::Between { low, .. } => low.class(),
            _ => Class::String,
        }
    }
}

/// A sort value as a cursor carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl SortValue {
    /// The order of the contract: numbers (exactly) before strings (by bytes).
    pub fn cmp_contract(&self, other: &SortValue) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let num = |v: &SortValue| match v {
            SortValue::Int(i) => Some(Number::Int(*i)),
            SortValue::Float(f) => Some(Number::Float(*f)),
            SortValue::Str(_) => None,
        };
        match (num(self), num(other)) {
            (Some(a), Some(b)) => a.partial_cmp_exact(b).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => match (self, other) {
                (SortValue::Str(a), SortValue::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
                _ => Ordering::Equal,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub field: Field,
    pub descending: bool,
}

impl Default for Sort {
    /// Newest first.
    fn default() -> Self {
        Sort {
            field: Field::System(SystemField::Created),
            descending: true,
        }
    }
}

/// Where a page ends: the last run's sort value (`None`: the runs lacking the field, which come
/// last) and its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchCursor {
    pub value: Option<SortValue>,
    pub run: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSearch {
    pub project: String,
    pub filter: Filter,
    pub include_deleted: bool,
    pub sort: Sort,
    pub after: Option<SearchCursor>,
    pub limit: usize,
    /// Attributes and metrics to return with each run.
    pub columns: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FoundRun {
    pub run: RunRow,
    /// One per requested column; `None` where the run lacks it.
    pub columns: Vec<Option<Value>>,
    pub sort_value: Option<SortValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub runs: Vec<FoundRun>,
    /// Set when the page is full: pass it as `after` for the next page.
    pub next: Option<SearchCursor>,
}

impl SearchPage {
    /// A page of the runs found for a search of `limit`, with the cursor past its last run when
    /// the page is full.
    pub fn new(runs: Vec<FoundRun>, limit: usize) -> Self {
        let next = (runs.len() == limit)
            .then(|| {
                runs.last().map(|f| SearchCursor {
                    value: f.sort_value.clone(),
                    run: f.run.run.clone(),
                })
            })
            .flatten();
        SearchPage { runs, next }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunGrouping {
    pub project: String,
    pub filter: Filter,
    pub include_deleted: bool,
    pub by: Field,
    /// Numeric fields summarised per group.
    pub aggregates: Vec<Field>,
    pub limit: usize,
}

/// Count, min, max and mean of the numeric values of a field in a group.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Stats {
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The group's value of the field, in sort-key form; `None` groups the runs lacking it.
    pub key: Option<SortValue>,
    pub runs: u64,
    pub aggregates: Vec<Stats>,
}

/// Groups in sort order of their keys, the group of runs lacking the field last.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    pub groups: Vec<Group>,
    /// More groups exist than `limit`.
    pub truncated: bool,
}

/// The attribute paths (with every type each has had) and metric paths a project has seen; the
/// query service types filters and offers completions from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Catalog {
    pub attributes: Vec<(String, Vec<String>)>,
    pub metrics: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_of_the_sort_field_implies_it_has_a_value() {
        let loss = Field::Metric("loss".into(), MetricAgg::Last);
        let below = |field: Field| Filter::Compare {
            field,
            op: Cmp::Lt,
            value: Literal::Number(Number::Float(0.5)),
        };
        let p0 = Filter::Compare {
            field: Field::Attr("params/p0".into()),
            op: Cmp::Eq,
            value: Literal::Str("v1".into()),
        };
        assert!(below(loss.clone()).implies_value_of(&loss));
        assert!(Filter::And(vec![p0.clone(), below(loss.clone())]).implies_value_of(&loss));
        assert!(Filter::Or(vec![below(loss.clone()), below(loss.clone())]).implies_value_of(&loss));
        // Not when a run may pass without it, or another summary of the series is compared.
        assert!(!Filter::Or(vec![p0.clone(), below(loss.clone())]).implies_value_of(&loss));
        assert!(!Filter::Not(Box::new(below(loss.clone()))).implies_value_of(&loss));
        assert!(!below(Field::Metric("loss".into(), MetricAgg::Min)).implies_value_of(&loss));
        assert!(!Filter::Exists(loss.clone()).implies_value_of(&loss));
        assert!(!Filter::Or(vec![]).implies_value_of(&loss));
        assert!(p0.implies_value_of(&Field::Attr("params/p0".into())));
    }
}
