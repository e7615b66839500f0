//! Run search compiled to SQLite.
//!
//! Every user value is bound as a parameter; the SQL text is built only from this file's
//! fragments. A page is read in up to two phases: the runs that have the sort field, walking an
//! index on (project, field, value, run) in either direction from the cursor, then the runs that
//! lack it, by run id. Filters on attributes, metrics, tags and lineage are membership tests
//! against subqueries on those tables, so `NOT` is exact negation.

use runstream_schema::Value;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::read::{RUN_COLUMNS_R, run_row, value_from_columns};
use super::write::exact;
use crate::search::*;
use crate::*;

/// An attribute's sort value; indexed by `attributes_by_value`, whose text this must equal.
const ATTR_KEY: &str = "CASE type WHEN 'float' THEN f WHEN 'string' THEN s WHEN 'string_set' THEN NULL ELSE i END";
const ATTR_KEY_S: &str =
    "CASE s.type WHEN 'float' THEN s.f WHEN 'string' THEN s.s WHEN 'string_set' THEN NULL ELSE s.i END";

/// A metric summary from the series row; the sort indexes hold these expressions, qualified
/// or not as the statement's table alias needs.
fn metric_expr(agg: MetricAgg) -> &'static str {
    match agg {
        MetricAgg::Last => "last_value",
        MetricAgg::Min => "min",
        MetricAgg::Max => "max",
        MetricAgg::Mean => "(sum / n_values)",
        MetricAgg::Count => "count",
    }
}

fn metric_expr_s(agg: MetricAgg) -> &'static str {
    match agg {
        MetricAgg::Last => "s.last_value",
        MetricAgg::Min => "s.min",
        MetricAgg::Max => "s.max",
        MetricAgg::Mean => "(s.sum / s.n_values)",
        MetricAgg::Count => "s.count",
    }
}

fn system_expr(f: SystemField) -> &'static str {
    match f {
        SystemField::Run => "r.run",
        SystemField::Name => "r.name",
        SystemField::Experiment => "r.experiment",
        SystemField::Owner => "r.owner",
        SystemField::Description => "r.description",
        SystemField::State => "r.state",
        SystemField::Parent => "r.parent_run",
        SystemField::Created => "r.created_ms",
        SystemField::Updated => "r.updated_ms",
        SystemField::Finished => "r.finished_ms",
        SystemField::Duration => "((r.finished_ms - r.created_ms) / 1000.0)",
        SystemField::Deleted => "r.deleted",
    }
}

/// SQL text and its parameters; `?1` is always the project.
struct Query {
    sql: String,
    params: Vec<Sql>,
}

impl Query {
    fn new(project: &str) -> Self {
        Query {
            sql: String::new(),
            params: vec![Sql::Text(project.to_string())],
        }
    }

    fn bind(&mut self, v: Sql) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    fn lit(&mut self, l: &Literal) -> String {
        self.bind(literal(l))
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Sql::Text(s.to_string()))
    }
}

fn literal(l: &Literal) -> Sql {
    match l {
        Literal::Number(Number::Int(i)) => Sql::Integer(*i),
        Literal::Number(Number::Float(f)) => Sql::Real(*f),
        Literal::Str(s) => Sql::Text(s.clone()),
        Literal::Bool(b) => Sql::Integer(i64::from(*b)),
        Literal::Datetime(t) => Sql::Integer(*t),
    }
}

fn sort_value(v: &SortValue) -> Sql {
    match v {
        SortValue::Int(i) => Sql::Integer(*i),
        SortValue::Float(f) => Sql::Real(*f),
        SortValue::Str(s) => Sql::Text(s.clone()),
    }
}

