//! Run search compiled to ClickHouse SQL.
//!
//! Values never enter the SQL text: a [`Sql`] builder appends fragments and `?` placeholders in
//! the order they appear, and binds the values in that order through the client's escaping.
//! Every table is read at its latest versions (`FINAL` when every run's rows are read,
//! `argMax(.., ver)` per key for a page's few runs). A search is one statement over the
//! project's runs: filters on attributes, metrics, tags and lineage are `run IN (subquery)` sets
//! (so `NOT` is exact negation), the runs that meet them are joined with the sort field's value
//! by run id, and pages are cut by a keyset over the sort key.
//!
//! A sort key is `(none, rank, f, i, s, run)`: `none` puts runs lacking the field last in both
//! directions; `rank` orders numbers (1) before strings (2); numbers order by their float value,
//! then exactly by their integer value (`i`), so integers past 2^53 keep their order.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;

use runstream_schema::Value;

use super::read::{run_row, value_of};
use super::write::{AttrRec, RunRec};
use super::{ClickHouseViews, storage};
use crate::search::*;
use crate::*;

enum Arg {
    Str(String),
    I64(i64),
}

/// A float as a ClickHouse expression that reads back the same bits (but `-0` as `0`, which
/// compares equal and must hash equal in `IN` sets and groups).
///
/// Written in the text rather than bound: the client prints floats in positional notation, which
/// takes hundreds of digits for tiny numbers, and the server's literal parser refuses subnormal
/// numbers, so those are scaled into the normal range and back by a power of two (exact both ways,
/// and written as a literal that parses exactly, not left to the server's `exp2`).
fn float_sql(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else if f == 0.0 {
        "0e0".into()
    } else if f.abs() < f64::MIN_POSITIVE {
        format!("({:e} * {:e})", f * 2f64.powi(1000), 2f64.powi(-1000))
    } else {
        format!("{f:e}")
    }
}

/// An integer-valued expression as Int64 the way Rust's `as i64` casts a float: NaN and
/// infinities as 0 (no integer part to order by), out-of-range values saturated.
fn saturating_int(v: &str) -> String {
    format!(
        "multiIf(isNaN({v}) OR isInfinite({v}), toInt64(0), {v} >= 9.223372036854775808e18, toInt64(9223372036854775807),
                 {v} < -9.223372036854775808e18, toInt64(-9223372036854775807 - 1), toInt64({v}))"
    )
}

/// SQL text with `?` placeholders and their values, in order.
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new() -> Self {
        Sql {
            text: String::new(),
            args: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.text.push('?');
        self.args.push(Arg::Str(s.to_string()));
        self
    }

    fn int(&mut self, i: i64) -> &mut Self {
        self.text.push('?');
        self.args.push(Arg::I64(i));
        self
    }

    fn lit(&mut self, l: &Literal) -> &mut Self {
        match l {
            Literal::Number(Number::Int(i)) => self.int(*i),
            Literal::Number(Number::Float(f)) => self.push(&float_sql(*f)),
            Literal::Str(s) => self.str(s),
            Literal::Bool(b) => self.int(i64::from(*b)),
            Literal::Datetime(t) => self.int(*t),
        }
    }

    fn query(&self, v: &ClickHouseViews) -> clickhouse::query::Query {
        let mut q = v.sql(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Str(s) => q.bind(s),
                Arg::I64(i) => q.bind(i),
            };
        }
        q
    }
}

/// Each run column a query may read: its name here, its stored column, and its latest value
/// among a run's rows (nullable ones through a tuple, since `argMax` skips NULLs).
const RUN_COLUMNS: [(&str, &str, &str); 12] = [
    ("r_name", "name", "argMax(name, ver)"),
    ("r_experiment", "experiment", "argMax(experiment, ver)"),
    (
        "r_parent",
        "parent_run",
        "tupleElement(argMax(tuple(parent_run), ver), 1)",
    ),
    ("r_description", "description", "argMax(description, ver)"),
    ("r_owner", "owner", "argMax(owner, ver)"),
    ("r_state", "state", "argMax(state, ver)"),
    ("r_message", "state_message", "argMax(state_message, ver)"),
    ("r_created", "created_ms", "argMax(created_ms, ver)"),
    ("r_updated", "updated_ms", "argMax(updated_ms, ver)"),
    (
        "r_finished",
        "finished_ms",
        "tupleElement(argMax(tuple(finished_ms), ver), 1)",
    ),
    (
        "r_heartbeat",
        "heartbeat_ms",
        "tupleElement(argMax(tuple(heartbeat_ms), ver), 1)",
    ),
    ("r_deleted", "deleted", "argMax(deleted, ver)"),
];

