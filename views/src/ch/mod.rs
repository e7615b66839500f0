//! The distributed views: tables in a ClickHouse server, reached over HTTP: RowBinary for most
//! rows, the Native format (see [`native`]) for the points and lines, which are most of them.
//!
//! ClickHouse has no transactions and no in-place updates, so the layout is append-only:
//! - Every table is a `ReplacingMergeTree` keyed like its SQLite twin, and every row carries a
//!   version, `ver`: the log position (offset and index within the record) of the last event of
//!   its run in the flush that wrote it. A run's events all sit in one partition, so a later
//!   write of a key always carries a larger version, and a replay (after a crash, or by a second
//!   projector taking a partition over) writes rows whose versions order exactly as the first
//!   time did. Reads take the row of the largest version per key (`argMax(.., ver)` grouped by
//!   the key), so they are right before background merges have run; merges only save space.
//! - A flush writes its rows first, then the ids of its events, then its checkpoint. A crash in
//!   between leaves rows whose events are not recorded yet; the replay from the old checkpoint
//!   writes them again under the same versions, which changes nothing a read can see. An event
//!   id is recorded only once every row of its flush is in, so skipping known events on replay
//!   never skips a row that is missing. The inserts of one stage run concurrently (the rows of
//!   every table, then the events and their ids), each on its own connection, so the server
//!   parses one while the projector encodes the next. The key tables (`attribute_keys`,
//!   `series_keys`) get a row once per process and generation, not in every flush.
//! - Rollups cannot be summed in the server (a step written again would count twice), so the
//!   projector recomputes the buckets a flush dirties, as the SQLite views do: it reads the
//!   stored points of the dirty finest buckets and the stored rows of the finer levels, merges
//!   them with the flush in memory ([`rollup::recompute`]), and writes whole rows.
//!
//! The SQL is the subset ClickHouse 18.16 (Debian's package) and current releases share (the
//! suites run against both: `scripts/test-current-clickhouse`):
//! MergeTree engines, `argMax`, tuples in `IN`, `LIMIT n BY`. Identifiers come from the URL and
//! are checked to be plain words; values reach the server through the client's escaping binds.

mod analytics;
pub mod generations;
mod native;
mod read;
mod search;
mod write;

use std::collections::HashSet;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use runstream_schema::EventId;

use crate::search::{Catalog, Groups, RunGrouping, RunSearch, SearchPage};
use crate::*;