fn read_sort_value(v: rusqlite::types::ValueRef<'_>) -> Option<SortValue> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(i) => Some(SortValue::Int(i)),
        ValueRef::Real(f) => Some(SortValue::Float(f)),
        ValueRef::Text(t) => Some(SortValue::Str(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

/// A `like` pattern (`%`, `_`, `\` escapes) as the equivalent GLOB pattern, which SQLite matches
/// case-sensitively whatever its settings; folded to ASCII lower case for `ilike`.
pub(crate) fn like_to_glob(pattern: &str, fold_case: bool) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '%' => {
                out.push('*');
                continue;
            }
            '_' => {
                out.push('?');
                continue;
            }
            '\\' => chars.next().unwrap_or('\\'),
            c => c,
        };
        let c = if fold_case { c.to_ascii_lowercase() } else { c };
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether the run has a row in `table` matching `body` (which follows `WHERE project = ?1 AND
/// run = r.run AND`). A correlated probe of the table's primary key: a page sorted by an index
/// stops as soon as it is full, so its cost follows the runs it walks, not the rows a predicate
/// matches in the whole project (which a materialised `IN (SELECT ...)` would pay up front).
fn member(table: &str, body: &str) -> String {
    format!("EXISTS (SELECT 1 FROM {table} WHERE project = ?1 AND run = r.run AND {body})")
}

/// The condition that holds for the value `key` of the given class under the operator.
fn predicate(q: &mut Query, key: &str, f: &Filter) -> String {
    match f {
        Filter::Compare { op, value, .. } => format!("{key} {} {}", op.sql(), q.lit(value)),
        Filter::In { values, negated, .. } => {
            let list: Vec<String> = values.iter().map(|v| q.lit(v)).collect();
            format!("{key} {}IN ({})", if *negated { "NOT " } else { "" }, list.join(", "))
        }
        Filter::Between { low, high, negated, .. } => format!(
            "{key} {}BETWEEN {} AND {}",
            if *negated { "NOT " } else { "" },
            q.lit(low),
            q.lit(high)
        ),
        Filter::Like {
            pattern,
            fold_case,
            negated,
            ..
        } => {
            let p = q.text(&like_to_glob(pattern, *fold_case));
            let k = if *fold_case {
                format!("lower({key})")
            } else {
                key.to_string()
            };
            format!("{}{k} GLOB {p}", if *negated { "NOT " } else { "" })
        }
        _ => unreachable!("predicate of a non-comparison"),
    }
}

fn type_list(c: Class) -> String {
    c.attribute_types()
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The condition of `f`. `walk` is the sort field of a page's first phase, whose row (`s`, one
/// per run and path) the statement walks: a condition on the same attribute or metric is tested
/// on that row instead of probing for it again, which also lets SQLite bound the index walk by
/// it. Under a `NOT` (`negated`) such a test is made false where it is NULL, as a probe is.
fn compile(q: &mut Query, f: &Filter, walk: Option<&Field>) -> String {
    compile_in(q, f, walk, false)
}

fn compile_in(q: &mut Query, f: &Filter, walk: Option<&Field>, negated: bool) -> String {
    let on_row = |p: String| {
        if negated {
            format!("COALESCE({p}, 0)")
        } else {
            format!("({p})")
        }
    };
    match f {
        Filter::True => "1".into(),
        Filter::And(v) if v.is_empty() => "1".into(),
        Filter::Or(v) if v.is_empty() => "0".into(),
        Filter::And(v) => format!(
            "({})",
            v.iter()
                .map(|f| compile_in(q, f, walk, negated))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        Filter::Or(v) => format!(
            "({})",
            v.iter()
                .map(|f| compile_in(q, f, walk, negated))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Filter::Not(f) => format!("NOT ({})", compile_in(q, f, walk, true)),
        Filter::Compare { field, .. }
        | Filter::In { field, .. }
        | Filter::Between { field, .. }
        | Filter::Like { field, .. } => match field {
            Field::System(s) => {
                let e = system_expr(*s);
                let p = predicate(q, e, f);
                format!("({e} IS NOT NULL AND {p})")
            }
            Field::Attr(path) if matches!(walk, Some(Field::Attr(w)) if w == path) => {
                let p = predicate(q, ATTR_KEY_S, f);
                on_row(format!("s.type IN ({}) AND {p}", type_list(f.literal_class())))
            }
            Field::Metric(path, agg) if matches!(walk, Some(Field::Metric(w, _)) if w == path) => {
                on_row(predicate(q, metric_expr_s(*agg), f))
            }
            Field::Attr(path) => {
                let path = q.text(path);
                let p = predicate(q, ATTR_KEY, f);
                member(
                    "attributes",
                    &format!("path = {path} AND type IN ({}) AND {p}", type_list(f.literal_class())),
                )
            }
            Field::Metric(path, agg) => {
                let path = q.text(path);
                let p = predicate(q, metric_expr(*agg), f);
                member("series", &format!("path = {path} AND kind = 'float' AND {p}"))
            }
        },
        Filter::Exists(field) => match field {
            Field::System(s) => format!("{} IS NOT NULL", system_expr(*s)),
            Field::Attr(path) => {
                let path = q.text(path);
                member("attributes", &format!("path = {path}"))
            }
            Field::Metric(path, _) => {
                let path = q.text(path);
                member("series", &format!("path = {path} AND kind = 'float'"))
            }
        },
        Filter::Tag(TagTest::Any) => member("tags", "1"),
        Filter::Tag(TagTest::OneOf(tags)) => {
            let list: Vec<String> = tags.iter().map(|t| q.text(t)).collect();
            member("tags", &format!("tag IN ({})", list.join(", ")))
        }
        Filter::Tag(TagTest::Like { pattern, fold_case }) => {
            let p = q.text(&like_to_glob(pattern, *fold_case));
            let k = if *fold_case { "lower(tag)" } else { "tag" };
            member("tags", &format!("{k} GLOB {p}"))
        }
        Filter::Lineage {
            direction,
            kind,
            name,
            version,
        } => {
            let d = q.text(direction.as_str());
            let k = q.text(kind.as_str());
            let n = q.text(name);
            let v = version
                .as_ref()
                .map(|v| format!(" AND version = {}", q.text(v)))
                .unwrap_or_default();
            member("lineage", &format!("kind = {k} AND name = {n} AND direction = {d}{v}"))
        }
    }
}

/// The part of a statement that holds for every run a search may return.
fn scope(q: &mut Query, filter: &Filter, include_deleted: bool, walk: Option<&Field>) -> String {
    let f = compile(q, filter, walk);
    if include_deleted {
        f
    } else {
        format!("r.deleted = 0 AND {f}")
    }
}

/// Where the sort values of a field live: the FROM clause, its WHERE terms, the value and the
/// run id column, ordered by the same index as the value.
struct SortSource {
    from: String,
    base: String,
    key: String,
    run: &'static str,
}

fn sort_source(q: &mut Query, field: &Field) -> SortSource {
    let join = "CROSS JOIN runs r ON r.project = s.project AND r.run = s.run";
    match field {
        Field::System(s) => SortSource {
            from: "runs r".into(),
            base: "r.project = ?1".into(),
            key: system_expr(*s).into(),
            run: "r.run",
        },
        Field::Attr(path) => {
            let p = q.text(path);
            SortSource {
                from: format!("attributes s {join}"),
                base: format!("s.project = ?1 AND s.path = {p}"),
                key: ATTR_KEY_S.into(),
                run: "s.run",
            }
        }
        Field::Metric(path, agg) => {
            let p = q.text(path);
            SortSource {
                from: format!("series s {join}"),
                base: format!("s.project = ?1 AND s.path = {p} AND s.kind = 'float'"),
                key: metric_expr_s(*agg).into(),
                run: "s.run",
            }
        }
    }
}

/// The condition that a run has a value of the sort field.
fn has_sort_value(q: &mut Query, field: &Field) -> String {
    match field {
        Field::System(s) => format!("{} IS NOT NULL", system_expr(*s)),
        Field::Attr(path) => {
            let p = q.text(path);
            member("attributes", &format!("path = {p} AND {ATTR_KEY} IS NOT NULL"))
        }
        Field::Metric(path, agg) => {
            let p = q.text(path);
            member(
                "series",
                &format!("path = {p} AND kind = 'float' AND {} IS NOT NULL", metric_expr(*agg)),
            )
        }
    }
}

fn run_page(c: &Connection, q: Query, out: &mut Vec<FoundRun>) -> Result<(), ViewError> {
    let mut stmt = c.prepare_cached(&q.sql)?;
    let mut rows = stmt.query(params_from_iter(q.params.iter()))?;
    while let Some(r) = rows.next()? {
        out.push(FoundRun {
            run: run_row(r)?,
            columns: Vec::new(),
            sort_value: read_sort_value(r.get_ref(13)?),
        });
    }
    Ok(())
}

pub(super) fn search(c: &Connection, s: &RunSearch) -> Result<SearchPage, ViewError> {
    let (dir, cmp) = if s.sort.descending { ("DESC", "<") } else { ("ASC", ">") };
    let mut found = Vec::new();
    let in_missing_phase = matches!(&s.after, Some(SearchCursor { value: None, .. }));
    if !in_missing_phase {
        let mut q = Query::new(&s.project);
        let SortSource { from, base, key, run } = sort_source(&mut q, &s.sort.field);
        let scope = scope(&mut q, &s.filter, s.include_deleted, Some(&s.sort.field));
        let keyset = match &s.after {
            Some(SearchCursor {
                value: Some(v),
                run: after,
            }) => {
                let v = q.bind(sort_value(v));
                let a = q.text(after);
                format!(" AND ({key}, {run}) {cmp} ({v}, {a})")
            }
            _ => String::new(),
        };
        // Written into the statement: a bound LIMIT is re-planned at every execution.
        let limit = s.limit as i64;
        q.sql = format!(
            "SELECT {RUN_COLUMNS_R}, {key} FROM {from} WHERE {base} AND {key} IS NOT NULL AND {scope}{keyset}
             ORDER BY {key} {dir}, {run} {dir} LIMIT {limit}"
        );
        run_page(c, q, &mut found)?;
    }
    let some_lack_it =
        !matches!(&s.sort.field, Field::System(f) if !f.nullable()) && !s.filter.implies_value_of(&s.sort.field);
    if found.len() < s.limit && some_lack_it {
        let mut q = Query::new(&s.project);
        let has = has_sort_value(&mut q, &s.sort.field);
        let scope = scope(&mut q, &s.filter, s.include_deleted, None);
        let keyset = match &s.after {
            Some(SearchCursor { value: None, run }) => format!(" AND r.run {cmp} {}", q.text(run)),
            _ => String::new(),
        };
        let limit = (s.limit - found.len()) as i64;
        q.sql = format!(
            "SELECT {RUN_COLUMNS_R}, NULL FROM runs r WHERE r.project = ?1 AND NOT ({has}) AND {scope}{keyset}
             ORDER BY r.run {dir} LIMIT {limit}"
        );
        run_page(c, q, &mut found)?;
    }
    for f in &mut found {
        f.columns = s
            .columns
            .iter()
            .map(|col| column(c, &s.project, &f.run.run, col))
            .collect::<Result<_, _>>()?;
    }
    Ok(SearchPage::new(found, s.limit))
}

/// A run's value of a column: an attribute as it is typed, a metric summary as a float (its
/// point count as an int), a system field as its sort value.
fn column(c: &Connection, project: &str, run: &str, field: &Field) -> Result<Option<Value>, ViewError> {
    match field {
        Field::Attr(path) => {
            let mut stmt =
                c.prepare_cached("SELECT type, i, f, s FROM attributes WHERE project = ?1 AND run = ?2 AND path = ?3")?;
            let row = stmt
                .query_row([project, run, path], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            row.map(|(t, i, f, s)| value_from_columns(&t, i, f, s)).transpose()
        }
        Field::Metric(path, agg) => {
            let mut stmt = c.prepare_cached(
                "SELECT last_value, last_bits, min, max, sum / n_values, count FROM series
                 WHERE project = ?1 AND run = ?2 AND path = ?3 AND kind = 'float'",
            )?;
            let row = stmt
                .query_row([project, run, path], |r| {
                    Ok(match agg {
                        MetricAgg::Last => {
                            let v: Option<f64> = r.get(0)?;
                            let bits: Option<i64> = r.get(1)?;
                            (v.is_some() || bits.is_some()).then(|| Value::Float(exact(v, bits)))
                        }
                        MetricAgg::Min => r.get::<_, Option<f64>>(2)?.map(Value::Float),
                        MetricAgg::Max => r.get::<_, Option<f64>>(3)?.map(Value::Float),
                        MetricAgg::Mean => r.get::<_, Option<f64>>(4)?.map(Value::Float),
                        MetricAgg::Count => Some(Value::Int(r.get(5)?)),
                    })
                })
                .optional()?;
            Ok(row.flatten())
        }
        Field::System(_) => Ok(None),
    }
}

/// A field's sort value for each run, as a correlated expression (grouping).
fn value_expr(q: &mut Query, field: &Field, numeric_only: bool) -> String {
    match field {
        Field::System(s) => system_expr(*s).to_string(),
        Field::Attr(path) => {
            let p = q.text(path);
            let e = if numeric_only {
                "CASE type WHEN 'int' THEN i WHEN 'float' THEN f END"
            } else {
                ATTR_KEY
            };
            format!("(SELECT {e} FROM attributes WHERE project = r.project AND run = r.run AND path = {p})")
        }
        Field::Metric(path, agg) => {
            let p = q.text(path);
            format!(
                "(SELECT {} FROM series WHERE project = r.project AND run = r.run AND path = {p} AND kind = 'float')",
                metric_expr(*agg)
            )
        }
    }
}

pub(super) fn group(c: &Connection, g: &RunGrouping) -> Result<Groups, ViewError> {
    let mut q = Query::new(&g.project);
    let key = value_expr(&mut q, &g.by, false);
    let mut cols = vec![format!("{key} AS k"), "COUNT(*)".to_string()];
    for a in &g.aggregates {
        let v = value_expr(&mut q, a, true);
        cols.push(format!("COUNT({v}), MIN({v}), MAX({v}), AVG({v})"));
    }
    let scope = scope(&mut q, &g.filter, g.include_deleted, None);
    let limit = g.limit as i64 + 1;
    q.sql = format!(
        "SELECT {} FROM runs r WHERE r.project = ?1 AND {scope} GROUP BY k ORDER BY (k IS NULL), k LIMIT {limit}",
        cols.join(", ")
    );
    let mut stmt = c.prepare_cached(&q.sql)?;
    let mut rows = stmt.query(params_from_iter(q.params.iter()))?;
    let mut groups = Vec::new();
    while let Some(r) = rows.next()? {
        let mut aggregates = Vec::with_capacity(g.aggregates.len());
        for i in 0..g.aggregates.len() {
            let at = 2 + i * 4;
            aggregates.push(Stats {
                count: r.get::<_, i64>(at)? as u64,
                min: r.get(at + 1)?,
                max: r.get(at + 2)?,
                mean: r.get(at + 3)?,
            });
        }
        groups.push(Group {
            key: read_sort_value(r.get_ref(0)?),
            runs: r.get::<_, i64>(1)? as u64,
            aggregates,
        });
    }
    let truncated = groups.len() > g.limit;
    groups.truncate(g.limit);
    Ok(Groups { groups, truncated })
}

pub(super) fn catalog(c: &Connection, project: &str) -> Result<Catalog, ViewError> {
    let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
    let mut stmt = c.prepare_cached("SELECT path, type FROM attribute_keys WHERE project = ?1 ORDER BY path, type")?;
    let mut rows = stmt.query([project])?;
    while let Some(r) = rows.next()? {
        let (path, t): (String, String) = (r.get(0)?, r.get(1)?);
        match attributes.last_mut() {
            Some((p, types)) if *p == path => types.push(t),
            _ => attributes.push((path, vec![t])),
        }
    }
    let metrics = c
        .prepare_cached("SELECT path FROM series_keys WHERE project = ?1 AND kind = 'float' ORDER BY path")?
        .query_map([project], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Catalog { attributes, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_become_globs() {
        assert_eq!(like_to_glob("a%b_c", false), "a*b?c");
        assert_eq!(like_to_glob(r"100\%", false), "100%");
        assert_eq!(like_to_glob(r"a\_b", false), "a_b");
        assert_eq!(like_to_glob("x*y?[z]", false), "x[*]y[?][[]z]");
        assert_eq!(like_to_glob("AbC%", true), "abc*");
        assert_eq!(like_to_glob(r"end\", false), r"end\");
    }
}