/// The project's runs (of `runs` only, if given) at their latest versions: `run` and the
/// `r_` columns named (every one if `None`).
///
/// All of a project's runs are read with `FINAL`, which merges their rows in key order as it
/// reads (the table is keyed by project and run, so it keeps the latest version of each run,
/// whole row, as `argMax` would): at 100,000 runs a third of the time of grouping by run. A few
/// runs are grouped, which their key range makes cheap either way.
fn runs_latest(q: &mut Sql, project: &str, columns: Option<&[&str]>, runs: Option<&[&str]>) {
    q.push("(SELECT run");
    for (name, column, latest) in RUN_COLUMNS {
        if columns.is_none_or(|c| c.contains(&name)) {
            let expr = if runs.is_some() { latest } else { column };
            q.push(&format!(", {expr} AS {name}"));
        }
    }
    match runs {
        None => {
            q.push(" FROM {t}runs FINAL WHERE project = ").str(project).push(")");
        }
        Some(_) => {
            q.push(" FROM {t}runs WHERE project = ").str(project);
            runs_in(q, runs);
            q.push(" GROUP BY run)");
        }
    }
}

/// The `r_` columns a search's condition and sort key read: a page of runs is found with
/// these alone, and only its runs are read whole.
fn run_columns_read(filter: &Filter, sort: &Field, include_deleted: bool) -> Vec<&'static str> {
    fn of(f: SystemField) -> &'static [&'static str] {
        match f {
            SystemField::Run => &[],
            SystemField::Name => &["r_name"],
            SystemField::Experiment => &["r_experiment"],
            SystemField::Owner => &["r_owner"],
            SystemField::Description => &["r_description"],
            SystemField::State => &["r_state"],
            SystemField::Parent => &["r_parent"],
            SystemField::Created => &["r_created"],
            SystemField::Updated => &["r_updated"],
            SystemField::Finished => &["r_finished"],
            SystemField::Duration => &["r_finished", "r_created"],
            SystemField::Deleted => &["r_deleted"],
        }
    }
    fn walk(f: &Filter, out: &mut Vec<&'static str>) {
        match f {
            Filter::And(v) | Filter::Or(v) => v.iter().for_each(|f| walk(f, out)),
            Filter::Not(f) => walk(f, out),
            Filter::Compare { field, .. }
            | Filter::In { field, .. }
            | Filter::Between { field, .. }
            | Filter::Like { field, .. }
            | Filter::Exists(field) => {
                if let Field::System(s) = field {
                    out.extend(of(*s));
                }
            }
            Filter::True | Filter::Tag(_) | Filter::Lineage { .. } => {}
        }
    }
    let mut out = Vec::new();
    walk(filter, &mut out);
    if let Field::System(s) = sort {
        out.extend(of(*s));
    }
    if !include_deleted {
        out.push("r_deleted");
    }
    out.sort_unstable();
    out.dedup();
    out
}

const RUN_OUT: &str = "run, r_name, r_experiment, r_parent, r_description, r_owner, r_state, r_message, r_created,
    r_updated, r_finished, r_heartbeat, r_deleted";

/// `path = ?` for one path, `path IN (?, ..)` for several.
fn paths_in(q: &mut Sql, paths: &[&str]) {
    if let [one] = paths {
        q.push(" AND path = ").str(one);
        return;
    }
    q.push(" AND path IN (");
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.str(path);
    }
    q.push(")");
}

/// ` AND run IN (?, ..)` when the read is for some runs only. Inside the grouped subquery, not
/// around it: 18.16 does not push a condition into a subquery, and here the table's key lets
/// the server read only those runs' rows.
fn runs_in(q: &mut Sql, runs: Option<&[&str]>) {
    let Some(runs) = runs else { return };
    q.push(" AND run IN (");
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.str(r);
    }
    q.push(")");
}

/// The latest attributes at `paths` of each run that has them (of `runs` only, if given),
/// columns `run`, `{p}path` and the value's, prefixed `p`. Read from the copy of the attributes
/// keyed by path, so one path of every run is a contiguous range rather than a scan of all.
///
/// Every run's are read with `FINAL`, which keeps each key's latest row as it merges the parts
/// in key order: at 100,000 runs a quarter of the time of grouping by run on a current release
/// (22 against 88 ms here), three quarters on 18.16. A deleted attribute is then left out
/// around the read, never inside it, where a condition on a column that is not in the key
/// could be applied before the merge and keep an older version.
fn attrs_latest(q: &mut Sql, project: &str, paths: &[&str], p: &str, runs: Option<&[&str]>) {
    if runs.is_none() {
        q.push(&format!(
            "(SELECT * FROM (SELECT run, path AS {p}path, vtype AS {p}t, i AS {p}i, f AS {p}f, s AS {p}s,
              deleted AS {p}gone FROM {{t}}attributes_by_path FINAL WHERE project = "
        ))
        .str(project);
        paths_in(q, paths);
        q.push(&format!(") WHERE {p}gone = 0)"));
        return;
    }
    q.push(&format!(
        "(SELECT run, path AS {p}path, argMax(vtype, ver) AS {p}t, argMax(i, ver) AS {p}i, argMax(f, ver) AS {p}f,
          argMax(s, ver) AS {p}s, argMax(deleted, ver) AS {p}gone
         FROM {{t}}attributes_by_path WHERE project = "
    ))
    .str(project);
    paths_in(q, paths);
    runs_in(q, runs);
    q.push(&format!(" GROUP BY run, path HAVING {p}gone = 0)"));
}