/// Numbered migrations: index + 1 is the schema version they bring a generation of tables to.
/// `{t}` stands for the generation's table prefix (database and generation name).
///
/// Granules: a search's page reads its 50 or so runs' values by key, and a read by key reads
/// whole granules (8,192 rows by default). Fifty runs spread over 100,000 hit nearly every
/// granule of a path, so such a read was of every run. `runs` (a row per run) has granules of
/// 256 rows and the tables keyed by path first of 1,024, which keeps their primary index, held
/// in memory, at a few bytes per run and value. In the query benchmark (100,000 runs, 18.16,
/// a page's reads side by side) a page's read of one attribute went from 131,072 rows read and
/// 53 ms to 46,080 rows and 29 ms, of the runs from 90,112 rows and 60 ms to 11,264 and 19.
/// Points and rollups are read in long key ranges and keep the default. A table's settings
/// cannot change once it is made: views made before keep 8,192 until `runstream rebuild` makes
/// their tables anew.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE IF NOT EXISTS {t}checkpoints (partition UInt32, next_offset UInt64)
     ENGINE = ReplacingMergeTree(next_offset) ORDER BY partition",
        "CREATE TABLE IF NOT EXISTS {t}runs (
        project String, run String, name String, experiment String, parent_run Nullable(String),
        description String, owner String, state String, state_message String,
        created_ms Int64, updated_ms Int64, finished_ms Nullable(Int64), heartbeat_ms Nullable(Int64),
        deleted UInt8, created_seen UInt8, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run) SETTINGS index_granularity = 256",
        "CREATE TABLE IF NOT EXISTS {t}attributes (
        project String, run String, path String, vtype String, i Int64, f Float64, s String,
        deleted UInt8, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path)",
        "CREATE TABLE IF NOT EXISTS {t}attribute_keys (project String, path String, vtype String)
     ENGINE = ReplacingMergeTree ORDER BY (project, path, vtype)",
        "CREATE TABLE IF NOT EXISTS {t}tags (project String, run String, tag String, present UInt8, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, tag)",
        "CREATE TABLE IF NOT EXISTS {t}series (
        project String, run String, path String, kind String, count UInt64, n_values UInt64,
        min Float64, max Float64, sum Float64, first_step Int64, last_step Int64, last_value Float64,
        last_time_ms Int64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, kind)",
        "CREATE TABLE IF NOT EXISTS {t}series_keys (project String, path String, kind String)
     ENGINE = ReplacingMergeTree ORDER BY (project, path, kind)",
        // Replaced by `float_points` (migration 3), which keys a point by its step and time.
        "CREATE TABLE IF NOT EXISTS {t}points (
        project String, run String, path String, step Int64, time_ms Int64, value Float64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step)",
        "CREATE TABLE IF NOT EXISTS {t}lines (
        project String, run String, path String, step Int64, time_ms Int64, line String, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step)",
        "CREATE TABLE IF NOT EXISTS {t}rollups (
        project String, run String, path String, level UInt8, bucket Int64, count UInt64, n_values UInt64,
        min Float64, max Float64, sum Float64, first_step Int64, last_step Int64, last_value Float64,
        last_time_ms Int64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, level, bucket)",
        "CREATE TABLE IF NOT EXISTS {t}files (
        project String, run String, path String, step Int64, blob_key String, size UInt64, sha256 String,
        media_type String, time_ms Int64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step)",
        "CREATE TABLE IF NOT EXISTS {t}lineage (
        project String, run String, direction String, kind String, name String, version String,
        digest String, uri String, time_ms Int64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, direction, kind, name, version)",
        "CREATE TABLE IF NOT EXISTS {t}lineage_by_artifact (
        project String, kind String, name String, version String, run String, direction String, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, kind, name, version, run, direction)",
        "CREATE TABLE IF NOT EXISTS {t}events (
        id_hi UInt64, id_lo UInt64, project String, run String, partition UInt32, offset UInt64, seq UInt32,
        kind String)
     ENGINE = ReplacingMergeTree ORDER BY (project, run, partition, offset, seq)",
        "CREATE TABLE IF NOT EXISTS {t}event_ids (id_hi UInt64, id_lo UInt64)
     ENGINE = ReplacingMergeTree ORDER BY (id_hi, id_lo)",
    ],
    &[
        // The attributes again, keyed by path first: a search filters and sorts on one path of every
        // run, which in `attributes` (keyed by run first) is a scan of all of the project's rows.
        // Granules of 1,024 rows (see `MIGRATIONS`).
        "CREATE TABLE IF NOT EXISTS {t}attributes_by_path (
        project String, run String, path String, vtype String, i Int64, f Float64, s String,
        deleted UInt8, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, path, run) SETTINGS index_granularity = 1024",
        // Rows written again by a migration that is run twice carry the same versions: no change.
        "INSERT INTO {t}attributes_by_path SELECT project, run, path, vtype, i, f, s, deleted, ver FROM {t}attributes",
    ],
    &[
        // Float points keyed by step and time: a step logged again at another time is a second
        // point (MLflow's metric history keeps both), not a new version of the first. The copy
        // takes the latest version of each step, which is what `points` meant; run twice, it
        // writes the same rows with the same versions.
        "CREATE TABLE IF NOT EXISTS {t}float_points (
        project String, run String, path String, step Int64, time_ms Int64, value Float64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, run, path, step, time_ms)",
        "INSERT INTO {t}float_points SELECT project, run, path, step, argMax(time_ms, ver), argMax(value, ver),
        max(ver) FROM {t}points GROUP BY project, run, path, step",
    ],
    // Apart from the copy, so that a copy cut short is run again from the table it reads.
    &["DROP TABLE IF EXISTS {t}points"],
    &[
        // The series summaries again, keyed by path first, as `attributes_by_path` keys the
        // attributes: a search filters and sorts on one metric of every run, which in `series`
        // (keyed by run first) is a scan and merge of every summary of every run of the project.
        // Granules of 1,024 rows (see `MIGRATIONS`).
        "CREATE TABLE IF NOT EXISTS {t}series_by_path (
        project String, run String, path String, kind String, count UInt64, n_values UInt64,
        min Float64, max Float64, sum Float64, first_step Int64, last_step Int64, last_value Float64,
        last_time_ms Int64, ver UInt64)
     ENGINE = ReplacingMergeTree(ver) ORDER BY (project, path, kind, run) SETTINGS index_granularity = 1024",
        // Rows written again by a migration that is run twice carry the same versions: no change.
        "INSERT INTO {t}series_by_path SELECT project, run, path, kind, count, n_values, min, max, sum,
        first_step, last_step, last_value, last_time_ms, ver FROM {t}series",
    ],
];

