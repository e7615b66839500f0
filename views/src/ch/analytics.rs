//! Analytics SQL on ClickHouse.
//!
//! ClickHouse 18.16 has neither row policies nor temporary views, so confinement is done on the
//! query's text before the server sees it. The text is split into tokens by ClickHouse's own
//! lexical rules (quotes with backslash escapes, `--` and `/* */` comments), and then:
//! - wherever a table may stand (after `FROM`, after `JOIN`, after a comma between tables), only
//!   one of the documented views is accepted, and it is replaced by a subquery that reads the
//!   stored table's rows of the caller's projects, latest version per key, under the view's
//!   columns. A table function, a database-qualified name, a stored table or a system table in
//!   that place is refused by name. `IN` must be followed by parentheses (`x IN table` would
//!   read a table).
//! - every other name must be something a query may legitimately say: a keyword, a column of a
//!   view, one of the query's own aliases or lambda parameters, a type name, or a function from
//!   a list of pure ones (no `file`, `url`, `remote`, `dictGet`, `joinGet`, `currentDatabase`,
//!   `sleep`...). `SETTINGS`, `FORMAT` and `INTO OUTFILE` are therefore unknown words.
//! - characters that newer servers give meaning to (`$` heredocs, `{name:Type}` parameters, `#`
//!   comments) and nested comments are refused rather than guessed at.
//!
//! The rewritten query runs with `readonly=2`, a server-side time limit and a row cap; the
//! client stops waiting at the caller's deadline and kills the query. Errors are the server's
//! message, with a syntax error's position translated back into the caller's text.

use std::collections::HashSet;

use crate::rollup::LEVELS;
use crate::sql::{MAX_ANSWER_BYTES, SqlAnswer, SqlRefusal, SqlValue, VIEWS};

/// The documented columns of each view, as the SQLite views have them.
pub(super) const VIEW_COLUMNS: [(&str, &str); 8] = [
    (
        "runs",
        "project run name experiment parent_run description owner state state_message created_ms updated_ms \
         finished_ms heartbeat_ms duration_s deleted",
    ),
    ("attributes", "project run path type value"),
    ("tags", "project run tag"),
    (
        "series",
        "project run path kind count n_values min max mean first_step last_step last_value last_time_ms",
    ),
    (
        "rollups",
        "project run path level width bucket start_step count n_values min max mean first_step last_step \
         last_value last_time_ms",
    ),
    ("lines", "project run path step time_ms line"),
    ("files", "project run path step size sha256 media_type time_ms"),
    ("lineage", "project run direction kind name version digest uri time_ms"),
];

/// Words of ClickHouse's grammar a query may use (compared without case). None of them reads a
/// table or reaches outside the server when followed by parentheses.
const KEYWORDS: &str = "
    SELECT FROM WHERE PREWHERE GROUP BY HAVING ORDER LIMIT OFFSET AS AND OR NOT IN IS NULL LIKE ILIKE
    BETWEEN CASE WHEN THEN ELSE END JOIN INNER LEFT RIGHT FULL OUTER CROSS ON USING ANY ALL ARRAY UNION
    DISTINCT WITH ASC DESC ASCENDING DESCENDING NULLS FIRST LAST INTERVAL SECOND MINUTE HOUR DAY WEEK
    MONTH QUARTER YEAR TRUE FALSE FINAL SAMPLE TOTALS ROLLUP CUBE COLLATE OVER PARTITION ROWS RANGE
    UNBOUNDED PRECEDING FOLLOWING CURRENT ROW EXISTS TIES FILL STEP ASOF SEMI ANTI INF NAN EXCEPT
    INTERSECT CAST EXTRACT TRIM BOTH LEADING TRAILING";