/// The latest summaries of the float series at `paths` of each run that has them (of `runs`
/// only, if given), columns `run`, `{p}path` and the summary's, prefixed `p`. Read from the copy
/// keyed by path, as [`attrs_latest`] reads attributes: every run's with `FINAL` (the conditions
/// are on key columns, which all versions of a row share), a few runs' grouped.
fn metric_latest(q: &mut Sql, project: &str, paths: &[&str], p: &str, runs: Option<&[&str]>) {
    if runs.is_none() {
        q.push(&format!(
            "(SELECT run, path AS {p}path, count AS {p}count, n_values AS {p}n, min AS {p}min, max AS {p}max,
              sum AS {p}sum, last_value AS {p}last FROM {{t}}series_by_path FINAL WHERE project = "
        ))
        .str(project);
        paths_in(q, paths);
        q.push(" AND kind = 'float')");
        return;
    }
    q.push(&format!(
        "(SELECT run, path AS {p}path, argMax(count, ver) AS {p}count, argMax(n_values, ver) AS {p}n,
          argMax(min, ver) AS {p}min, argMax(max, ver) AS {p}max, argMax(sum, ver) AS {p}sum,
          argMax(last_value, ver) AS {p}last
         FROM {{t}}series_by_path WHERE project = "
    ))
    .str(project);
    paths_in(q, paths);
    runs_in(q, runs);
    q.push(" AND kind = 'float' GROUP BY run, path)");
}

/// A metric summary's value (`-0` read as `0`), the condition that it has one (NaN is none),
/// and whether the value is an integer (the point count).
fn metric_value(agg: MetricAgg, p: &str) -> (String, String, bool) {
    match agg {
        MetricAgg::Last => (
            format!("({p}last + 0.)"),
            format!("({p}count > 0 AND NOT isNaN({p}last))"),
            false,
        ),
        MetricAgg::Min => (
            format!("({p}min + 0.)"),
            format!("({p}n > 0 AND NOT isNaN({p}min))"),
            false,
        ),
        MetricAgg::Max => (
            format!("({p}max + 0.)"),
            format!("({p}n > 0 AND NOT isNaN({p}max))"),
            false,
        ),
        MetricAgg::Mean => (
            format!("({p}sum / {p}n + 0.)"),
            format!("({p}n > 0 AND NOT isNaN({p}sum / {p}n))"),
            false,
        ),
        MetricAgg::Count => (format!("toInt64({p}count)"), "1".to_string(), true),
    }
}

/// A system field's value over the `r_` columns, and whether the run has it.
fn system_value(f: SystemField) -> (&'static str, &'static str) {
    match f {
        SystemField::Run => ("run", "1"),
        SystemField::Name => ("r_name", "1"),
        SystemField::Experiment => ("r_experiment", "1"),
        SystemField::Owner => ("r_owner", "1"),
        SystemField::Description => ("r_description", "1"),
        SystemField::State => ("r_state", "1"),
        SystemField::Parent => ("assumeNotNull(r_parent)", "isNotNull(r_parent)"),
        SystemField::Created => ("r_created", "1"),
        SystemField::Updated => ("r_updated", "1"),
        SystemField::Finished => ("assumeNotNull(r_finished)", "isNotNull(r_finished)"),
        SystemField::Duration => (
            "((assumeNotNull(r_finished) - r_created) / 1000.0)",
            "isNotNull(r_finished)",
        ),
        SystemField::Deleted => ("r_deleted", "1"),
    }
}

/// A `like` pattern as the server reads it: the contract's `\c` is the character `c` whatever
/// it is, while the server accepts escapes only before `%`, `_` and `\` (and refuses others); a
/// trailing lone `\` is a literal backslash.
fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let c = chars.next().unwrap_or('\\');
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The literals of an `IN` list that a key of the given type can equal, as that type: an
/// Int64 key takes integers and integral floats in range, a Float64 key floats and the integers
/// a float holds exactly (the server converts a set to the key's type, which would round).
fn in_list(values: &[Literal], int_key: bool) -> Vec<Literal> {
    values
        .iter()
        .filter_map(|v| match *v {
            Literal::Number(Number::Int(i)) if !int_key => {
                ((i as f64) as i128 == i128::from(i)).then_some(Literal::Number(Number::Float(i as f64)))
            }
            Literal::Number(Number::Float(f)) if int_key => (f.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f))
            .then_some(Literal::Number(Number::Int(f as i64))),
            _ => Some(v.clone()),
        })
        .collect()
}

/// `key op literal` and the like for one comparison filter; `int_key` says whether the key is
/// an Int64 (else a Float64, for numbers).
fn predicate(q: &mut Sql, key: &str, f: &Filter, int_key: bool) {
    match f {
        Filter::Compare { op, value, .. } => {
            q.push(&format!("{key} {} ", op.sql())).lit(value);
        }
        Filter::In { values, negated, .. } => {
            let values = in_list(values, int_key);
            if values.is_empty() {
                q.push(if *negated { "1" } else { "0" });
                return;
            }
            q.push(&format!("{key} {}IN (", if *negated { "NOT " } else { "" }));
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.lit(v);
            }
            q.push(")");
        }
        Filter::Between { low, high, negated, .. } => {
            q.push(if *negated { "NOT (" } else { "(" })
                .push(&format!("{key} BETWEEN "))
                .lit(low)
                .push(" AND ")
                .lit(high)
                .push(")");
        }
        Filter::Like {
            pattern,
            fold_case,
            negated,
            ..
        } => {
            q.push(if *negated { "NOT " } else { "" });
            let pattern = like_pattern(pattern);
            if *fold_case {
                q.push(&format!("like(lower({key}), lower(")).str(&pattern).push("))");
            } else {
                q.push(&format!("like({key}, ")).str(&pattern).push(")");
            }
        }
        _ => unreachable!("predicate of a non-comparison"),
    }
}

