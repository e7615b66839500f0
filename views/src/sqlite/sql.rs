//! Analytics SQL on SQLite.
//!
//! Each query gets its own read-only connection. On it, inner views with random names select
//! the caller's projects' rows from the stored tables, and temporary views named as in
//! [`crate::sql::VIEWS`] (shadowing the tables of the same names) select from them. Then an
//! authorizer is installed that, while the query is prepared, allows a read of a stored table
//! only from inside an inner view, a function only
//! from a list of pure ones, and no statement but a `SELECT`: a query naming `main.runs`, the
//! event index, `sqlite_schema`, a pragma or `dbstat` is refused, and no query can write, attach
//! a file or load an extension. SQLite limits bound the size of values and expressions, and a
//! progress handler stops the query at its deadline.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::ViewError;
use crate::rollup::LEVELS;
use crate::sql::{
    MAX_ANSWER_BYTES, MAX_SQL_BYTES, SqlAnswer, SqlQuery, SqlRefusal, SqlValue, VIEWS, check_statement,
    past_time_limit, secret,
};

/// Functions a query may call: SQLite's pure scalar, aggregate, window, date, math and JSON
/// functions. Not `load_extension`, `sqlite_*`, `randomblob` or `zeroblob`, nor any a later
/// SQLite adds until it is looked at.
const FUNCTIONS: &str = "
    abs char coalesce concat concat_ws format glob hex if ifnull iif instr length like likelihood likely
    lower ltrim max min nullif octet_length printf quote random replace round rtrim sign soundex substr
    substring trim typeof unhex unicode unlikely upper
    avg count group_concat string_agg sum total
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    date time datetime julianday unixepoch strftime timediff
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi
    pow power radians sin sinh sqrt tan tanh trunc";

/// Table-valued functions a query may read from.
const TABLE_FUNCTIONS: &[&str] = &["json_each", "json_tree"];

fn function_allowed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    FUNCTIONS.split_whitespace().any(|f| f == name)
        || name.starts_with("json_")
        || name == "json"
        || name.starts_with("jsonb")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements that define the views over the given project keys (`workspace/project`),