/// Pure functions a query may call (compared without case), as ClickHouse 18.16 and current
/// releases name them; aggregate functions may carry the combinators in [`COMBINATORS`].
const FUNCTIONS: &str = "
    plus minus multiply divide intdiv intdivorzero modulo negate abs gcd lcm
    equals notequals less greater lessorequals greaterorequals and or not xor if multiif
    exp log ln exp2 log2 exp10 log10 sqrt cbrt erf erfc lgamma tgamma sin cos tan asin acos atan pow power
    pi e round roundbankers floor ceil ceiling trunc truncate roundtoexp2 sign isnan isinfinite isfinite
    toint8 toint16 toint32 toint64 touint8 touint16 touint32 touint64 tofloat32 tofloat64
    toint8orzero toint16orzero toint32orzero toint64orzero touint8orzero touint16orzero touint32orzero
    touint64orzero tofloat32orzero tofloat64orzero toint32ornull toint64ornull touint64ornull
    tofloat32ornull tofloat64ornull todecimal32 todecimal64 todecimal128 tostring tofixedstring
    tostringcuttozero todate todatetime todateornull todatetimeornull todateorzero todatetimeorzero
    tounixtimestamp toyear tomonth toquarter todayofmonth todayofweek todayofyear tohour tominute tosecond
    tomonday tostartofday tostartofhour tostartofminute tostartofmonth tostartofquarter tostartofyear
    tostartofweek tostartoffiveminute tostartoffifteenminutes tostartofinterval totime toyyyymm
    toyyyymmdd toyyyymmddhhmmss torelativeyearnum torelativemonthnum torelativeweeknum
    torelativedaynum torelativehournum torelativeminutenum torelativesecondnum toiso8601week
    now today yesterday timeslot timeslots formatdatetime datediff fromunixtimestamp parsedatetimebesteffort
    parsedatetimebesteffortornull adddays addhours addminutes addseconds addweeks addmonths addyears
    subtractdays subtracthours subtractminutes subtractseconds subtractweeks subtractmonths subtractyears
    length empty notempty lengthutf8 lower upper lowerutf8 upperutf8 reverse reverseutf8 concat
    substring substr mid substringutf8 appendtrailingcharifabsent startswith endswith position locate
    positioncaseinsensitive positionutf8 positioncaseinsensitiveutf8 match extract extractall like notlike
    ilike notilike replace replaceall replaceone replaceregexpall replaceregexpone splitbychar
    splitbystring alphatokens trimboth trimleft trimright ltrim rtrim leftpad rightpad repeat format
    lcase ucase concatassumeinjective hex unhex base64encode base64decode tryBase64Decode
    visitparamextractfloat visitparamextractint visitparamextractuint visitparamextractstring
    visitparamextractbool visitparamextractraw visitparamhas jsonextract jsonextractfloat jsonextractint
    jsonextractuint jsonextractstring jsonextractbool jsonextractraw jsonhas jsonlength jsontype
    jsonextractkeys isvalidjson
    cityhash64 siphash64 murmurhash3_64 xxhash64 farmhash64 inthash32 inthash64 md5 sha1 sha256
    array arrayjoin has hasall hasany indexof countequal arrayelement arraymap arrayfilter arraycount
    arrayexists arrayall arraysum arrayfirst arrayfirstindex arraysort arrayreversesort arrayconcat
    arrayslice arrayuniq arraydistinct arrayenumerate arrayenumerateuniq arrayreduce arraystringconcat
    arraypushback arraypushfront arraypopback arraypopfront arrayresize arrayreverse arraycumsum
    arraydifference arrayintersect arrayflatten arrayzip arraymax arraymin arrayavg arrayproduct range
    emptyarraystring emptyarrayfloat64 emptyarrayint64 tuple tupleelement
    isnull isnotnull coalesce ifnull nullif assumenotnull tonullable greatest least
    bitand bitor bitxor bitnot bitshiftleft bitshiftright
    count sum avg min max any anylast anyheavy argmin argmax uniq uniqexact uniqcombined uniqhll12
    grouparray groupuniqarray grouparrayinsertat groupbitand groupbitor groupbitxor quantile quantiles
    quantileexact quantilesexact quantiletiming quantilestiming quantiletdigest quantilestdigest
    quantiledeterministic quantileexactweighted median medianexact stddevpop stddevsamp varpop varsamp
    covarpop covarsamp corr topk sumwithoverflow summap simplelinearregression
    row_number rank dense_rank lagInFrame leadInFrame first_value last_value nth_value";

/// Suffixes an aggregate function may carry (compared without case).
const COMBINATORS: [&str; 6] = ["if", "array", "distinct", "ornull", "ordefault", "foreach"];

/// Type names a query may write in a cast.
const TYPES: &str = "Int8 Int16 Int32 Int64 UInt8 UInt16 UInt32 UInt64 Float32 Float64 String FixedString Date
    DateTime DateTime64 Decimal Decimal32 Decimal64 Decimal128 UUID Nullable Array Tuple LowCardinality Bool";

/// Words ClickHouse reads as clauses that change how a query runs or where its answer goes:
/// never a name, never an alias.
const DENIED: [&str; 8] = [
    "SETTINGS",
    "FORMAT",
    "INTO",
    "OUTFILE",
    "GLOBAL",
    "LOCAL",
    "COMPRESSION",
    "WINDOW",
];