/// A comparison on an attribute (the `a_` columns): a number is compared as the integer or the
/// float it is stored as, exactly (never through a float, which would round integers past
/// 2^53); other classes hold only for attributes of their type.
fn attr_predicate(q: &mut Sql, f: &Filter) {
    match f.literal_class() {
        Class::Number => {
            q.push("((a_t = 'int' AND ");
            predicate(q, "a_i", f, true);
            q.push(") OR (a_t = 'float' AND NOT isNaN(a_f) AND ");
            predicate(q, "(a_f + 0.)", f, false);
            q.push("))");
        }
        Class::String => {
            q.push("a_t = 'string' AND ");
            predicate(q, "a_s", f, false);
        }
        Class::Bool => {
            q.push("a_t = 'bool' AND ");
            predicate(q, "a_i", f, true);
        }
        Class::Datetime => {
            q.push("a_t = 'datetime' AND ");
            predicate(q, "a_i", f, true);
        }
    }
}

fn compile(q: &mut Sql, project: &str, f: &Filter) {
    match f {
        Filter::True => {
            q.push("1");
        }
        Filter::And(v) | Filter::Or(v) if v.is_empty() => {
            q.push(if matches!(f, Filter::And(_)) { "1" } else { "0" });
        }
        Filter::And(v) | Filter::Or(v) => {
            let join = if matches!(f, Filter::And(_)) { " AND " } else { " OR " };
            q.push("(");
            for (i, f) in v.iter().enumerate() {
                if i > 0 {
                    q.push(join);
                }
                compile(q, project, f);
            }
            q.push(")");
        }
        Filter::Not(f) => {
            q.push("NOT (");
            compile(q, project, f);
            q.push(")");
        }
        Filter::Compare { field, .. }
        | Filter::In { field, .. }
        | Filter::Between { field, .. }
        | Filter::Like { field, .. } => match field {
            Field::System(s) => {
                let (key, has) = system_value(*s);
                q.push(&format!("({has} AND ifNull("));
                predicate(q, key, f, s.class() != Class::Number);
                q.push(", 0))");
            }
            Field::Attr(path) => {
                q.push("run IN (SELECT run FROM ");
                attrs_latest(q, project, &[path], "a_", None);
                q.push(" WHERE ");
                attr_predicate(q, f);
                q.push(")");
            }
            Field::Metric(path, agg) => {
                let (key, has, int) = metric_value(*agg, "m_");
                q.push("run IN (SELECT run FROM ");
                metric_latest(q, project, &[path], "m_", None);
                q.push(&format!(" WHERE {has} AND "));
                predicate(q, &key, f, int);
                q.push(")");
            }
        },
        Filter::Exists(field) => match field {
            Field::System(s) => {
                q.push(system_value(*s).1);
            }
            Field::Attr(path) => {
                q.push("run IN (SELECT run FROM ");
                attrs_latest(q, project, &[path], "a_", None);
                q.push(")");
            }
            Field::Metric(path, _) => {
                q.push("run IN (SELECT run FROM ");
                metric_latest(q, project, &[path], "m_", None);
                q.push(")");
            }
        },
        Filter::Tag(test) => {
            q.push(
                "run IN (SELECT run FROM (SELECT run, tag, argMax(present, ver) AS present FROM {t}tags
                 WHERE project = ",
            )
            .str(project)
            .push(" GROUP BY run, tag) WHERE present = 1");
            match test {
                TagTest::Any => {}
                TagTest::OneOf(tags) => {
                    q.push(" AND tag IN (");
                    for (i, t) in tags.iter().enumerate() {
                        if i > 0 {
                            q.push(", ");
                        }
                        q.str(t);
                    }
                    q.push(")");
                }
                TagTest::Like { pattern, fold_case } => {
                    let pattern = like_pattern(pattern);
                    if *fold_case {
                        q.push(" AND like(lower(tag), lower(").str(&pattern).push("))");
                    } else {
                        q.push(" AND like(tag, ").str(&pattern).push(")");
                    }
                }
            }
            q.push(")");
        }
        Filter::Lineage {
            direction,
            kind,
            name,
            version,
        } => {
            q.push("run IN (SELECT run FROM {t}lineage WHERE project = ")
                .str(project)
                .push(" AND kind = ")
                .str(kind.as_str())
                .push(" AND name = ")
                .str(name)
                .push(" AND direction = ")
                .str(direction.as_str());
            if let Some(v) = version {
                q.push(" AND version = ").str(v);
            }
            q.push(")");
        }
    }
}