/// Where the views live: `clickhouse://[USER[:PASSWORD]@]HOST:PORT[/DATABASE][?generation=NAME]`,
/// the HTTP port of the server. The database defaults to `runstream`; a generation names one set
/// of tables in it (`runstream rebuild` writes a new one beside the one being served). Without a
/// generation the URL means the database's current one ([`generations`]), followed as it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    pub http: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    pub generation: Option<String>,
}

impl ClickHouseUrl {
    /// A client for the server (no database chosen). Old servers (18.16) read neither
    /// LZ4-compressed requests from this client nor its typed-header format, so both are off;
    /// values are still checked by the row types.
    pub fn client(&self) -> Client {
        let mut client = Client::default()
            .with_url(&self.http)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(p) = &self.password {
            client = client.with_password(p);
        }
        client
    }

    pub fn parse(url: &str) -> Result<Self, ViewError> {
        let bad = |why: &str| ViewError::UnsupportedUrl(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| bad("expected clickhouse://HOST:PORT/DATABASE"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (host, database) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let database = if database.is_empty() { "runstream" } else { database };
        let mut generation = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("generation", g)) => generation = Some(g.to_string()),
                _ => return Err(bad(&format!("unknown option {pair:?} (expected generation=NAME)"))),
            }
        }
        for (what, name) in [
            ("database", database),
            ("generation", generation.as_deref().unwrap_or("g0")),
        ] {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(&format!("{what} {name:?} must be letters, digits and _")));
            }
        }
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(a.to_string()), None),
            },
            None => (None, None),
        };
        Ok(Self {
            http: format!("http://{host}"),
            user,
            password,
            database: database.to_string(),
            generation,
        })
    }
}

pub struct ClickHouseViews {
    client: Client,
    /// `generation_`: what the names of the served generation's tables start with. It changes
    /// only for views that follow the current generation ([`ClickHouseViews::follow`]).
    prefix: std::sync::RwLock<String>,
    /// Whether the URL named the generation: such views never follow another.
    pinned: bool,
    pub(crate) version: String,
    /// Rows of the key tables this process has written, by full table name.
    written_keys: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The step span (first, last) each float series had when last read: a bucket read plans
    /// with it while it asks for the current one (see [`read::buckets`]).
    spans: std::sync::Mutex<std::collections::HashMap<SeriesId, (i64, i64)>>,
}

/// A series by project, run and path.
type SeriesId = (String, String, String);

/// Key-table rows remembered at most; past it the memory starts afresh.
const WRITTEN_KEYS: usize = 100_000;

/// The most memory the server may use for one analytics query, in bytes.
const MAX_QUERY_MEMORY: u64 = 2_000_000_000;