fn is_denied(word: &str) -> bool {
    DENIED.iter().any(|d| d.eq_ignore_ascii_case(word))
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.split_whitespace().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_type(word: &str) -> bool {
    TYPES.split_whitespace().any(|t| t == word)
}

fn function_allowed(name: &str) -> bool {
    let mut name = name.to_ascii_lowercase();
    loop {
        if FUNCTIONS.split_whitespace().any(|f| f.eq_ignore_ascii_case(&name)) {
            return true;
        }
        match COMBINATORS.iter().find(|c| name.len() > c.len() && name.ends_with(*c)) {
            Some(c) => name.truncate(name.len() - c.len()),
            None => return false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare word: keyword or name.
    Word,
    /// A name in double quotes or backticks; `text` is the whole quoted token.
    Quoted,
    Number,
    Str,
    Punct,
    /// Whitespace or a comment.
    Space,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// Byte offset into the query.
    start: usize,
    /// For names: the name itself (unquoted).
    name: String,
}

fn refuse_at(sql: &str, byte: usize, message: impl Into<String>) -> SqlRefusal {
    SqlRefusal {
        message: message.into(),
        position: Some(sql[..byte].chars().count()),
    }
}

/// Splits `sql` into tokens by ClickHouse's lexical rules, refusing what they leave ambiguous.
fn lex(sql: &str) -> Result<Vec<Token<'_>>, SqlRefusal> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Space
        } else if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1);
            Kind::Space
        } else if sql[i..].starts_with("/*") {
            let end = sql[i + 2..]
                .find("*/")
                .ok_or_else(|| refuse_at(sql, start, "this comment is never closed"))?;
            if sql[i + 2..i + 2 + end].contains("/*") {
                return Err(refuse_at(sql, start, "comments may not be nested"));
            }
            i += end + 4;
            Kind::Space
        } else if c == b'\'' || c == b'"' || c == b'`' {
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        let what = if c == b'\'' { "quote" } else { "quoted name" };
                        return Err(refuse_at(sql, start, format!("this {what} is never closed")));
                    }
                    Some(b'\\') => i += 2,
                    Some(&q) if q == c => {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(_) => i += 1,
                }
            }
            if c == b'\'' { Kind::Str } else { Kind::Quoted }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let hex = sql[i..].starts_with("0x") || sql[i..].starts_with("0X");
            while i < b.len() {
                let d = b[i];
                let exponent_sign = (d == b'+' || d == b'-') && !hex && matches!(b[i - 1], b'e' | b'E');
                if d.is_ascii_alphanumeric() || d == b'_' || d == b'.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            Kind::Number
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Kind::Word
        } else {
            const TWO: [&str; 8] = ["->", "::", "<=", ">=", "!=", "<>", "==", "||"];
            if TWO.iter().any(|t| sql[i..].starts_with(t)) {
                i += 2;
            } else if "(),.+-*/%<>=?:[];".contains(c as char) {
                i += 1;
            } else {
                let ch = sql[i..].chars().next().unwrap_or('?');
                return Err(refuse_at(
                    sql,
                    start,
                    format!("the character {ch:?} is not allowed here"),
                ));
            }
            Kind::Punct
        };
        let text = &sql[start..i.min(b.len())];
        let name = match kind {
            Kind::Word => text.to_string(),
            Kind::Quoted => {
                let inner = &text[1..text.len() - 1];
                if inner.contains('\\') {
                    return Err(refuse_at(sql, start, "a quoted name may not hold a backslash"));
                }
                let q = &text[..1];
                inner.replace(&format!("{q}{q}"), q)
            }
            _ => String::new(),
        };
        out.push(Token {
            kind,
            text,
            start,
            name,
        });
    }
    Ok(out)
}

/// What the clause at one depth of parentheses is, as far as table positions go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clause {
    /// Between `FROM` and the next clause: a comma starts another table.
    Tables,
    Other,
}

/// Which tokens stand where a table may (the first token of a table expression).
fn table_positions(tokens: &[Token<'_>], code: &[usize]) -> Vec<bool> {
    let mut at = vec![false; tokens.len()];
    // Per open parenthesis: the clause, and whether it is the argument list of a function that
    // has a `FROM` of its own (`extract(DAY FROM t)`, `trim(BOTH ' ' FROM s)`).
    let mut stack: Vec<(Clause, bool)> = vec![(Clause::Other, false)];
    let mut expect_table = false;
    for (n, &i) in code.iter().enumerate() {
        let t = &tokens[i];
        if expect_table {
            at[i] = true;
            expect_table = false;
        }
        let prev = n.checked_sub(1).map(|p| &tokens[code[p]]);
        match (t.kind, t.text) {
            (Kind::Punct, "(") => {
                let own_from = prev.is_some_and(|p| {
                    p.kind == Kind::Word
                        && ["extract", "trim", "substring", "position"]
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(p.text))
                });
                stack.push((Clause::Other, own_from));
            }
            (Kind::Punct, ")") if stack.len() > 1 => {
                stack.pop();
            }
            (Kind::Punct, ",") if stack.last().is_some_and(|s| s.0 == Clause::Tables) => {
                expect_table = true;
            }
            (Kind::Word, w) if is_keyword(w) => {
                let top = stack.last_mut().expect("the outermost level is never popped");
                if w.eq_ignore_ascii_case("SELECT") {
                    top.1 = false;
                }
                if w.eq_ignore_ascii_case("FROM") {
                    if !top.1 {
                        top.0 = Clause::Tables;
                        expect_table = true;
                    }
                } else if w.eq_ignore_ascii_case("JOIN") {
                    let array = prev.is_some_and(|p| p.text.eq_ignore_ascii_case("ARRAY"));
                    top.0 = if array { Clause::Other } else { Clause::Tables };
                    expect_table = !array;
                } else if !matches!(
                    w.to_ascii_uppercase().as_str(),
                    "AS" | "FINAL"
                        | "ANY"
                        | "ALL"
                        | "INNER"
                        | "LEFT"
                        | "RIGHT"
                        | "FULL"
                        | "OUTER"
                        | "CROSS"
                        | "ASOF"
                        | "SEMI"
                        | "ANTI"
                        | "SAMPLE"
                        | "OFFSET"
                ) {
                    top.0 = Clause::Other;
                }
            }
            _ => {}
        }
    }
    at
}

