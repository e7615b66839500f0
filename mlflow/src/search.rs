//! `runs/search`: MLflow's filter grammar and `order_by`, translated to runstream's typed run
//! search, and keyset pages behind MLflow's opaque page tokens.
//!
//! The grammar: clauses joined by `AND`; a clause is `KEY OP VALUE`, `KEY [NOT] IN (V, ...)`
//! or `KEY IS [NOT] NULL`. Keys are `metrics.K` (numbers: `= != < <= > >=` on the latest
//! value), `params.K` and `tags.K` (strings: `= != LIKE ILIKE IN NOT IN`), and the run
//! attributes `run_id`, `run_name`, `status`, `user_id`, `start_time`, `end_time` (with or
//! without the `attributes.` prefix). A key's name may be quoted with backticks or double quotes.

use std::sync::Arc;

use axum::extract::State;
use runstream_schema::Role;
use runstream_views::search::{
    Cmp, Field, Filter, Literal, MetricAgg, Number, RunSearch, SearchCursor, Sort, SortValue, SystemField,
};
use serde_json::Value;

use crate::experiments::{find, run_names_of, view_type_of_runs};
use crate::req::{MlflowError, Req};
use crate::{Ctx, MlflowAuth, MlflowState};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A key: `metrics.loss`, `tags.mlflow.runName`, `run_name` (quotes removed).
    Ident(String),
    Str(String),
    Num(String),
    /// A comparator, upper-cased: `=`, `!=`, `<`, ..., `LIKE`, `ILIKE`, `IN`, `NOT`, `IS`, `NULL`.
    Op(String),
    And,
    LParen,
    RParen,
    Comma,
}