/// The project's runs that meet the condition, with the `r_` columns named (every one if
/// `None`).
///
/// The condition is applied here, before the runs are joined with their sort keys or group
/// aggregates, so that a join looks up the runs it keeps, not every run: on 18.16 a filtered
/// page's statement at 100,000 runs took a tenth less time than with the condition after the
/// join (143 against 159 ms). It reads only the run columns and `run IN` sets, never a joined
/// column.
fn scoped_runs(q: &mut Sql, project: &str, columns: Option<&[&str]>, filter: &Filter, include_deleted: bool) {
    q.push("(SELECT * FROM ");
    runs_latest(q, project, columns, None);
    q.push(" WHERE ");
    if !include_deleted {
        q.push("r_deleted = 0 AND ");
    }
    compile(q, project, filter);
    q.push(")");
}

/// Runs joined with a field's sort key, as columns `{p}rank`, `{p}int`, `{p}f`, `{p}i`, `{p}s`
/// (rank 0: the run lacks the field; 1: a number, `{p}int` when an integer; 2: a string).
fn with_key(q: &mut Sql, project: &str, field: &Field, p: &str, inner: impl FnOnce(&mut Sql)) {
    match field {
        Field::System(s) => {
            let (v, has) = system_value(*s);
            let (rank, int, f, i, s) = match s.class() {
                Class::String => (
                    format!("if({has}, 2, 0)"),
                    "0".to_string(),
                    "0.0".to_string(),
                    "0".to_string(),
                    format!("if({has}, {v}, '')"),
                ),
                Class::Number => (
                    format!("if({has}, 1, 0)"),
                    "0".to_string(),
                    format!("if({has}, toFloat64({v}) + 0., 0.0)"),
                    format!("if({has}, {}, 0)", saturating_int(&format!("toFloat64({v})"))),
                    "''".to_string(),
                ),
                Class::Bool | Class::Datetime => (
                    format!("if({has}, 1, 0)"),
                    "1".to_string(),
                    format!("if({has}, toFloat64({v}), 0.0)"),
                    format!("if({has}, toInt64({v}), 0)"),
                    "''".to_string(),
                ),
            };
            q.push(&format!(
                "(SELECT *, toUInt8({rank}) AS {p}rank, toUInt8({int}) AS {p}int, toFloat64({f}) AS {p}f,
                  toInt64({i}) AS {p}i, toString({s}) AS {p}s FROM "
            ));
            inner(q);
            q.push(")");
        }
        Field::Attr(path) => {
            q.push("(SELECT * FROM ");
            inner(q);
            q.push(&format!(
                " AS {p}runs ANY LEFT JOIN (SELECT run,
                   toUInt8(multiIf(a_t IN ('int', 'bool', 'datetime'), 1, a_t = 'float' AND NOT isNaN(a_f), 1,
                           a_t = 'string', 2, 0)) AS {p}rank,
                   toUInt8(a_t IN ('int', 'bool', 'datetime')) AS {p}int,
                   if(a_t = 'float', if(isNaN(a_f), 0.0, a_f + 0.), toFloat64(a_i)) AS {p}f,
                   if(a_t = 'float', {}, a_i) AS {p}i,
                   if(a_t = 'string', a_s, '') AS {p}s FROM ",
                saturating_int("a_f")
            ));
            attrs_latest(q, project, &[path], "a_", None);
            q.push(&format!(") AS {p}key USING run)"));
        }
        Field::Metric(path, agg) => {
            let (v, has, int) = metric_value(*agg, "m_");
            let i = if int {
                v.clone()
            } else {
                format!("if({has}, {}, 0)", saturating_int(&v))
            };
            q.push("(SELECT * FROM ");
            inner(q);
            q.push(&format!(
                " AS {p}runs ANY LEFT JOIN (SELECT run, toUInt8(if({has}, 1, 0)) AS {p}rank, toUInt8({}) AS {p}int,
                   if({has}, toFloat64({v}), 0.0) AS {p}f, {i} AS {p}i, '' AS {p}s FROM ",
                u8::from(int)
            ));
            metric_latest(q, project, &[path], "m_", None);
            q.push(&format!(") AS {p}key USING run)"));
        }
    }
}

fn sort_value(rank: u8, int: u8, f: f64, i: i64, s: String) -> Option<SortValue> {
    match rank {
        1 if int == 1 => Some(SortValue::Int(i)),
        1 => Some(SortValue::Float(f)),
        2 => Some(SortValue::Str(s)),
        _ => None,
    }
}

/// A cursor's sort key as the columns hold it: (none, rank, f, i, s).
fn cursor_key(v: &Option<SortValue>) -> (i64, i64, f64, i64, String) {
    match v {
        None => (1, 0, 0.0, 0, String::new()),
        Some(SortValue::Int(i)) => (0, 1, *i as f64, *i, String::new()),
        Some(SortValue::Float(f)) => {
            let i = if f.is_finite() { *f as i64 } else { 0 };
            (0, 1, *f + 0.0, i, String::new())
        }
        Some(SortValue::Str(s)) => (0, 2, 0.0, 0, s.clone()),
    }
}

#[derive(Row, Deserialize)]
struct KeyRec {
    run: String,
    rank: u8,
    int: u8,
    f: f64,
    i: i64,
    s: String,
}