impl ClickHouseViews {
    /// Connects, creates the database and brings the generation's tables (the URL's, else the
    /// current one) to this build's schema.
    pub async fn open(url: &str) -> Result<Self, ViewError> {
        let u = ClickHouseUrl::parse(url)?;
        let client = u.client();
        let version: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|e| ViewError::Storage(format!("clickhouse at {}: {e}", u.http)))?;
        client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", u.database))
            .execute()
            .await
            .map_err(storage)?;
        let client = client.with_database(&u.database);
        let generation = match &u.generation {
            Some(g) => g.clone(),
            None => generations::current_or_first(&client).await?,
        };
        let views = Self {
            client,
            prefix: std::sync::RwLock::new(format!("{generation}_")),
            pinned: u.generation.is_some(),
            version,
            written_keys: Default::default(),
            spans: Default::default(),
        };
        views.migrate().await?;
        Ok(views)
    }

    /// The generation whose tables these views read and write.
    pub fn generation(&self) -> String {
        let p = self.prefix();
        p.strip_suffix('_').unwrap_or(&p).to_string()
    }

    fn prefix(&self) -> String {
        self.prefix.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs an analytics query (see [`analytics`]): checked and rewritten here, read-only and
    /// bounded on the server, killed at the caller's deadline.
    async fn analytics(&self, q: crate::sql::SqlQuery) -> Result<crate::sql::SqlAnswer, ViewError> {
        use crate::sql::{MAX_ANSWER_BYTES, SqlRefusal, check_statement};
        check_statement(&q.sql)?;
        let keys: Vec<String> = q.projects.iter().map(|p| format!("{}/{p}", q.workspace)).collect();
        let strip = q.workspace.len() + 1;
        let prefix = self.prefix();
        let rewritten = analytics::rewrite(&q.sql, |view| analytics::view_subquery(view, &prefix, &keys, strip))?;
        let query_id = format!("runstream-sql-{:016x}", crate::sql::secret());
        // The server's own limit is a backstop in whole seconds; the caller's deadline is kept here.
        let server_secs = q.timeout.as_secs() + 2;
        let mut request = self
            .client
            .query(&rewritten.sql)
            .with_option("query_id", query_id.clone());
        for (name, value) in [
            ("readonly", "2".to_string()),
            ("max_execution_time", server_secs.to_string()),
            ("max_result_rows", (q.max_rows + 1).to_string()),
            ("max_result_bytes", (2 * MAX_ANSWER_BYTES).to_string()),
            ("result_overflow_mode", "break".to_string()),
            ("max_memory_usage", MAX_QUERY_MEMORY.to_string()),
            ("max_ast_depth", "300".to_string()),
            ("max_ast_elements", "100000".to_string()),
            ("wait_end_of_query", "1".to_string()),
        ] {
            request = request.with_option(name, value);
        }
        let read = async {
            let mut cursor = request.fetch_bytes("TabSeparatedWithNamesAndTypes")?;
            let mut body = Vec::new();
            while let Some(chunk) = cursor.next().await? {
                body.extend_from_slice(&chunk);
                if body.len() > 4 * MAX_ANSWER_BYTES {
                    break;
                }
            }
            Ok::<_, clickhouse::error::Error>(body)
        };
        let body = match tokio::time::timeout(q.timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(clickhouse::error::Error::BadResponse(raw))) => {
                let code: Option<u32> = raw
                    .strip_prefix("Code: ")
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|d| d.parse().ok());
                return Err(match code {
                    // TIMEOUT_EXCEEDED
                    Some(159) => ViewError::Query(crate::sql::past_time_limit(q.timeout)),
                    // MEMORY_LIMIT_EXCEEDED, worded differently by each release
                    Some(241) => ViewError::Query(SqlRefusal::new(format!(
                        "the query needed more memory than its limit of {MAX_QUERY_MEMORY} bytes; narrow it"
                    ))),
                    // The views' own tables or database missing, the server read-only: not the
                    // query's fault.
                    Some(60 | 81 | 164) | None => ViewError::Storage(format!("clickhouse: {raw}")),
                    Some(_) => {
                        let (message, position) = analytics::server_message(&raw, &rewritten);
                        ViewError::Query(SqlRefusal { message, position })
                    }
                });
            }
            Ok(Err(e)) => return Err(storage(e)),
            Err(_) => {
                // Stop the server's work too; the answer no longer matters.
                let kill = self
                    .client
                    .query("KILL QUERY WHERE query_id = ? ASYNC")
                    .bind(query_id.as_str())
                    .execute();
                if let Err(e) = kill.await {
                    tracing::warn!(error = %e, query_id, "could not kill an analytics query past its time limit");
                }
                return Err(crate::sql::past_time_limit(q.timeout).into());
            }
        };
        analytics::parse_answer(&body, q.max_rows).map_err(|e| ViewError::Storage(format!("clickhouse answer: {e}")))
    }

    fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// The rows of a key table (`attribute_keys`, `series_keys`: project, path, type) this process
    /// has not written yet. A key table only says which keys exist: writing a row again changes
    /// nothing, but costs the server a part in every flush.
    fn unwritten_keys<'a>(
        &self,
        table: &str,
        keys: Vec<(&'a str, &'a str, &'a str)>,
    ) -> Vec<(&'a str, &'a str, &'a str)> {
        let table = self.table(table);
        let written = self.written_keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.into_iter()
            .filter(|k| !written.contains(&key_row(&table, k)))
            .collect()
    }

    /// Notes key-table rows the server has taken.
    fn keys_written(&self, table: &str, keys: &[(&str, &str, &str)]) {
        let table = self.table(table);
        let mut written = self.written_keys.lock().unwrap_or_else(|e| e.into_inner());
        if written.len() + keys.len() > WRITTEN_KEYS {
            written.clear();
        }
        written.extend(keys.iter().map(|k| key_row(&table, k)));
    }

    /// Runs `sql` with `{t}` standing for the table prefix.
    fn sql(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(&sql.replace("{t}", &self.prefix()))
    }

    async fn migrate(&self) -> Result<(), ViewError> {
        self.sql("CREATE TABLE IF NOT EXISTS {t}migrations (version UInt32) ENGINE = MergeTree ORDER BY version")
            .execute()
            .await
            .map_err(storage)?;
        let found: u32 = self
            .sql("SELECT toUInt32(max(version)) FROM {t}migrations")
            .fetch_one()
            .await
            .map_err(storage)?;
        let supported = MIGRATIONS.len() as u32;
        if found > supported {
            return Err(ViewError::SchemaTooNew {
                found: found.into(),
                supported: supported.into(),
            });
        }
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            for s in *statements {
                self.sql(s).execute().await.map_err(storage)?;
            }
            self.sql("INSERT INTO {t}migrations (version) VALUES (?)")
                .bind(i as u32 + 1)
                .execute()
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// The server's version, as `SELECT version()` answered at open.
    pub fn server_version(&self) -> &str {
        &self.version
    }
}