/// The deepest nest of brackets a query may hold.
const MAX_NESTING: usize = 100;

/// A query rewritten for the server, and where its tokens came from.
#[derive(Debug)]
pub(super) struct Rewritten {
    pub sql: String,
    /// (byte offset in `sql`, character offset in the caller's text) at each token's start.
    map: Vec<(usize, usize)>,
}

impl Rewritten {
    /// The caller's character position for a byte offset into the rewritten text.
    pub fn original_position(&self, byte: usize) -> Option<usize> {
        let i = self.map.partition_point(|(b, _)| *b <= byte);
        i.checked_sub(1).map(|i| self.map[i].1)
    }
}

/// Checks `sql` and replaces each view in a table position by `view_sql(view)`, a subquery.
pub(super) fn rewrite(sql: &str, view_sql: impl Fn(&str) -> String) -> Result<Rewritten, SqlRefusal> {
    let tokens = lex(sql)?;
    let code: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i].kind != Kind::Space).collect();
    // ClickHouse 18.16's parser recurses per bracket and dies of a deep enough nest, taking the
    // server with it; its own depth limit applies only after parsing.
    let mut depth = 0usize;
    for &i in &code {
        match tokens[i].text {
            "(" | "[" => depth += 1,
            ")" | "]" => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if depth > MAX_NESTING {
            return Err(refuse_at(
                sql,
                tokens[i].start,
                format!("the query is nested too deeply (more than {MAX_NESTING} levels of brackets)"),
            ));
        }
    }
    let at_table = table_positions(&tokens, &code);
    let columns: HashSet<&str> = VIEW_COLUMNS.iter().flat_map(|(_, c)| c.split_whitespace()).collect();
    let is_view = |t: &Token<'_>| matches!(t.kind, Kind::Word | Kind::Quoted) && VIEWS.contains(&t.name.as_str());
    let is_name =
        |t: &Token<'_>| t.kind == Kind::Quoted || (t.kind == Kind::Word && !is_keyword(t.text) && !is_denied(t.text));
    let tok = |n: usize| code.get(n).map(|&i| &tokens[i]);

    // The query's own names: aliases (after AS, or after a view as a table), lambda parameters.
    let mut own: HashSet<String> = HashSet::new();
    for n in 0..code.len() {
        let t = &tokens[code[n]];
        let next = tok(n + 1);
        if t.kind == Kind::Word && t.text.eq_ignore_ascii_case("AS") {
            if let Some(a) = next.filter(|a| is_name(a)) {
                own.insert(a.name.clone());
            }
        } else if at_table[code[n]] && is_view(t) {
            if let Some(a) = next.filter(|a| is_name(a)) {
                own.insert(a.name.clone());
            }
        } else if t.text == "->" && t.kind == Kind::Punct {
            match n.checked_sub(1).and_then(tok) {
                Some(p) if is_name(p) => {
                    own.insert(p.name.clone());
                }
                Some(p) if p.text == ")" => {
                    let mut k = n - 1;
                    while let Some(k2) = k.checked_sub(1) {
                        k = k2;
                        let q = &tokens[code[k]];
                        if q.text == "(" {
                            break;
                        }
                        if is_name(q) {
                            own.insert(q.name.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let views_list = VIEWS.join(", ");
    let mut out = String::with_capacity(sql.len() * 2);
    let mut map = Vec::with_capacity(code.len());
    for n in 0..code.len() {
        let i = code[n];
        let t = &tokens[i];
        let prev = n.checked_sub(1).and_then(tok);
        let next = tok(n + 1);
        let refuse = |message: String| Err(refuse_at(sql, t.start, message));
        let dotted = || match (next, tok(n + 2)) {
            (Some(d), Some(r)) if d.text == "." => format!("{}.{}", t.name, r.name),
            _ => t.name.clone(),
        };
        if n + 1 == code.len() && t.text == ";" {
            break;
        }
        // What stood between this token and the last: whitespace as it was, a comment as a space.
        let gap_start = n.checked_sub(1).map_or(0, |p| code[p] + 1);
        for s in &tokens[gap_start..i] {
            out.push_str(if s.text.trim().is_empty() { s.text } else { " " });
        }
        map.push((out.len(), sql[..t.start].chars().count()));
        if at_table[i] {
            if t.text == "(" {
                out.push('(');
                continue;
            }
            if !is_view(t) || next.is_some_and(|d| d.text == "." || d.text == "(") {
                let what = if next.is_some_and(|d| d.text == "(") {
                    format!("the table function {}() cannot be read", t.name)
                } else {
                    format!("{} cannot be read", dotted())
                };
                return refuse(format!("{what}; a query reads only the views {views_list}"));
            }
            out.push('(');
            out.push_str(&view_sql(&t.name));
            out.push(')');
            let aliased = next.is_some_and(|a| a.text.eq_ignore_ascii_case("AS") || is_name(a));
            if !aliased {
                out.push_str(" AS ");
                out.push_str(&t.name);
            }
            continue;
        }
        match t.kind {
            Kind::Word if t.text.eq_ignore_ascii_case("IN") => {
                // ClickHouse reads `x IN t`, `x IN (t)` and `in(x, t)` as reads of a table `t`.
                if next.is_none_or(|p| p.text != "(") {
                    return refuse("IN must be followed by a list or a subquery in parentheses".into());
                }
                let operand_before = prev.is_some_and(|p| match p.kind {
                    Kind::Word => {
                        !is_keyword(p.text)
                            || ["NOT", "NULL", "TRUE", "FALSE", "INF", "NAN", "END"]
                                .iter()
                                .any(|k| k.eq_ignore_ascii_case(p.text))
                    }
                    Kind::Punct => p.text == ")" || p.text == "]",
                    _ => true,
                });
                if !operand_before {
                    return refuse("in() cannot be called as a function; write x IN (...)".into());
                }
                let mut k = n + 1;
                while tok(k).is_some_and(|p| p.text == "(") {
                    k += 1;
                }
                if k > n + 1 && tok(k).is_some_and(&is_name) && tok(k + 1).is_some_and(|p| p.text == ")") {
                    return refuse("IN (name) reads a table on ClickHouse; give a list of values or a subquery".into());
                }
            }
            Kind::Word if is_keyword(t.text) => {}
            Kind::Word | Kind::Quoted => {
                let name = t.name.as_str();
                let after_dot = prev.is_some_and(|p| p.text == ".");
                let before_dot = next.is_some_and(|p| p.text == ".");
                let call = t.kind == Kind::Word && next.is_some_and(|p| p.text == "(");
                let ok = if t.kind == Kind::Word && is_denied(name) {
                    false
                } else if call {
                    function_allowed(name) || is_type(name)
                } else if after_dot {
                    columns.contains(name)
                } else if before_dot {
                    VIEWS.contains(&name) || own.contains(name)
                } else {
                    columns.contains(name) || own.contains(name) || is_type(name)
                };
                if !ok {
                    let upper = name.to_ascii_uppercase();
                    let message = if call {
                        format!("the function {name}() is not allowed in a query")
                    } else if t.kind == Kind::Word && is_denied(name) {
                        format!("{upper} is not allowed in a query")
                    } else if before_dot {
                        format!("{} cannot be read; a query reads only the views {views_list}", dotted())
                    } else {
                        format!(
                            "unknown name {name}: a query may name the views ({views_list}), their columns, \
                             its own aliases and the documented functions"
                        )
                    };
                    return refuse(message);
                }
            }
            _ => {}
        }
        if t.kind == Kind::Punct && t.text == "?" {
            out.push_str("??");
        } else {
            out.push_str(&t.text.replace('?', "??"));
        }
    }
    // The end of the text, where a syntax error about a missing ending stands.
    map.push((out.len(), sql.chars().count()));
    Ok(Rewritten { sql: out, map })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The subquery standing for `view`: the rows of the project keys (`workspace/project`),
/// latest version per key, each project shown by its name (the text after `strip` bytes).
/// `t` is the generation's table prefix.
pub(super) fn view_subquery(view: &str, t: &str, keys: &[String], strip: usize) -> String {
    let within = if keys.is_empty() {
        quote("/")
    } else {
        keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
    };
    let project = format!("substring(p_, {}) AS project", strip + 1);
    let latest = |table: &str, key: &str, values: &str| {
        format!(
            "SELECT {key_out}, argMax(tuple({values}), ver) AS v_ FROM {t}{table} \
             WHERE project IN ({within}) GROUP BY {key}",
            key_out = key
                .split(", ")
                .enumerate()
                .map(|(n, k)| format!("{k} AS k{n}_"))
                .collect::<Vec<_>>()
                .join(", ")
                .replacen("project AS k0_", "project AS p_", 1),
        )
    };
    match view {
        "runs" => format!(
            "SELECT {project}, k1_ AS run, v_.1 AS name, v_.2 AS experiment, v_.3 AS parent_run, \
             v_.4 AS description, v_.5 AS owner, v_.6 AS state, v_.7 AS state_message, v_.8 AS created_ms, \
             v_.9 AS updated_ms, v_.10 AS finished_ms, v_.11 AS heartbeat_ms, \
             (v_.10 - v_.8) / 1000 AS duration_s, v_.12 AS deleted FROM ({})",
            latest(
                "runs",
                "project, run",
                "name, experiment, parent_run, description, owner, state, state_message, created_ms, \
                 updated_ms, finished_ms, heartbeat_ms, deleted"
            )
        ),
        "attributes" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS path, v_.1 AS type, \
             multiIf(v_.1 = 'float', toString(v_.3), v_.1 IN ('string', 'string_set'), v_.4, toString(v_.2)) \
             AS value FROM ({}) WHERE v_.5 = 0",
            latest("attributes", "project, run, path", "vtype, i, f, s, deleted")
        ),
        "tags" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS tag FROM ({}) WHERE v_.1 = 1",
            latest("tags", "project, run, tag", "present")
        ),
        "series" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS path, k3_ AS kind, v_.1 AS count, v_.2 AS n_values, \
             v_.3 AS min, v_.4 AS max, if(v_.2 = 0, NULL, v_.5 / v_.2) AS mean, v_.6 AS first_step, \
             v_.7 AS last_step, v_.8 AS last_value, v_.9 AS last_time_ms FROM ({})",
            latest(
                "series",
                "project, run, path, kind",
                "count, n_values, min, max, sum, first_step, last_step, last_value, last_time_ms"
            )
        ),
        "rollups" => {
            let width = format!(
                "multiIf({}, toInt64(0))",
                LEVELS
                    .iter()
                    .enumerate()
                    .map(|(l, shift)| format!("k3_ = {l}, toInt64({})", 1i64 << shift))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            format!(
                "SELECT {project}, k1_ AS run, k2_ AS path, k3_ AS level, {width} AS width, k4_ AS bucket, \
                 k4_ * {width} AS start_step, v_.1 AS count, v_.2 AS n_values, v_.3 AS min, v_.4 AS max, \
                 if(v_.2 = 0, NULL, v_.5 / v_.2) AS mean, v_.6 AS first_step, v_.7 AS last_step, \
                 v_.8 AS last_value, v_.9 AS last_time_ms FROM ({})",
                latest(
                    "rollups",
                    "project, run, path, level, bucket",
                    "count, n_values, min, max, sum, first_step, last_step, last_value, last_time_ms"
                )
            )
        }
        "lines" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS path, k3_ AS step, v_.1 AS time_ms, v_.2 AS line FROM ({})",
            latest("lines", "project, run, path, step", "time_ms, line")
        ),
        "files" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS path, k3_ AS step, v_.1 AS size, v_.2 AS sha256, \
             v_.3 AS media_type, v_.4 AS time_ms FROM ({})",
            latest("files", "project, run, path, step", "size, sha256, media_type, time_ms")
        ),
        "lineage" => format!(
            "SELECT {project}, k1_ AS run, k2_ AS direction, k3_ AS kind, k4_ AS name, k5_ AS version, \
             v_.1 AS digest, v_.2 AS uri, v_.3 AS time_ms FROM ({})",
            latest(
                "lineage",
                "project, run, direction, kind, name, version",
                "digest, uri, time_ms"
            )
        ),
        other => unreachable!("{other} is not a documented view"),
    }
}

/// Reads an answer in `TabSeparatedWithNamesAndTypes`: names, types, then rows, at most
/// `max_rows` of them and about [`MAX_ANSWER_BYTES`] of text.
pub(super) fn parse_answer(body: &[u8], max_rows: usize) -> Result<SqlAnswer, String> {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.split_terminator('\n');
    let columns: Vec<String> = lines
        .next()
        .ok_or("the server's answer has no header")?
        .split('\t')
        .map(|c| unescape(c).unwrap_or_default())
        .collect();
    let types: Vec<String> = lines
        .next()
        .ok_or("the server's answer has no types")?
        .split('\t')
        .map(|c| unescape(c).unwrap_or_default())
        .collect();
    if types.len() != columns.len() {
        return Err("the server's answer has a types line of another width".into());
    }
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    for line in lines {
        if rows.len() == max_rows || bytes > MAX_ANSWER_BYTES {
            truncated = true;
            break;
        }
        bytes += line.len();
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns.len() {
            return Err(format!(
                "a row of {} fields under {} columns",
                fields.len(),
                columns.len()
            ));
        }
        rows.push(fields.iter().zip(&types).map(|(f, ty)| value(f, ty)).collect());
    }
    Ok(SqlAnswer {
        columns,
        rows,
        truncated,
    })
}

/// One field's value by its column's type.
fn value(field: &str, ty: &str) -> SqlValue {
    let Some(text) = unescape(field) else {
        return SqlValue::Null;
    };
    let mut base = ty;
    for wrapper in ["Nullable(", "LowCardinality("] {
        if let Some(inner) = base.strip_prefix(wrapper).and_then(|b| b.strip_suffix(')')) {
            base = inner;
        }
    }
    let integer = base.starts_with("Int") || base.starts_with("UInt");
    let float = base.starts_with("Float") || base.starts_with("Decimal");
    if integer && let Ok(i) = text.parse::<i64>() {
        return SqlValue::Int(i);
    }
    if float || integer {
        let f = match text.as_str() {
            "nan" | "-nan" => Some(f64::NAN),
            "inf" | "+inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            t => t.parse::<f64>().ok(),
        };
        if let Some(f) = f {
            return SqlValue::Float(f);
        }
    }
    if base == "Bool" {
        return SqlValue::Int(i64::from(text == "true"));
    }
    SqlValue::Text(text)
}

/// A field of tab-separated text, unescaped; `None` for `\N`, ClickHouse's NULL.
fn unescape(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}

/// The server's message for a failed query, without its stack and internals, and the
/// position of a syntax error in the caller's text.
pub(super) fn server_message(raw: &str, rewritten: &Rewritten) -> (String, Option<usize>) {
    let mut m = raw.split_once("DB::Exception: ").map_or(raw, |(_, m)| m);
    for cut in [
        ", e.what()",
        " (version ",
        ": While processing",
        " while processing query",
        ". Stack trace",
    ] {
        if let Some(at) = m.find(cut) {
            m = &m[..at];
        }
    }
    let m = m.trim().trim_end_matches('.');
    if let Some(rest) = m.strip_prefix("Syntax error: failed at position ") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let position = digits
            .parse::<usize>()
            .ok()
            .and_then(|p| rewritten.original_position(p.saturating_sub(1)));
        let expected = rest
            .find("Expected ")
            .map(|e| &rest[e..])
            .unwrap_or("")
            .trim_end_matches('.');
        // The server lists every grammar rule it tried; the first few say enough.
        let expected = match expected.char_indices().filter(|(_, c)| *c == ',').nth(5) {
            Some((cut, _)) => format!("{}, ...", &expected[..cut]),
            None => expected.to_string(),
        };
        let message = if expected.is_empty() {
            "syntax error".to_string()
        } else {
            format!("syntax error: {}", expected.replacen("Expected", "expected", 1))
        };
        return (message, position);
    }
    (m.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> Result<String, SqlRefusal> {
        rewrite(sql, |v| format!("<{v}>")).map(|r| r.sql)
    }

    fn refused(sql: &str) -> SqlRefusal {
        rw(sql).expect_err(sql)
    }

    #[test]
    fn views_in_table_positions_become_subqueries() {
        assert_eq!(rw("SELECT run FROM runs").unwrap(), "SELECT run FROM (<runs>) AS runs");
        assert_eq!(
            rw("SELECT r.run FROM runs r ANY LEFT JOIN tags AS t USING run").unwrap(),
            "SELECT r.run FROM (<runs>) r ANY LEFT JOIN (<tags>) AS t USING run"
        );
        assert_eq!(
            rw("SELECT count() FROM (SELECT run FROM \"series\" /* c */ WHERE path = 'a?')").unwrap(),
            "SELECT count() FROM (SELECT run FROM (<series>) AS series   WHERE path = 'a??')"
        );
        // A view's name elsewhere is only a qualifier; the trailing semicolon is dropped.
        assert_eq!(
            rw("SELECT runs.name FROM runs;").unwrap(),
            "SELECT runs.name FROM (<runs>) AS runs"
        );
        assert!(rw("SELECT extract(DAY FROM toDate('2020-01-02')) AS d, x -> x FROM lines").is_ok());
        assert!(rw("SELECT arrayMap((a, b) -> a + b, [1], [2]) AS s FROM tags WHERE tag IN ('x', 'y')").is_ok());
        assert!(
            rw("SELECT run FROM runs WHERE run NOT IN (SELECT run FROM tags) AND (run) IN ('a') AND name IN ('a')")
                .is_ok()
        );
    }

    #[test]
    fn anything_else_where_a_table_stands_is_refused_by_name() {
        for (sql, says) in [
            ("SELECT * FROM system.tables", "system.tables cannot be read"),
            ("SELECT * FROM g0_runs", "g0_runs cannot be read"),
            ("SELECT * FROM numbers(10)", "table function numbers()"),
            (
                "SELECT * FROM runs AS r ALL INNER JOIN g0_attributes USING run",
                "g0_attributes cannot be read",
            ),
            ("SELECT * FROM runs, system.one", "system.one cannot be read"),
            ("SELECT * FROM runs.x", "runs.x cannot be read"),
            ("SELECT * FROM `system`.`tables`", "system.tables cannot be read"),
            ("SELECT * FROM RUNS", "RUNS cannot be read"),
            ("SELECT run FROM runs WHERE run IN g0_runs", "IN must be followed"),
            (
                "SELECT 1 AS g0_keys FROM runs WHERE ('a', 'b') IN ((g0_keys))",
                "IN (name) reads a table",
            ),
            (
                "SELECT 1 AS g0_keys FROM runs WHERE in(('a', 'b'), g0_keys)",
                "in() cannot be called",
            ),
            (
                "SELECT 1 AS g0_keys FROM runs WHERE 1 AND IN(('a', 'b'), g0_keys)",
                "in() cannot be called",
            ),
            ("SELECT exists(SELECT 1 FROM system.one)", "system.one cannot be read"),
        ] {
            let r = refused(sql);
            assert!(r.message.contains(says), "{sql}: {r:?}");
            assert!(r.position.is_some(), "{sql}");
        }
    }

    #[test]
    fn unknown_names_functions_and_clauses_are_refused_where_they_stand() {
        for (sql, says, at) in [
            ("SELECT file('x')", "file() is not allowed", 7),
            (
                "SELECT run FROM runs SETTINGS readonly = 0",
                "SETTINGS is not allowed",
                21,
            ),
            ("SELECT run FROM runs FORMAT JSON", "FORMAT is not allowed", 21),
            (
                "SELECT 1 AS max_result_rows FROM runs SETTINGS max_result_rows = 0",
                "SETTINGS is not allowed",
                38,
            ),
            ("SELECT 1 AS settings", "SETTINGS is not allowed", 12),
            ("SELECT secret FROM runs", "unknown name secret", 7),
            ("SELECT system.tables.name FROM runs", "system.tables cannot be read", 7),
            ("SELECT r.tables FROM runs AS r", "unknown name tables", 9),
            ("SELECT currentDatabase()", "currentDatabase() is not allowed", 7),
            ("SELECT sleep(3)", "sleep() is not allowed", 7),
            ("SELECT $$x$$", "'$' is not allowed", 7),
            ("SELECT {p:String}", "'{' is not allowed", 7),
            ("SELECT 1 # x", "'#' is not allowed", 9),
            ("SELECT /* /* */ 1 */", "nested", 7),
            ("SELECT 'x", "never closed", 7),
            (
                &format!("SELECT {}1{}", "[(".repeat(60), ")]".repeat(60)),
                "nested too deeply",
                107,
            ),
            ("SELECT \"run\\\"\" FROM runs", "backslash", 7),
        ] {
            let r = refused(sql);
            assert!(r.message.contains(says), "{sql}: {r:?}");
            assert_eq!(r.position, Some(at), "{sql}");
        }
        // Aggregates with combinators, casts and type names pass.
        assert!(
            rw(
                "SELECT sumIf(count, kind = 'float'), CAST(min AS Nullable(Float64)), toFloat64OrNull(path) FROM series"
            )
            .is_ok()
        );
    }

    #[test]
    fn positions_map_back_to_the_callers_text() {
        let r = rewrite("SELECT 'é', run FROM runs WHERE", |_| "SELECT 1".into()).unwrap();
        // The byte where `run` starts in the rewritten text maps to its character position.
        let x = r.sql.find(" run").unwrap() + 1;
        assert_eq!(r.original_position(x), Some(12));
        let (m, p) = server_message(
            &format!(
                "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position {}: x. Expected one of: a, b, e.what() = DB::Exception",
                x + 1
            ),
            &r,
        );
        assert_eq!((m.as_str(), p), ("syntax error: expected one of: a, b", Some(12)));
        let (m, p) = server_message(
            "Code: 47. DB::Exception: Missing columns: 'zz' while processing query: 'SELECT secret'. (UNKNOWN_IDENTIFIER) (version 24.1)",
            &r,
        );
        assert_eq!((m.as_str(), p), ("Missing columns: 'zz'", None));
    }

    #[test]
    fn answers_are_typed_by_their_columns() {
        let body = b"a\tb\tc\td\te\nInt64\tNullable(Float64)\tString\tArray(String)\tUInt8\n\
                     1\tnan\tx\\ty\t['p']\t0\n-2\t\\N\t\\\\N\t[]\t1\n";
        let a = parse_answer(body, 10).unwrap();
        assert_eq!(a.columns, ["a", "b", "c", "d", "e"]);
        assert!(matches!(a.rows[0][1], SqlValue::Float(f) if f.is_nan()));
        assert_eq!(a.rows[0][2], SqlValue::Text("x\ty".into()));
        assert_eq!(a.rows[0][3], SqlValue::Text("['p']".into()));
        assert_eq!(
            a.rows[1],
            vec![
                SqlValue::Int(-2),
                SqlValue::Null,
                SqlValue::Text("\\N".into()),
                SqlValue::Text("[]".into()),
                SqlValue::Int(1)
            ]
        );
        assert!(!a.truncated);
        let cut = parse_answer(body, 1).unwrap();
        assert_eq!((cut.rows.len(), cut.truncated), (1, true));
    }
}