/// A search in two steps: the page's runs and sort values, from the few run columns the
/// condition and the key read; then those runs whole and their columns, at once. Reading every
/// column of every run to keep fifty took most of a search's time at 100,000 runs.
pub(super) async fn search(v: &ClickHouseViews, s: &RunSearch) -> Result<SearchPage, ViewError> {
    let dir = if s.sort.descending { "DESC" } else { "ASC" };
    let read = run_columns_read(&s.filter, &s.sort.field, s.include_deleted);
    let mut q = Sql::new();
    q.push("SELECT run, krank, kint, kf, ki, ks FROM ");
    with_key(&mut q, &s.project, &s.sort.field, "k", |q| {
        scoped_runs(q, &s.project, Some(&read), &s.filter, s.include_deleted)
    });
    if let Some(c) = &s.after {
        let (none, rank, f, i, str_) = cursor_key(&c.value);
        let cmp = if s.sort.descending { "<" } else { ">" };
        q.push(" WHERE (toUInt8(krank = 0) > ")
            .int(none)
            .push(" OR (toUInt8(krank = 0) = ")
            .int(none)
            .push(&format!(" AND (krank, kf, ki, ks, run) {cmp} ("))
            .int(rank)
            .push(", ");
        q.lit(&Literal::Number(Number::Float(f)))
            .push(", ")
            .int(i)
            .push(", ")
            .str(&str_)
            .push(", ")
            .str(&c.run)
            .push(")))");
    }
    q.push(&format!(
        " ORDER BY krank = 0, krank {dir}, kf {dir}, ki {dir}, ks {dir}, run {dir} LIMIT "
    ))
    .int(s.limit.min(i64::MAX as usize) as i64);
    let keys: Vec<KeyRec> = q.query(v).fetch_all().await.map_err(storage)?;
    if keys.is_empty() {
        return Ok(SearchPage::new(Vec::new(), s.limit));
    }

    let runs: Vec<&str> = keys.iter().map(|k| k.run.as_str()).collect();
    let mut q = Sql::new();
    // As the run reads decode them: project, the columns, whether its creation was seen, version.
    q.push("SELECT ")
        .str(&s.project)
        .push(&format!(", {RUN_OUT}, toUInt8(1), toUInt64(0) FROM "));
    runs_latest(&mut q, &s.project, None, Some(&runs));
    let rows = async { q.query(v).fetch_all::<RunRec>().await.map_err(storage) };
    let (rows, mut values) = futures::future::try_join(rows, columns(v, &s.project, &runs, &s.columns)).await?;
    let mut rows: HashMap<String, RunRec> = rows.into_iter().map(|r| (r.run.clone(), r)).collect();
    let found = keys
        .into_iter()
        .filter_map(|k| {
            // A run is in the rows read second unless it was not there (it is never removed).
            let r = rows.remove(&k.run)?;
            Some(FoundRun {
                sort_value: sort_value(k.rank, k.int, k.f, k.i, k.s),
                columns: values.iter_mut().map(|m| m.remove(&k.run)).collect(),
                run: run_row(r),
            })
        })
        .collect();
    Ok(SearchPage::new(found, s.limit))
}

#[derive(Row, Deserialize)]
struct MetricRec {
    run: String,
    path: String,
    count: u64,
    n: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
}

/// A metric summary's value as a column shows it: a float (the point count as an int), none
/// where the summary has no value (as SQLite, which keeps the last value's bits but stores no
/// NaN summary).
fn metric_column(m: &MetricRec, agg: MetricAgg) -> Option<Value> {
    let number = |x: f64| (m.n > 0 && !x.is_nan()).then_some(Value::Float(x));
    match agg {
        MetricAgg::Last => (m.count > 0).then_some(Value::Float(m.last)),
        MetricAgg::Min => number(m.min),
        MetricAgg::Max => number(m.max),
        MetricAgg::Mean => number(m.sum / m.n as f64),
        MetricAgg::Count => Some(Value::Int(m.count as i64)),
    }
}