fn key_row(table: &str, (project, path, kind): &(&str, &str, &str)) -> String {
    format!("{table}\0{project}\0{path}\0{kind}")
}

pub(crate) fn storage(e: clickhouse::error::Error) -> ViewError {
    ViewError::Storage(format!("clickhouse: {e}"))
}

/// An event id as the two UInt64 columns that key it (18.16 has no UInt128).
fn id_halves(id: EventId) -> (u64, u64) {
    ((id.0 >> 64) as u64, id.0 as u64)
}

#[derive(Row, Serialize, Deserialize)]
struct IdRec {
    id_hi: u64,
    id_lo: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct CheckpointRec {
    partition: u32,
    next_offset: u64,
}

#[async_trait::async_trait]
impl ViewStore for ClickHouseViews {
    async fn checkpoint(&self) -> Result<Checkpoint, ViewError> {
        let rows: Vec<CheckpointRec> = self
            .sql("SELECT partition, max(next_offset) FROM {t}checkpoints GROUP BY partition")
            .fetch_all()
            .await
            .map_err(storage)?;
        Ok(rows.into_iter().map(|r| (r.partition, r.next_offset)).collect())
    }

    async fn known_events(&self, ids: Vec<EventId>) -> Result<HashSet<EventId>, ViewError> {
        let mut known = HashSet::new();
        for chunk in ids.chunks(2_000) {
            let list = vec!["(?, ?)"; chunk.len()].join(", ");
            let mut q = self.sql(&format!(
                "SELECT id_hi, id_lo FROM {{t}}event_ids WHERE (id_hi, id_lo) IN ({list})"
            ));
            for id in chunk {
                let (hi, lo) = id_halves(*id);
                q = q.bind(hi).bind(lo);
            }
            let rows: Vec<IdRec> = q.fetch_all().await.map_err(storage)?;
            known.extend(
                rows.into_iter()
                    .map(|r| EventId((u128::from(r.id_hi) << 64) | u128::from(r.id_lo))),
            );
        }
        Ok(known)
    }