impl Tok {
    pub fn ident(&self) -> Option<String> {
        match self {
            Tok::Ident(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn op(&self) -> Option<String> {
        match self {
            Tok::Op(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn string(&self) -> Option<String> {
        match self {
            Tok::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
}

fn invalid_filter(text: &str, why: impl std::fmt::Display) -> MlflowError {
    MlflowError::invalid(format!("Invalid filter '{text}': {why}"))
}

fn quoted(chars: &[char], start: usize, text: &str) -> Result<(String, usize), MlflowError> {
    let q = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            // A doubled quote inside a string stands for itself.
            if chars.get(i + 1) == Some(&q) {
                s.push(q);
                i += 2;
                continue;
            }
            return Ok((s, i + 1));
        }
        s.push(chars[i]);
        i += 1;
    }
    Err(invalid_filter(text, format!("unterminated {q} quote")))
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<Tok>, MlflowError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':');
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' | '"' => {
                let (s, next) = quoted(&chars, i, text)?;
                out.push(Tok::Str(s));
                i = next;
            }
            '`' => {
                let (s, next) = quoted(&chars, i, text)?;
                out.push(Tok::Ident(s));
                i = next;
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = if matches!(two.as_str(), "!=" | "<=" | ">=" | "==" | "<>") {
                    two
                } else {
                    c.to_string()
                };
                if op == "!" {
                    return Err(invalid_filter(text, "'!' must be followed by '='"));
                }
                i += op.len();
                out.push(Tok::Op(match op.as_str() {
                    "==" => "=".into(),
                    "<>" => "!=".into(),
                    _ => op,
                }));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E')
                        || (matches!(chars[i], '-' | '+') && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if word_char(c) => {
                let start = i;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let mut word: String = chars[start..i].iter().collect();
                // `params."a key"` and tags.`a.key`: a quoted name after the entity's dot.
                if word.ends_with('.') && i < chars.len() && matches!(chars[i], '"' | '`') {
                    let (name, next) = quoted(&chars, i, text)?;
                    word.push_str(&name);
                    i = next;
                    out.push(Tok::Ident(word));
                    continue;
                }
                let upper = word.to_ascii_uppercase();
                out.push(match upper.as_str() {
                    "AND" => Tok::And,
                    "LIKE" | "ILIKE" | "IN" | "NOT" | "IS" | "NULL" => Tok::Op(upper),
                    "OR" => return Err(invalid_filter(text, "OR is not supported; join conditions with AND")),
                    _ => Tok::Ident(word),
                });
            }
            c => return Err(invalid_filter(text, format!("unexpected character {c:?}"))),
        }
    }
    Ok(out)
}

/// The clauses of a filter, split at `AND`.
pub(crate) fn split_and(tokens: &[Tok]) -> Result<Vec<Vec<Tok>>, MlflowError> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let clauses: Vec<Vec<Tok>> = tokens.split(|t| *t == Tok::And).map(<[Tok]>::to_vec).collect();
    if clauses.iter().any(Vec::is_empty) {
        return Err(MlflowError::invalid("Invalid filter: AND must join two conditions"));
    }
    Ok(clauses)
}

/// `entity.name` split at the first dot; a key without one has no entity.
pub(crate) fn split_key(key: &str) -> (Option<String>, String) {
    match key.split_once('.') {
        Some((e, name)) => (Some(e.to_ascii_lowercase()), name.to_string()),
        None => (None, key.to_string()),
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character; `fold` ignores ASCII case.
pub(crate) fn like(s: &str, pattern: &str, fold: bool) -> bool {
    let norm = |x: &str| if fold { x.to_ascii_lowercase() } else { x.to_string() };
    let (s, p): (Vec<char>, Vec<char>) = (norm(s).chars().collect(), norm(pattern).chars().collect());
    // Iterative matcher with backtracking to the last '%'.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '_' || (p[j] != '%' && p[j] == s[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    p[j..].iter().all(|c| *c == '%')
}

/// What a key of a filter names: a field, the kind of its values, and a field to test instead on
/// runs that lack the first.
pub(crate) type Resolved = (Field, Kind, Option<Field>);

pub(crate) enum Kind {
    Metric,
    Text,
    Time,
    Status,
}

/// A run field an MLflow key names, and what its values are.
pub(crate) fn field_of(key: &str) -> Result<Resolved, MlflowError> {
    let (entity, name) = split_key(key);
    let unknown = || {
        MlflowError::invalid(format!(
            "Invalid attribute key '{key}' specified. Valid keys are metrics.KEY, params.KEY, tags.KEY and \
             attributes run_id, run_name, status, user_id, start_time, end_time"
        ))
    };
    Ok(match entity.as_deref() {
        Some("metric") | Some("metrics") => (Field::Metric(name, MetricAgg::Last), Kind::Metric, None),
        Some("param") | Some("params") | Some("parameter") | Some("parameters") => {
            (Field::Attr(format!("params/{name}")), Kind::Text, None)
        }
        Some("tag") | Some("tags") => (Field::Attr(format!("tags/{name}")), Kind::Text, None),
        None | Some("attribute") | Some("attributes") | Some("attr") | Some("run") => match name.as_str() {
            "run_id" => (Field::System(SystemField::Run), Kind::Text, None),
            // A run renamed through MLflow carries its new name as the mlflow.runName tag.
            "run_name" => (
                Field::Attr("tags/mlflow.runName".into()),
                Kind::Text,
                Some(Field::System(SystemField::Name)),
            ),
            "status" => (Field::System(SystemField::State), Kind::Status, None),
            "user_id" => (Field::System(SystemField::Owner), Kind::Text, None),
            "start_time" | "created" | "Created" => (Field::System(SystemField::Created), Kind::Time, None),
            "end_time" => (Field::System(SystemField::Finished), Kind::Time, None),
            _ => return Err(unknown()),
        },
        Some("dataset") | Some("datasets") => {
            return Err(MlflowError::invalid(format!(
                "Invalid filter key '{key}': runstream does not search MLflow dataset inputs"
            )));
        }
        _ => return Err(unknown()),
    })
}

fn number(raw: &str, text: &str) -> Result<Number, MlflowError> {
    if let Ok(i) = raw.parse::<i64>() {
        return Ok(Number::Int(i));
    }
    raw.parse::<f64>()
        .map(Number::Float)
        .map_err(|_| invalid_filter(text, format!("{raw} is not a number")))
}

/// MLflow's run statuses as runstream's states.
fn state_of(status: &str) -> String {
    match status.to_ascii_uppercase().as_str() {
        "RUNNING" => "running",
        "FINISHED" => "finished",
        "FAILED" => "failed",
        "KILLED" => "aborted",
        // SCHEDULED and anything else: no runstream run is in such a state.
        _ => "scheduled",
    }
    .to_string()
}

fn literal(kind: &Kind, tok: &Tok, text: &str) -> Result<Literal, MlflowError> {
    match (kind, tok) {
        (Kind::Metric, Tok::Num(n)) => Ok(Literal::Number(number(n, text)?)),
        (Kind::Time, Tok::Num(n)) => match number(n, text)? {
            Number::Int(i) => Ok(Literal::Datetime(i)),
            Number::Float(f) => Ok(Literal::Datetime(f as i64)),
        },
        (Kind::Text, Tok::Str(s)) => Ok(Literal::Str(s.clone())),
        (Kind::Status, Tok::Str(s)) => Ok(Literal::Str(state_of(s))),
        (Kind::Metric | Kind::Time, _) => Err(invalid_filter(text, "expected a number")),
        (Kind::Text | Kind::Status, _) => Err(invalid_filter(text, "expected a quoted string")),
    }
}

fn cmp_of(op: &str) -> Option<Cmp> {
    Some(match op {
        "=" => Cmp::Eq,
        "!=" => Cmp::Ne,
        "<" => Cmp::Lt,
        "<=" => Cmp::Le,
        ">" => Cmp::Gt,
        ">=" => Cmp::Ge,
        _ => return None,
    })
}

/// One clause as a filter on `field`.
fn clause_on(field: Field, kind: &Kind, rest: &[Tok], text: &str) -> Result<Filter, MlflowError> {
    let numeric = matches!(kind, Kind::Metric | Kind::Time);
    match rest {
        [Tok::Op(is), Tok::Op(null)] if is == "IS" && null == "NULL" => {
            Ok(Filter::Not(Box::new(Filter::Exists(field))))
        }
        [Tok::Op(is), Tok::Op(not), Tok::Op(null)] if is == "IS" && not == "NOT" && null == "NULL" => {
            Ok(Filter::Exists(field))
        }
        [Tok::Op(op), value] if cmp_of(op).is_some() => {
            let op = cmp_of(op).expect("checked");
            if !numeric && !matches!(op, Cmp::Eq | Cmp::Ne) {
                return Err(invalid_filter(
                    text,
                    "strings compare with =, !=, LIKE, ILIKE, IN and NOT IN only",
                ));
            }
            let value = literal(kind, value, text)?;
            // A param logged through runstream's own API may be a number: '0.1' matches 0.1 too.
            if let (Field::Attr(_), Cmp::Eq, Literal::Str(s)) = (&field, op, &value)
                && let Ok(n) = s.trim().parse::<f64>()
                && n.is_finite()
            {
                return Ok(Filter::Or(vec![
                    Filter::Compare {
                        field: field.clone(),
                        op,
                        value: value.clone(),
                    },
                    Filter::Compare {
                        field,
                        op,
                        value: Literal::Number(Number::Float(n)),
                    },
                ]));
            }
            Ok(Filter::Compare { field, op, value })
        }
        [Tok::Op(op), Tok::Str(pattern)] | [Tok::Op(_), Tok::Op(op), Tok::Str(pattern)]
            if (op == "LIKE" || op == "ILIKE") && (rest.len() == 2 || rest[0] == Tok::Op("NOT".into())) =>
        {
            if numeric {
                return Err(invalid_filter(text, "LIKE applies to strings"));
            }
            Ok(Filter::Like {
                field,
                pattern: pattern.clone(),
                fold_case: op == "ILIKE",
                negated: rest.len() == 3,
            })
        }
        _ => {
            let (negated, list) = match rest {
                [Tok::Op(i), list @ ..] if i == "IN" => (false, list),
                [Tok::Op(n), Tok::Op(i), list @ ..] if n == "NOT" && i == "IN" => (true, list),
                _ => return Err(invalid_filter(text, "expected a comparison after the key")),
            };
            let [Tok::LParen, inner @ .., Tok::RParen] = list else {
                return Err(invalid_filter(text, "IN takes a parenthesised list of values"));
            };
            let mut values = Vec::new();
            for (i, t) in inner.iter().enumerate() {
                if i % 2 == 1 {
                    if *t != Tok::Comma {
                        return Err(invalid_filter(text, "values of an IN list are separated by commas"));
                    }
                    continue;
                }
                values.push(literal(kind, t, text)?);
            }
            if values.is_empty() || inner.len() % 2 == 0 {
                return Err(invalid_filter(text, "an IN list holds at least one value"));
            }
            Ok(Filter::In { field, values, negated })
        }
    }
}

/// An MLflow filter as runstream's typed filter.
pub(crate) fn parse_filter(text: &str) -> Result<Filter, MlflowError> {
    parse_filter_with(text, field_of)
}

/// A filter whose keys `fields` resolves: to a field, the kind of its values, and a field to
/// test instead on runs that lack the first.
pub(crate) fn parse_filter_with(
    text: &str,
    fields: fn(&str) -> Result<Resolved, MlflowError>,
) -> Result<Filter, MlflowError> {
    let tokens = tokenize(text)?;
    let mut all = Vec::new();
    for clause in split_and(&tokens)? {
        let Some(key) = clause[0].ident() else {
            return Err(invalid_filter(
                text,
                "each condition starts with a key such as metrics.loss",
            ));
        };
        let (field, kind, fallback) = fields(&key)?;
        let primary = clause_on(field.clone(), &kind, &clause[1..], text)?;
        all.push(match fallback {
            // The tag when the run has it, else the fallback field.
            Some(other) => Filter::Or(vec![
                Filter::And(vec![Filter::Exists(field.clone()), primary]),
                Filter::And(vec![
                    Filter::Not(Box::new(Filter::Exists(field))),
                    clause_on(other, &kind, &clause[1..], text)?,
                ]),
            ]),
            None => primary,
        });
    }
    Ok(match all.len() {
        0 => Filter::True,
        1 => all.pop().expect("one"),
        _ => Filter::And(all),
    })
}

/// One `order_by` clause: a key and its direction.
fn parse_clause(clause: &Value) -> Result<(Resolved, bool), MlflowError> {
    let text = clause.as_str().unwrap_or_default();
    let tokens = tokenize(text)?;
    let (key, dir) = match tokens.as_slice() {
        [Tok::Ident(k)] => (k.clone(), None),
        [Tok::Ident(k), Tok::Ident(d)] => (k.clone(), Some(d.to_ascii_uppercase())),
        _ => return Err(MlflowError::invalid(format!("Invalid order_by clause '{text}'"))),
    };
    let descending = match dir.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(d) => {
            return Err(MlflowError::invalid(format!(
                "Invalid order_by clause '{text}': {d} is not ASC or DESC"
            )));
        }
    };
    Ok((field_of(&key)?, descending))
}

/// A clause after the first: which value of a run it compares, and how.
pub(crate) struct Then {
    field: Field,
    /// Compared where the run lacks `field` (a run's `run_name` without its tag).
    fallback: Option<Field>,
    descending: bool,
}

/// MLflow's `order_by`: the first clause is the views' sort (keyset pages); any further clauses
/// order the runs that tie on it.
pub(crate) struct Order {
    pub first: Sort,
    pub then: Vec<Then>,
}

pub(crate) fn parse_order(order_by: &[Value]) -> Result<Order, MlflowError> {
    let Some((first, rest)) = order_by.split_first() else {
        return Ok(Order {
            first: Sort::default(),
            then: Vec::new(),
        });
    };
    let ((field, _, fallback), descending) = parse_clause(first)?;
    // Runs renamed through MLflow are few; the views sort run_name by the name the run was
    // created with.
    let first = Sort {
        field: fallback.unwrap_or(field),
        descending,
    };
    let then = rest
        .iter()
        .map(|c| {
            let ((field, _, fallback), descending) = parse_clause(c)?;
            Ok(Then {
                field,
                fallback,
                descending,
            })
        })
        .collect::<Result<_, MlflowError>>()?;
    Ok(Order { first, then })
}

/// A run's value of a clause's key, compared as MLflow compares it: numbers as numbers (NaN above
/// every number), text by bytes.
#[derive(Debug, PartialEq)]
enum OrderValue {
    Num(f64),
    Text(String),
}

impl OrderValue {
    fn cmp(&self, other: &OrderValue) -> std::cmp::Ordering {
        match (self, other) {
            (OrderValue::Num(a), OrderValue::Num(b)) => a.total_cmp(b),
            (OrderValue::Text(a), OrderValue::Text(b)) => a.cmp(b),
            (OrderValue::Num(_), OrderValue::Text(_)) => std::cmp::Ordering::Less,
            (OrderValue::Text(_), OrderValue::Num(_)) => std::cmp::Ordering::Greater,
        }
    }
}

fn order_value(d: &runstream_views::RunDetail, field: &Field) -> Option<OrderValue> {
    let r = &d.run;
    match field {
        Field::Metric(path, _) => d
            .series
            .iter()
            .find(|s| s.kind == "float" && &s.path == path)
            .and_then(|s| s.last_value)
            .map(OrderValue::Num),
        Field::Attr(path) => d
            .attributes
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| OrderValue::Text(crate::runs::text_of(v))),
        Field::System(f) => match f {
            SystemField::Run => Some(OrderValue::Text(r.run.clone())),
            SystemField::Name => Some(OrderValue::Text(r.name.clone())),
            SystemField::Owner => Some(OrderValue::Text(r.owner.clone())),
            SystemField::State => Some(OrderValue::Text(crate::runs::status_of(&r.state).to_string())),
            SystemField::Created => Some(OrderValue::Num(r.created_ms as f64)),
            SystemField::Finished => r.finished_ms.map(|t| OrderValue::Num(t as f64)),
            _ => None,
        },
    }
}

/// How `a` and `b` order under the clauses after the first: runs lacking a value last whatever
/// the direction, then MLflow's own tie-breaks, newest first and by run id.
fn order_then(then: &[Then], a: &runstream_views::RunDetail, b: &runstream_views::RunDetail) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for t in then {
        let value = |d| order_value(d, &t.field).or_else(|| t.fallback.as_ref().and_then(|f| order_value(d, f)));
        let o = match (value(a), value(b)) {
            (Some(x), Some(y)) if t.descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    b.run
        .created_ms
        .cmp(&a.run.created_ms)
        .then_with(|| a.run.run.cmp(&b.run.run))
}

/// The runs of the request's `experiment_ids`, by the experiment names they carry (`None`: no
/// experiment named, no restriction).
pub(crate) fn in_experiments(st: &MlflowState, ctx: &Ctx, req: &Req) -> Result<Option<Filter>, MlflowError> {
    let mut names = Vec::new();
    for id in req.list("experiment_ids") {
        let raw = id.as_str().map_or_else(|| id.to_string(), str::to_string);
        names.extend(run_names_of(&find(st, ctx, &raw)?));
    }
    Ok((!names.is_empty()).then(|| Filter::In {
        field: Field::System(SystemField::Experiment),
        values: names.into_iter().map(Literal::Str).collect(),
        negated: false,
    }))
}

pub(crate) fn page_token(cursor: &SearchCursor) -> String {
    hex::encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub(crate) fn parse_page_token(t: &str) -> Result<SearchCursor, MlflowError> {
    hex::decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| MlflowError::invalid(format!("Invalid page token '{t}'")))
}

/// The page token of an ordering by several clauses: how many runs earlier pages held.
#[derive(serde::Serialize, serde::Deserialize)]
struct OffsetToken {
    offset: usize,
}

fn offset_token(offset: usize) -> String {
    hex::encode(serde_json::to_vec(&OffsetToken { offset }).unwrap_or_default())
}

fn parse_offset_token(t: &str) -> Result<usize, MlflowError> {
    hex::decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice::<OffsetToken>(&b).ok())
        .map(|o| o.offset)
        .ok_or_else(|| MlflowError::invalid(format!("Invalid page token '{t}'")))
}

/// Whether two runs tie on the views' sort.
fn same_sort_value(a: &Option<SortValue>, b: &Option<SortValue>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x.cmp_contract(y) == std::cmp::Ordering::Equal,
        (None, None) => true,
        _ => false,
    }
}

/// Keyset pages read for an ordering by several clauses.
const ORDERED_READ: usize = 1_000;

/// A page ordered by several clauses, cut out by offset as MLflow's own server pages: the runs
/// in the first clause's order (the views' sort, read a keyset page at a time) up to the end of
/// the tie the page ends in, each tie ordered by the further clauses.
async fn ordered_page(
    st: &MlflowState,
    mut search: RunSearch,
    then: &[Then],
    offset: usize,
) -> Result<(Vec<Arc<runstream_views::RunDetail>>, Option<String>), MlflowError> {
    let max = search.limit;
    let want = offset.saturating_add(max);
    search.limit = ORDERED_READ;
    let mut found: Vec<(Option<SortValue>, Arc<runstream_views::RunDetail>)> = Vec::new();
    let mut more = true;
    loop {
        let (page, details) = st.ingest.views.search_run_details(search.clone()).await?;
        let mut by_run: std::collections::HashMap<String, Arc<runstream_views::RunDetail>> =
            details.into_iter().map(|d| (d.run.run.clone(), d)).collect();
        for f in page.runs {
            if let Some(d) = by_run.remove(&f.run.run) {
                found.push((f.sort_value, d));
            }
        }
        let Some(next) = page.next else {
            more = false;
            break;
        };
        search.after = Some(next);
        // Done once a run past the page's last one ties with it no more.
        if found.len() > want
            && let (Some(last_wanted), Some(last)) = (found.get(want - 1), found.last())
            && !same_sort_value(&last_wanted.0, &last.0)
        {
            break;
        }
    }
    let mut i = 0;
    while i < found.len() {
        let mut j = i + 1;
        while j < found.len() && same_sort_value(&found[i].0, &found[j].0) {
            j += 1;
        }
        found[i..j].sort_by(|a, b| order_then(then, &a.1, &b.1));
        i = j;
    }
    let total = found.len();
    let page = found.into_iter().skip(offset).take(max).map(|(_, d)| d).collect();
    let next = (more || want < total).then(|| offset_token(want));
    Ok((page, next))
}

pub(crate) async fn search_runs(
    State(st): State<MlflowState>,
    MlflowAuth(p): MlflowAuth,
    req: Req,
) -> Result<axum::response::Response, MlflowError> {
    let ctx = Ctx::of(&st, p, Role::Viewer)?;
    let experiments = in_experiments(&st, &ctx, &req)?;
    let max = req.i64("max_results")?.unwrap_or(1000);
    if !(1..=50_000).contains(&max) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max} for parameter 'max_results' supplied. It must be at most 50000"
        )));
    }
    let mut filter = parse_filter(&req.str("filter")?.unwrap_or_default())?;
    let (include_deleted, only) = view_type_of_runs(req.str("run_view_type")?)?;
    let mut all = vec![filter, crate::models::not_a_model()];
    all.extend(experiments);
    if let Some(d) = only {
        all.push(Filter::Compare {
            field: Field::System(SystemField::Deleted),
            op: Cmp::Eq,
            value: Literal::Bool(d),
        });
    }
    filter = Filter::And(all);
    let order = parse_order(req.list("order_by"))?;
    let token = req.str("page_token")?.filter(|t| !t.is_empty());
    let search = RunSearch {
        project: ctx.key.clone(),
        filter,
        include_deleted,
        sort: order.first.clone(),
        after: None,
        limit: max as usize,
        columns: Vec::new(),
    };
    let (details, next_page_token) = if order.then.is_empty() {
        let after = token.map(|t| parse_page_token(&t)).transpose()?;
        st.caught_up().await?;
        let (page, details) = st
            .ingest
            .views
            .search_run_details(RunSearch { after, ..search })
            .await?;
        (details, page.next.as_ref().map(page_token))
    } else {
        let offset = token.map(|t| parse_offset_token(&t)).transpose()?.unwrap_or(0);
        st.caught_up().await?;
        ordered_page(&st, search, &order.then, offset).await?
    };
    // `{"runs": [...], "next_page_token": ...}`, each run as rendered JSON (`write_run_json`).
    let mut body = Vec::with_capacity(64 + details.len() * 1024);
    body.extend_from_slice(b"{\"runs\":[");
    for (i, d) in details.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        crate::runs::write_run_json(&st, &ctx, d, &mut body).await?;
    }
    body.push(b']');
    if let Some(t) = next_page_token {
        body.extend_from_slice(b",\"next_page_token\":");
        serde_json::to_writer(&mut body, &t)
            .map_err(|e| MlflowError::from(runstream_http::ApiError::internal(e.to_string())))?;
    }
    body.push(b'}');
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_translate_to_typed_run_filters() {
        let f = parse_filter("metrics.acc > 0.9 and params.`opt name` = 'adam'").unwrap();
        let Filter::And(parts) = f else { panic!("{f:?}") };
        assert_eq!(
            parts[0],
            Filter::Compare {
                field: Field::Metric("acc".into(), MetricAgg::Last),
                op: Cmp::Gt,
                value: Literal::Number(Number::Float(0.9)),
            }
        );
        assert_eq!(
            parts[1],
            Filter::Compare {
                field: Field::Attr("params/opt name".into()),
                op: Cmp::Eq,
                value: Literal::Str("adam".into()),
            }
        );
        let f = parse_filter("tags.\"mlflow.user\" IN ('a', 'b') AND attributes.status != 'KILLED'").unwrap();
        let Filter::And(parts) = f else { panic!("{f:?}") };
        assert!(matches!(&parts[0], Filter::In { values, negated: false, .. } if values.len() == 2));
        assert_eq!(
            parts[1],
            Filter::Compare {
                field: Field::System(SystemField::State),
                op: Cmp::Ne,
                value: Literal::Str("aborted".into()),
            }
        );
        assert_eq!(parse_filter("").unwrap(), Filter::True);
        assert!(matches!(parse_filter("tags.x IS NULL").unwrap(), Filter::Not(_)));
        assert!(matches!(
            parse_filter("params.x NOT LIKE 'a%'").unwrap(),
            Filter::Like { negated: true, .. }
        ));
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        for (text, why) in [
            ("metrics.acc > 'high'", "expected a number"),
            ("params.lr > '0.1'", "strings compare with"),
            ("metrics.a > 1 or metrics.b > 1", "OR is not supported"),
            ("foo.bar = 'x'", "Invalid attribute key"),
            ("params.x = 'unterminated", "unterminated"),
            ("params.x IN 'a'", "parenthesised"),
            ("metrics.a > 1 and", "AND must join"),
        ] {
            let e = parse_filter(text).unwrap_err();
            assert_eq!(e.code, "INVALID_PARAMETER_VALUE");
            assert!(e.message.contains(why), "{text}: {}", e.message);
        }
    }

    #[test]
    fn order_by_takes_a_key_and_a_direction() {
        let s = parse_order(&[json!("metrics.`val loss` DESC")]).unwrap().first;
        assert_eq!(s.field, Field::Metric("val loss".into(), MetricAgg::Last));
        assert!(s.descending);
        let s = parse_order(&[json!("attributes.start_time")]).unwrap().first;
        assert_eq!(s.field, Field::System(SystemField::Created));
        assert!(!s.descending);
        assert!(parse_order(&[json!("metrics.a SIDEWAYS")]).is_err());
    }

    fn run(id: &str, created_ms: i64, loss: Option<f64>, opt: Option<&str>) -> runstream_views::RunDetail {
        runstream_views::RunDetail {
            run: runstream_views::RunRow {
                run: id.into(),
                name: id.into(),
                experiment: "e".into(),
                parent_run: None,
                description: String::new(),
                owner: "u".into(),
                state: "running".into(),
                state_message: String::new(),
                created_ms,
                updated_ms: created_ms,
                finished_ms: None,
                heartbeat_ms: None,
                deleted: false,
            },
            attributes: opt
                .map(|o| vec![("params/opt".to_string(), runstream_schema::Value::String(o.into()))])
                .unwrap_or_default(),
            tags: Vec::new(),
            series: loss
                .map(|v| {
                    vec![runstream_views::SeriesSummary {
                        path: "loss".into(),
                        kind: "float".into(),
                        count: 1,
                        first_step: Some(0),
                        last_step: Some(0),
                        last_value: Some(v),
                        min: Some(v),
                        max: Some(v),
                        mean: Some(v),
                        last_time_ms: Some(0),
                    }]
                })
                .unwrap_or_default(),
            files: Vec::new(),
            lineage: Vec::new(),
        }
    }

    #[test]
    fn further_clauses_order_ties_with_missing_values_last() {
        let order = parse_order(&[json!("params.opt"), json!("metrics.loss DESC"), json!("params.opt")]).unwrap();
        assert_eq!(order.then.len(), 2);
        let mut runs = [
            run("a", 1, None, Some("x")),
            run("b", 1, Some(0.5), None),
            run("c", 1, Some(f64::NAN), None),
            run("d", 1, Some(2.0), Some("y")),
            run("e", 1, Some(2.0), Some("x")),
            run("f", 2, None, None),
            run("g", 1, None, None),
        ];
        runs.sort_by(|a, b| order_then(&order.then, a, b));
        let ids: Vec<&str> = runs.iter().map(|d| d.run.run.as_str()).collect();
        // NaN above every number, ties on both keys by creation (newest first) then run id.
        assert_eq!(ids, ["c", "e", "d", "b", "a", "f", "g"]);
        assert_eq!(parse_offset_token(&offset_token(7)).unwrap(), 7);
        assert!(
            parse_offset_token(&page_token(&SearchCursor {
                value: None,
                run: "r".into()
            }))
            .is_err()
        );
    }

    #[test]
    fn like_matches_sql_patterns() {
        assert!(like("resnet50", "res%", false));
        assert!(like("resnet50", "%net__", false));
        assert!(!like("resnet50", "RES%", false));
        assert!(like("resnet50", "RES%", true));
        assert!(like("a%b", "a%b", false));
        assert!(!like("abc", "a_", false));
    }
}