/// The runs' values of each column, a map per column in order: an attribute as it is typed, a
/// metric summary as [`metric_column`] has it; system fields have none, as on SQLite.
///
/// One statement reads every attribute column and one every metric column: on 18.16 a
/// statement costs several milliseconds however little it reads, and a page's statements share
/// the server's cores.
async fn columns(
    v: &ClickHouseViews,
    project: &str,
    runs: &[&str],
    fields: &[Field],
) -> Result<Vec<HashMap<String, Value>>, ViewError> {
    let paths = |attr: bool| {
        let mut paths: Vec<&str> = fields
            .iter()
            .filter_map(|f| match f {
                Field::Attr(p) if attr => Some(p.as_str()),
                Field::Metric(p, _) if !attr => Some(p.as_str()),
                _ => None,
            })
            .collect();
        paths.sort_unstable();
        paths.dedup();
        paths
    };
    let (attr_paths, metric_paths) = (paths(true), paths(false));
    let attrs = async {
        if attr_paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Sql::new();
        q.push("SELECT ")
            .str(project)
            .push(", run, a_path, a_t, a_i, a_f, a_s, a_gone, toUInt64(0) FROM ");
        attrs_latest(&mut q, project, &attr_paths, "a_", Some(runs));
        q.query(v).fetch_all::<AttrRec>().await.map_err(storage)
    };
    let metrics = async {
        if metric_paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Sql::new();
        q.push("SELECT run, m_path, m_count, m_n, m_min, m_max, m_sum, m_last FROM ");
        metric_latest(&mut q, project, &metric_paths, "m_", Some(runs));
        q.query(v).fetch_all::<MetricRec>().await.map_err(storage)
    };
    let (attrs, metrics) = futures::future::try_join(attrs, metrics).await?;
    fields
        .iter()
        .map(|field| {
            let mut out = HashMap::new();
            match field {
                Field::System(_) => {}
                Field::Attr(path) => {
                    for a in attrs.iter().filter(|a| &a.path == path) {
                        out.insert(a.run.clone(), value_of(a)?);
                    }
                }
                Field::Metric(path, agg) => {
                    for m in metrics.iter().filter(|m| &m.path == path) {
                        if let Some(value) = metric_column(m, *agg) {
                            out.insert(m.run.clone(), value);
                        }
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// The aggregated fields' numeric values per run, as columns `x{n}has` and `x{n}v` for the
/// n-th aggregate (from 1), over the runs `inner` selects.
///
/// Whatever their number, the values take at most three levels: system fields are computed over
/// the run columns, and all attributes (and all metrics) arrive in one join each, pivoted from
/// one row per run and path to one row per run (a server allows a bounded depth of subqueries).
fn with_aggregates(q: &mut Sql, project: &str, fields: &[Field], inner: impl FnOnce(&mut Sql)) {
    let numbered = || fields.iter().enumerate().map(|(i, f)| (i + 1, f));
    let mut system = Vec::new();
    let (mut attrs, mut metrics) = (Vec::new(), Vec::new());
    for (n, f) in numbered() {
        match f {
            Field::System(s) => system.push((n, *s)),
            Field::Attr(path) => attrs.push((n, path.as_str())),
            Field::Metric(path, agg) => metrics.push((n, path.as_str(), *agg)),
        }
    }
    // A join's right side: one row per run, two columns per aggregate.
    // Both sides named: current releases refuse a join of unnamed subqueries.
    fn pivot<'a>(
        q: &mut Sql,
        names: (&str, &str),
        wanted: impl Iterator<Item = (usize, &'a str, String, String)>,
        latest: impl FnOnce(&mut Sql),
    ) {
        q.push(&format!(" AS {} ANY LEFT JOIN (SELECT run", names.0));
        for (n, path, has, v) in wanted {
            q.push(&format!(", toUInt8(maxIf({has}, x_path = ")).str(path);
            q.push(&format!(")) AS x{n}has, maxIf({v}, x_path = ")).str(path);
            q.push(&format!(" AND {has}) AS x{n}v"));
        }
        q.push(" FROM ");
        latest(q);
        q.push(&format!(" GROUP BY run) AS {} USING run", names.1));
    }
    fn paths(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_unstable();
        v.dedup();
        v
    }
    let attr_paths = paths(attrs.iter().map(|a| a.1).collect());
    let metric_paths = paths(metrics.iter().map(|m| m.1).collect());
    let attr_wanted = attrs.iter().map(|&(n, path)| {
        (
            n,
            path,
            "toUInt8(a_t = 'int' OR (a_t = 'float' AND NOT isNaN(a_f)))".to_string(),
            "if(a_t = 'int', toFloat64(a_i), a_f + 0.)".to_string(),
        )
    });
    let metric_wanted = metrics.iter().map(|&(n, path, agg)| {
        let (v, has, _) = metric_value(agg, "m_");
        (n, path, format!("toUInt8({has})"), format!("toFloat64({v})"))
    });
    if !metrics.is_empty() {
        q.push("(SELECT * FROM ");
    }
    if !attrs.is_empty() {
        q.push("(SELECT * FROM ");
    }
    q.push("(SELECT *");
    for (n, s) in &system {
        let (v, has) = system_value(*s);
        let (has, v) = if matches!(s.class(), Class::Number | Class::Datetime | Class::Bool) {
            (has.to_string(), format!("if({has}, toFloat64({v}), 0.0)"))
        } else {
            ("0".to_string(), "0.0".to_string())
        };
        q.push(&format!(", toUInt8({has}) AS x{n}has, {v} AS x{n}v"));
    }
    q.push(" FROM ");
    inner(q);
    q.push(")");
    if !attrs.is_empty() {
        pivot(q, ("xruns", "xattrs"), attr_wanted, |q| {
            q.push("(SELECT run, a_path AS x_path, a_t, a_i, a_f FROM ");
            attrs_latest(q, project, &attr_paths, "a_", None);
            q.push(")");
        });
        q.push(")");
    }
    if !metrics.is_empty() {
        pivot(q, ("xleft", "xmetrics"), metric_wanted, |q| {
            q.push("(SELECT *, m_path AS x_path FROM ");
            metric_latest(q, project, &metric_paths, "m_", None);
            q.push(")");
        });
        q.push(")");
    }
}

pub(super) async fn group(v: &ClickHouseViews, g: &RunGrouping) -> Result<Groups, ViewError> {
    let mut q = Sql::new();
    // Keys that compare equal group together: an integer and the float of the same value differ
    // only in `kint`, so it is not grouped by.
    let mut cols = vec![
        "krank".to_string(),
        "max(kint)".into(),
        "kf".into(),
        "ki".into(),
        "ks".into(),
        "count()".into(),
    ];
    for n in 1..=g.aggregates.len() {
        cols.push(format!(
            "countIf(x{n}has = 1), minIf(x{n}v, x{n}has = 1), maxIf(x{n}v, x{n}has = 1), avgIf(x{n}v, x{n}has = 1)"
        ));
    }
    q.push(&format!("SELECT {} FROM ", cols.join(", ")));
    with_aggregates(&mut q, &g.project, &g.aggregates, |q| {
        with_key(q, &g.project, &g.by, "k", |q| {
            scoped_runs(q, &g.project, None, &g.filter, g.include_deleted)
        })
    });
    q.push(" GROUP BY krank, kf, ki, ks ORDER BY krank = 0, krank, kf, ki, ks LIMIT ")
        .int(g.limit.min(i64::MAX as usize - 1) as i64 + 1);
    let mut cursor = q.query(v).fetch_bytes("RowBinary").map_err(storage)?;
    let bytes = cursor.collect().await.map_err(storage)?;
    let groups = decode_groups(&bytes, g.aggregates.len())?;
    let truncated = groups.len() > g.limit;
    let mut groups = groups;
    groups.truncate(g.limit);
    Ok(Groups { groups, truncated })
}

/// Reads the group rows (a key, a count, then four values per aggregate) from RowBinary, whose
/// width depends on the number of aggregates.
fn decode_groups(mut b: &[u8], aggregates: usize) -> Result<Vec<Group>, ViewError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], ViewError> {
        if b.len() < n {
            return Err(ViewError::Corrupt("group row cut short".into()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn u64_(b: &mut &[u8]) -> Result<u64, ViewError> {
        Ok(u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes")))
    }
    fn f64_(b: &mut &[u8]) -> Result<f64, ViewError> {
        Ok(f64::from_bits(u64_(b)?))
    }
    fn leb(b: &mut &[u8]) -> Result<usize, ViewError> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let byte = take(b, 1)?[0];
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(ViewError::Corrupt("bad string length".into()))
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let rank = take(&mut b, 1)?[0];
        let int = take(&mut b, 1)?[0];
        let f = f64_(&mut b)?;
        let i = u64_(&mut b)? as i64;
        let len = leb(&mut b)?;
        let s = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
        let runs = u64_(&mut b)?;
        let mut stats = Vec::with_capacity(aggregates);
        for _ in 0..aggregates {
            let count = u64_(&mut b)?;
            let (min, max, mean) = (f64_(&mut b)?, f64_(&mut b)?, f64_(&mut b)?);
            let some = count > 0;
            stats.push(Stats {
                count,
                min: some.then_some(min),
                max: some.then_some(max),
                mean: some.then_some(mean),
            });
        }
        out.push(Group {
            key: sort_value(rank, int, f, i, s),
            runs,
            aggregates: stats,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_short_and_exact() {
        assert_eq!(float_sql(0.25), "2.5e-1");
        assert_eq!(float_sql(-0.0), "0e0");
        assert_eq!(
            float_sql(1e-310),
            format!("({:e} * 9.332636185032189e-302)", 1e-310 * 2f64.powi(1000))
        );
        assert_eq!(float_sql(f64::INFINITY), "inf");
        assert_eq!(float_sql(f64::NEG_INFINITY), "-inf");
        assert!(float_sql(f64::MIN_POSITIVE).len() < 30);
        // Scaling a subnormal into range and back loses nothing.
        for f in [5e-324, -1e-310, 2.225_073_858_507_201e-308] {
            assert_eq!(f * 2f64.powi(1000) * 2f64.powi(-1000), f);
        }
    }

    #[test]
    fn like_escapes_become_the_servers() {
        assert_eq!(like_pattern(r"a\%b"), r"a\%b");
        assert_eq!(like_pattern(r"a\_b"), r"a\_b");
        assert_eq!(like_pattern(r"a\\b"), r"a\\b");
        assert_eq!(like_pattern(r"\adam"), "adam");
        assert_eq!(like_pattern(r"end\"), r"end\\");
        assert_eq!(like_pattern("a%b_"), "a%b_");
    }

    #[test]
    fn in_lists_keep_only_what_the_key_type_can_equal() {
        let int = |i| Literal::Number(Number::Int(i));
        let float = |f| Literal::Number(Number::Float(f));
        let values = [
            int(3),
            int(9_007_199_254_740_993),
            int(i64::MAX),
            float(2.0),
            float(2.5),
            float(1e19),
        ];
        assert_eq!(
            in_list(&values, true),
            vec![int(3), int(9_007_199_254_740_993), int(i64::MAX), int(2)]
        );
        assert_eq!(
            in_list(&values, false),
            vec![float(3.0), float(2.0), float(2.5), float(1e19)]
        );
        assert_eq!(
            in_list(&[Literal::Str("x".into())], true),
            vec![Literal::Str("x".into())]
        );
    }
}