    async fn apply(&self, batch: RowBatch) -> Result<(), ViewError> {
        write::apply(self, &batch).await
    }

    async fn run_exists(&self, project: &str, run: &str) -> Result<bool, ViewError> {
        let n: u64 = self
            .sql("SELECT count() FROM {t}runs WHERE project = ? AND run = ?")
            .bind(project)
            .bind(run)
            .fetch_one()
            .await
            .map_err(storage)?;
        Ok(n > 0)
    }

    async fn search_runs(&self, search: RunSearch) -> Result<SearchPage, ViewError> {
        search::search(self, &search).await
    }

    async fn group_runs(&self, grouping: RunGrouping) -> Result<Groups, ViewError> {
        search::group(self, &grouping).await
    }

    async fn catalog(&self, project: &str) -> Result<Catalog, ViewError> {
        read::catalog(self, project).await
    }

    async fn lineage(&self, project: &str, of: &LineageOf, limit: usize) -> Result<Vec<LineageRow>, ViewError> {
        read::lineage(self, project, of, limit).await
    }

    async fn get_run(&self, project: &str, run: &str) -> Result<Option<RunDetail>, ViewError> {
        read::get_run(self, project, run).await
    }

    async fn read_points(
        &self,
        key: &SeriesKey,
        from: PointFrom,
        to: i64,
        limit: usize,
    ) -> Result<Vec<PointRow>, ViewError> {
        read::points(self, key, from, to, limit).await
    }

    async fn read_lines(&self, key: &SeriesKey, from: i64, to: i64, limit: usize) -> Result<Vec<LineRow>, ViewError> {
        read::lines(self, key, from, to, limit).await
    }

    async fn read_buckets(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
        buckets: usize,
    ) -> Result<Vec<Bucket>, ViewError> {
        read::buckets(self, key, from, to, buckets).await
    }

    async fn get_file(
        &self,
        project: &str,
        run: &str,
        path: &str,
        step: Option<i64>,
    ) -> Result<Option<FileRow>, ViewError> {
        read::file(self, project, run, path, step).await
    }

    async fn run_events(
        &self,
        project: &str,
        run: &str,
        after: Option<(u32, u64, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ViewError> {
        read::events(self, project, run, after, limit).await
    }

    async fn sql(&self, query: sql::SqlQuery) -> Result<sql::SqlAnswer, ViewError> {
        self.analytics(query).await
    }

    async fn dump(&self) -> Result<String, ViewError> {
        read::dump(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_server_database_and_generation() {
        let u = ClickHouseUrl::parse("clickhouse://ch:8123").unwrap();
        assert_eq!(
            (u.http.as_str(), u.database.as_str(), u.generation.as_deref()),
            ("http://ch:8123", "runstream", None)
        );
        let u = ClickHouseUrl::parse("clickhouse://me:secret@ch:8123/views?generation=g7").unwrap();
        assert_eq!(
            (
                u.user.as_deref(),
                u.password.as_deref(),
                u.database.as_str(),
                u.generation.as_deref()
            ),
            (Some("me"), Some("secret"), "views", Some("g7"))
        );
        for bad in [
            "clickhouse://",
            "clickhouse://ch:8123/db;DROP",
            "clickhouse://ch:8123/db?generation=a-b",
            "clickhouse://ch:8123/db?compress=1",
            "http://ch:8123",
        ] {
            assert!(ClickHouseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
