//! Analytics SQL: read-only queries over documented views, confined to the caller's projects.
//!
//! A query sees only the views in [`VIEWS`], whose rows are those of the projects it was given;
//! the backend enforces that whatever the text says (for SQLite, an authorizer admits reads of
//! the stored tables only from inside those views). Before a backend sees the text,
//! [`check_statement`] makes sure it holds exactly one statement and that the statement is a
//! query, so a second statement hidden after a `;` or behind a comment is refused by name.
//!
//! The views, one row per:
//! - `runs`: run (project, run, name, experiment, parent_run, description, owner, state,
//!   state_message, created_ms, updated_ms, finished_ms, heartbeat_ms, duration_s, deleted);
//! - `attributes`: attribute of a run (project, run, path, type, value);
//! - `tags`: tag of a run (project, run, tag);
//! - `series`: series of a run with its summary (project, run, path, kind, count, n_values, min,
//!   max, mean, first_step, last_step, last_value, last_time_ms);
//! - `rollups`: step bucket of a float series at one level (project, run, path, level, width,
//!   bucket, start_step, count, n_values, min, max, mean, first_step, last_step, last_value,
//!   last_time_ms);
//! - `lines`: line of a string series (project, run, path, step, time_ms, line);
//! - `files`: file of a run (project, run, path, step, size, sha256, media_type, time_ms);
//! - `lineage`: artifact a run used or produced (project, run, direction, kind, name, version,
//!   digest, uri, time_ms).

use std::time::Duration;

/// The views a query may read, in the order they are documented.
pub const VIEWS: [&str; 8] = [
    "runs",
    "attributes",
    "tags",
    "series",
    "rollups",
    "lines",
    "files",
    "lineage",
];

/// The longest query text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// The most bytes of text and blobs an answer carries; past it the answer is cut short.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A query and the bounds it runs within.
#[derive(Debug, Clone)]
pub struct SqlQuery {
    pub workspace: String,
    /// The projects (of `workspace`) whose rows the views hold.
    pub projects: Vec<String>,
    pub sql: String,
    /// Rows past this many are not returned; the answer says it was cut short.
    pub max_rows: usize,
    /// The query is stopped with an error once it has run this long.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlAnswer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
    /// More rows (or bytes) were there than the limits let through.
    pub truncated: bool,
}

/// Why a query was refused: the caller's to fix. `position` is a 0-based character offset
/// into the query where one is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SqlRefusal {
    pub message: String,
    pub position: Option<usize>,
}

impl SqlRefusal {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position: None,
        }
    }

    fn at(sql: &str, byte: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position: Some(sql[..byte].chars().count()),
        }
    }
}

/// The refusal of a query stopped at its time limit.
pub(crate) fn past_time_limit(timeout: Duration) -> SqlRefusal {
    SqlRefusal::new(format!(
        "the query ran past its time limit of {} ms; narrow it or raise timeout_ms",
        timeout.as_millis()
    ))
}

/// 64 bits no query can guess: the standard library's per-process random hash keys, over the
/// time and a counter.
pub(crate) fn secret() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((n, t))
}

/// Checks that `sql` holds one statement, a query (`SELECT`, `WITH` or `VALUES`), that its
/// comments and quotes are closed and that it is not too long. The lexical rules (quotes `'`,
/// `"`, `` ` ``, `[...]`, comments `--` and `/* */`) are those SQLite and ClickHouse share.
pub fn check_statement(sql: &str) -> Result<(), SqlRefusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlRefusal::new(format!(
            "the query is {} bytes long; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    let b = sql.as_bytes();
    let mut i = 0;
    let mut first_word: Option<(usize, usize)> = None;
    let mut ended_at: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = match sql[i + 2..].find("*/") {
                    Some(n) => i + 2 + n + 2,
                    None => return Err(SqlRefusal::at(sql, start, "this comment is never closed")),
                };
                continue;
            }
            _ => {}
        }
        // Anything else is part of a statement.
        if let Some(end) = ended_at {
            return Err(SqlRefusal::at(
                sql,
                start,
                format!(
                    "a second statement begins here, after the `;` at {}; send one statement per request",
                    sql[..end].chars().count()
                ),
            ));
        }
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                loop {
                    match b.get(i) {
                        None => {
                            return Err(SqlRefusal::at(sql, start, "this quote is never closed"));
                        }
                        // A doubled quote stands for itself inside the quotes.
                        Some(&q) if q == close && c != b'[' && b.get(i + 1) == Some(&close) => i += 2,
                        Some(&q) if q == close => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b';' => {
                ended_at = Some(i);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                first_word.get_or_insert((start, i));
            }
            _ => {
                first_word.get_or_insert((start, start + 1));
                i += 1;
            }
        }
    }
    let Some((from, to)) = first_word else {
        return Err(SqlRefusal::new("the query is empty"));
    };
    let word = &sql[from..to];
    if ["select", "with", "values"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
    {
        Ok(())
    } else {
        Err(SqlRefusal::at(
            sql,
            from,
            format!("only queries are allowed (SELECT, WITH or VALUES), not {word:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> SqlRefusal {
        check_statement(sql).expect_err(sql)
    }

    #[test]
    fn one_query_passes_with_comments_and_a_trailing_semicolon() {
        for sql in [
            "SELECT 1",
            "select 1;",
            "  -- note\nWITH x AS (SELECT 1) SELECT * FROM x ;  -- done",
            "/* a */ VALUES (1), (2) /* b */",
            "SELECT 'a;b', \"c;d\", `e;f`, [g;h] FROM runs",
            "SELECT 'it''s; fine'",
        ] {
            check_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn a_second_statement_is_refused_where_it_begins() {
        let e = refused("SELECT 1; DELETE FROM runs");
        assert_eq!(e.position, Some(10));
        assert!(e.message.contains("second statement"), "{e}");
        assert_eq!(refused("SELECT 1; /* x */ ; SELECT 2").position, Some(18));
        assert_eq!(refused("SELECT ';' ; DROP TABLE runs").position, Some(13));
        assert_eq!(refused("SELECT 1 --\n; ATTACH 'x' AS y").position, Some(14));
    }

    #[test]
    fn other_statements_unclosed_text_and_empty_queries_are_refused() {
        let e = refused("  DELETE FROM runs");
        assert_eq!(e.position, Some(2));
        assert!(e.message.contains("\"DELETE\""), "{e}");
        for sql in [
            "PRAGMA table_info(runs)",
            "ATTACH 'x' AS y",
            "explain select 1",
            "(SELECT 1)",
        ] {
            refused(sql);
        }
        assert_eq!(refused("SELECT 'x").position, Some(7));
        assert_eq!(refused("SELECT 1 /* x").position, Some(9));
        assert_eq!(refused(" -- only a comment").position, None);
        assert_eq!(refused(";").position, None);
        let long = format!("SELECT {}", "1+".repeat(MAX_SQL_BYTES));
        assert!(refused(&long).message.contains("bytes long"));
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(refused("SELECT 'é'; SELECT 2").position, Some(12));
    }
}