/// showing each project by its name alone (the text after `strip` bytes).
fn view_definitions(keys: &[String], strip: usize, inner: &str) -> String {
    // With no projects the views are empty: `/` is no project's key (an empty `IN ()` would
    // let SQLite drop the condition and read the table outside the view).
    let within = if keys.is_empty() {
        quote("/")
    } else {
        keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
    };
    let project = format!("substr(project, {}) AS project", strip + 1);
    let s_project = format!("substr(s.project, {}) AS project", strip + 1);
    let width = format!(
        "CASE r.level {} END",
        LEVELS
            .iter()
            .enumerate()
            .map(|(l, shift)| format!("WHEN {l} THEN {}", 1i64 << shift))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let inner_views = format!(
        "CREATE TEMP VIEW runs AS SELECT {project}, run, name, experiment, parent_run, description, owner, state, \
             state_message, created_ms, updated_ms, finished_ms, heartbeat_ms, \
             (finished_ms - created_ms) / 1000.0 AS duration_s, deleted \
             FROM main.runs WHERE project IN ({within});
         CREATE TEMP VIEW attributes AS SELECT {project}, run, path, type, \
             CASE type WHEN 'float' THEN f WHEN 'string' THEN s WHEN 'string_set' THEN s ELSE i END AS value \
             FROM main.attributes WHERE project IN ({within});
         CREATE TEMP VIEW tags AS SELECT {project}, run, tag FROM main.tags WHERE project IN ({within});
         CREATE TEMP VIEW series AS SELECT {project}, run, path, kind, count, n_values, min, max, \
             sum / n_values AS mean, first_step, last_step, last_value, last_time_ms \
             FROM main.series WHERE project IN ({within});
         CREATE TEMP VIEW rollups AS SELECT {s_project}, s.run, s.path, r.level, {width} AS width, r.bucket, \
             r.bucket * {width} AS start_step, r.count, r.n_values, r.min, r.max, r.sum / r.n_values AS mean, \
             r.first_step, r.last_step, r.last_value, r.last_time_ms \
             FROM main.series s JOIN main.rollups r ON r.series = s.id WHERE s.project IN ({within});
         CREATE TEMP VIEW lines AS SELECT {s_project}, s.run, s.path, l.step, l.time_ms, l.line \
             FROM main.series s JOIN main.lines l ON l.series = s.id WHERE s.project IN ({within});
         CREATE TEMP VIEW files AS SELECT {project}, run, path, step, size, sha256, media_type, time_ms \
             FROM main.files WHERE project IN ({within});
         CREATE TEMP VIEW lineage AS SELECT {project}, run, direction, kind, name, version, digest, uri, time_ms \
             FROM main.lineage WHERE project IN ({within});"
    );
    // The statements above define the inner views under their secret names; each view a query
    // sees selects everything from its inner view.
    let mut sql = inner_views.replace("CREATE TEMP VIEW ", &format!("CREATE TEMP VIEW {inner}"));
    for v in VIEWS {
        sql.push_str(&format!("\nCREATE TEMP VIEW {v} AS SELECT * FROM temp.{inner}{v};"));
    }
    sql
}

/// What the authorizer knows besides the action: the names of the stored tables and views.
struct Sandbox {
    /// Lower-cased names of every table and view of the database and of the temporary schema.
    stored: Vec<String>,
    /// The prefix of the inner views, the only ones that read stored tables. It is random per
    /// connection: SQLite names a common table expression as the accessor of the reads in its
    /// body, as it does a view, so a query could otherwise name a CTE `runs` and read any table
    /// from inside it; it cannot name a CTE after a view whose name it does not know.
    inner: String,
    /// Why the first refused action was refused.
    denied: Mutex<Option<String>>,
}

impl Sandbox {
    /// Whether `name` is, or may be, a stored or virtual table rather than a common table
    /// expression of the query.
    fn is_stored(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.stored.contains(&name) || name.starts_with("sqlite_") || name.starts_with("pragma_") || name == "dbstat"
    }

    /// Whether `name` is one of the inner views.
    fn is_inner(&self, name: &str) -> bool {
        name.strip_prefix(self.inner.as_str())
            .is_some_and(|v| VIEWS.contains(&v))
    }

    /// Decides one action while the query is prepared; the reason for a refusal is kept.
    fn authorize(&self, ctx: &AuthContext<'_>) -> Authorization {
        let refusal = match ctx.action {
            AuthAction::Select | AuthAction::Recursive => None,
            AuthAction::Read {
                table_name,
                column_name,
            } => {
                let allowed = match ctx.database_name {
                    // A stored table: only from inside an inner view.
                    Some("main") => ctx.accessor.is_some_and(|a| self.is_inner(a)),
                    // The views a query sees, and the inner views they read.
                    Some("temp") => VIEWS.contains(&table_name) || self.is_inner(table_name),
                    // A common table expression is read with no schema; so is a stored table
                    // from which no column is read (`count(*)`), which SQLite reports with an
                    // empty column name.
                    None => !column_name.is_empty() || !self.is_stored(table_name),
                    Some(_) => false,
                };
                if allowed || TABLE_FUNCTIONS.contains(&table_name) {
                    None
                } else {
                    Some(format!(
                        "{}.{table_name} cannot be read; a query reads only the views {}",
                        ctx.database_name.unwrap_or("main"),
                        VIEWS.join(", ")
                    ))
                }
            }
            AuthAction::Function { function_name } => {
                if function_allowed(function_name) {
                    None
                } else {
                    Some(format!("the function {function_name}() is not allowed in a query"))
                }
            }
            AuthAction::Pragma { pragma_name, .. } => Some(format!("pragma {pragma_name} is not allowed")),
            AuthAction::Attach { .. } => Some("ATTACH is not allowed".to_string()),
            ref other => Some(format!("only queries are allowed, not {other:?}")),
        };
        match refusal {
            None => Authorization::Allow,
            Some(why) => {
                self.denied.lock().expect("denied").get_or_insert(why);
                Authorization::Deny
            }
        }
    }
}

/// Turns a SQLite error into a refusal the caller can act on, or a storage failure.
fn failure(e: rusqlite::Error, sql: &str, denied: &Mutex<Option<String>>, timeout: Duration) -> ViewError {
    // SQLite reports where in the text it stopped for errors found while preparing.
    let position = match &e {
        rusqlite::Error::SqlInputError { offset, .. } => usize::try_from(*offset)
            .ok()
            .filter(|o| *o <= sql.len() && sql.is_char_boundary(*o))
            .map(|o| sql[..o].chars().count()),
        _ => None,
    };
    let refuse = |message: String| ViewError::Query(SqlRefusal { message, position });
    if let Some(why) = denied.lock().expect("denied").take() {
        return refuse(why);
    }
    match (&e, e.sqlite_error_code()) {
        (_, Some(ErrorCode::OperationInterrupted)) => ViewError::Query(past_time_limit(timeout)),
        (rusqlite::Error::SqlInputError { msg, .. }, _) => refuse(msg.clone()),
        (
            rusqlite::Error::SqliteFailure(_, m),
            Some(
                ErrorCode::Unknown
                | ErrorCode::TooBig
                | ErrorCode::ConstraintViolation
                | ErrorCode::TypeMismatch
                | ErrorCode::AuthorizationForStatementDenied,
            ),
        ) => refuse(m.clone().unwrap_or_else(|| e.to_string())),
        _ => ViewError::from(e),
    }
}

pub(super) fn run(path: &Path, q: &SqlQuery) -> Result<SqlAnswer, ViewError> {
    check_statement(&q.sql)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let keys: Vec<String> = q.projects.iter().map(|p| format!("{}/{p}", q.workspace)).collect();
    let inner = format!("inner_{:016x}_", secret());
    conn.execute_batch(&view_definitions(&keys, q.workspace.len() + 1, &inner))?;
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_LENGTH, 4 * 1024 * 1024),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES as i32),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, 200),
        (Limit::SQLITE_LIMIT_COMPOUND_SELECT, 64),
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_FUNCTION_ARG, 64),
    ] {
        conn.set_limit(limit, value)?;
    }
    let stored = conn
        .prepare("SELECT lower(name) FROM sqlite_schema UNION SELECT lower(name) FROM temp.sqlite_schema")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    let sandbox = Arc::new(Sandbox {
        stored,
        inner,
        denied: Mutex::new(None),
    });
    let s = sandbox.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| s.authorize(&ctx)));
    let deadline = Instant::now() + q.timeout;
    conn.progress_handler(1000, Some(move || Instant::now() >= deadline));
    let fail = |e| failure(e, &q.sql, &sandbox.denied, q.timeout);

    let mut stmt = conn.prepare(&q.sql).map_err(fail)?;
    if !stmt.readonly() {
        return Err(SqlRefusal::new("only queries are allowed; this statement would write").into());
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    while let Some(row) = rows.next().map_err(fail)? {
        if out.len() == q.max_rows || bytes > MAX_ANSWER_BYTES {
            truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let v = match row.get_ref(i).map_err(fail)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(i) => SqlValue::Int(i),
                ValueRef::Real(f) => SqlValue::Float(f),
                ValueRef::Text(t) => {
                    bytes += t.len();
                    SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                }
                ValueRef::Blob(b) => {
                    bytes += b.len();
                    SqlValue::Blob(b.to_vec())
                }
            };
            values.push(v);
        }
        out.push(values);
    }
    Ok(SqlAnswer {
        columns,
        rows: out,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let mut c = super::super::connect(&path).unwrap();
        super::super::migrate(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO runs (project, run, name, created_ms, updated_ms, finished_ms) VALUES
                 ('w/a', 'r1', 'one', 1000, 1000, 3500), ('w/b', 'r2', 'two', 1000, 1000, NULL),
                 ('v/a', 'r3', 'three', 1000, 1000, NULL);
             INSERT INTO attributes (project, run, path, type, i, f, s) VALUES
                 ('w/a', 'r1', 'lr', 'float', NULL, 0.5, NULL), ('w/a', 'r1', 'opt', 'string', NULL, NULL, 'adam'),
                 ('w/b', 'r2', 'lr', 'float', NULL, 0.1, NULL);
             INSERT INTO series (id, project, run, path, kind, count, n_values, min, max, sum, first_step,
                                 last_step, last_value, last_time_ms)
                 VALUES (1, 'w/a', 'r1', 'loss', 'float', 2, 2, 1.0, 3.0, 4.0, 0, 70, 1.0, 5),
                        (2, 'w/b', 'r2', 'loss', 'float', 1, 1, 9.0, 9.0, 9.0, 0, 0, 9.0, 5);
             INSERT INTO rollups (series, level, bucket, count, n_values, min, max, sum, first_step, last_step,
                                  last_value, last_time_ms)
                 VALUES (1, 0, 0, 1, 1, 3.0, 3.0, 3.0, 0, 0, 3.0, 1), (1, 0, 1, 1, 1, 1.0, 1.0, 1.0, 70, 70, 1.0, 5),
                        (2, 0, 0, 1, 1, 9.0, 9.0, 9.0, 0, 0, 9.0, 5);",
        )
        .unwrap();
        (dir, path)
    }

    fn query(path: &Path, projects: &[&str], sql: &str) -> Result<SqlAnswer, ViewError> {
        run(
            path,
            &SqlQuery {
                workspace: "w".into(),
                projects: projects.iter().map(|p| p.to_string()).collect(),
                sql: sql.into(),
                max_rows: 100,
                timeout: Duration::from_secs(2),
            },
        )
    }

    fn refusal(path: &Path, sql: &str) -> String {
        match query(path, &["a"], sql) {
            Err(ViewError::Query(r)) => r.message,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn views_hold_only_the_given_projects() {
        let (_d, path) = db();
        let a = query(&path, &["a"], "SELECT project, run, name, duration_s FROM runs").unwrap();
        assert_eq!(a.columns, ["project", "run", "name", "duration_s"]);
        assert_eq!(
            a.rows,
            [vec![
                SqlValue::Text("a".into()),
                SqlValue::Text("r1".into()),
                SqlValue::Text("one".into()),
                SqlValue::Float(2.5)
            ]]
        );
        let both = query(
            &path,
            &["a", "b"],
            "SELECT count(*) FROM runs JOIN attributes USING (project, run)",
        )
        .unwrap();
        assert_eq!(both.rows, [vec![SqlValue::Int(3)]]);
        let none = query(&path, &[], "SELECT count(*) FROM runs").unwrap();
        assert_eq!(none.rows, [vec![SqlValue::Int(0)]]);
        let r = query(
            &path,
            &["a"],
            "SELECT path, width, start_step, mean FROM rollups ORDER BY bucket",
        )
        .unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[1][1], SqlValue::Int(64));
        assert_eq!(r.rows[1][2], SqlValue::Int(64));
        // The allowed functions are there: math, JSON (also as a table), window, date.
        let f = query(
            &path,
            &["a"],
            "SELECT sqrt(16), json_extract('{\"k\": 3}', '$.k'), row_number() OVER (), date(0, 'unixepoch'), \
             (SELECT count(*) FROM json_each('[1, 2]'))",
        )
        .unwrap();
        assert_eq!(
            f.rows,
            [vec![
                SqlValue::Float(4.0),
                SqlValue::Int(3),
                SqlValue::Int(1),
                SqlValue::Text("1970-01-01".into()),
                SqlValue::Int(2)
            ]]
        );
        let v = query(&path, &["a"], "SELECT value FROM attributes WHERE path = 'opt'").unwrap();
        assert_eq!(v.rows, [vec![SqlValue::Text("adam".into())]]);
    }

    #[test]
    fn stored_tables_and_internals_are_refused_by_name() {
        let (_d, path) = db();
        // Reads of no column (SQLite reports them without a schema) are refused too.
        assert!(refusal(&path, "SELECT count(*) FROM point_blocks").contains("point_blocks"));
        assert!(refusal(&path, "SELECT count(*) FROM main.Point_Blocks").contains("Point_Blocks"));
        assert!(refusal(&path, "SELECT EXISTS (SELECT 1 FROM events)").contains("events"));
        assert!(refusal(&path, "SELECT 1 FROM sqlite_master LIMIT 1").contains("sqlite_master"));
        assert!(refusal(&path, "SELECT * FROM main.runs").contains("main.runs cannot be read"));
        assert!(refusal(&path, "SELECT * FROM events").contains("events cannot be read"));
        assert!(refusal(&path, "SELECT * FROM sqlite_schema").contains("cannot be read"));
        assert!(refusal(&path, "SELECT * FROM temp.sqlite_master").contains("cannot be read"));
        assert!(refusal(&path, "SELECT * FROM dbstat").contains("cannot be read"));
        assert!(refusal(&path, "SELECT * FROM pragma_table_info('runs')").contains("pragma"));
        assert!(refusal(&path, "SELECT run FROM runs UNION SELECT run FROM main.runs").contains("main.runs"));
        assert!(refusal(&path, "SELECT load_extension('x')").contains("load_extension"));
        assert!(refusal(&path, "SELECT sqlite_version()").contains("sqlite_version"));
        // A common table expression named after a view gets none of its rights: SQLite names it
        // as the accessor of the reads in its body, as it does a view.
        for forged in [
            "WITH runs AS (SELECT * FROM main.events) SELECT * FROM runs",
            "WITH runs AS (SELECT count(*) FROM point_blocks) SELECT * FROM runs",
            "WITH attributes AS (SELECT load_extension('x')) SELECT * FROM attributes",
            "SELECT * FROM (WITH series AS (SELECT * FROM main.series) SELECT * FROM series)",
        ] {
            let why = refusal(&path, forged);
            assert!(
                why.contains("cannot be read") || why.contains("not allowed"),
                "{forged}: {why}"
            );
        }
        // A common table expression may take a stored table's name, and reads itself.
        let cte = query(&path, &["a"], "WITH events AS (SELECT 7 AS id) SELECT * FROM events").unwrap();
        assert_eq!(cte.rows, [vec![SqlValue::Int(7)]]);
        let m = refusal(
            &path,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        );
        assert!(m.contains("time limit"), "{m}");
    }

    #[test]
    fn rows_past_the_limit_are_cut_and_said() {
        let (_d, path) = db();
        let mut q = SqlQuery {
            workspace: "w".into(),
            projects: vec!["a".into()],
            sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT x FROM c".into(),
            max_rows: 4,
            timeout: Duration::from_secs(2),
        };
        let a = run(&path, &q).unwrap();
        assert_eq!(a.rows.len(), 4);
        assert!(a.truncated);
        q.max_rows = 10;
        assert!(!run(&path, &q).unwrap().truncated);
    }
}
