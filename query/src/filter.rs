//! The run filter language: text to the typed [`Filter`] every backend compiles.
//!
//! The grammar, its semantics and examples are in docs/filter-language.md. Parsing is in two
//! steps: a recursive-descent parser builds a syntax tree that keeps the position of every field
//! and literal, then [`Checker`] resolves fields against the project's catalog and gives every
//! comparison one class, so that a type error names the place it was made.

use std::fmt;

use runstream_schema::{ArtifactKind, Direction};
use runstream_views::search::{
    Catalog, Class, Cmp, Field, Filter, Literal, MetricAgg, Number, Sort, SystemField, TagTest,
};

/// An error in a filter, sort or field expression, at a character position (0-based).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.position + 1, self.message)
    }
}

fn err<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: keyword, system field, kind.
    Word(String),
    /// `attr.PATH` or `metric.PATH`.
    Path {
        metric: bool,
        path: String,
    },
    Str(String),
    Int(i64),
    Float(f64),
    Op(Cmp),
    LParen,
    RParen,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{w:?}"),
            Tok::Path { metric, path } => format!("{}.{path}", if *metric { "metric" } else { "attr" }),
            Tok::Str(s) => format!("the string '{s}'"),
            Tok::Int(i) => format!("the number {i}"),
            Tok::Float(f) => format!("the number {f}"),
            Tok::Op(_) => "a comparison".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "the end of the filter".into(),
        }
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let quoted = |i: &mut usize| -> Result<String, FilterError> {
        let start = *i;
        let q = chars[*i];
        *i += 1;
        let mut s = String::new();
        loop {
            match chars.get(*i) {
                None => return err(start, format!("unterminated string: add the closing {q}")),
                Some(&c) if c == q => {
                    if chars.get(*i + 1) == Some(&q) {
                        s.push(q);
                        *i += 2;
                    } else {
                        *i += 1;
                        return Ok(s);
                    }
                }
                Some(&c) => {
                    s.push(c);
                    *i += 1;
                }
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let at = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '\'' | '"' => Tok::Str(quoted(&mut i)?),
            '=' => {
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                Tok::Op(Cmp::Eq)
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Op(Cmp::Ne)
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let ne = c == '<' && chars.get(i + 1) == Some(&'>');
                i += if eq || ne { 2 } else { 1 };
                Tok::Op(match (c, eq, ne) {
                    (_, _, true) => Cmp::Ne,
                    ('<', true, _) => Cmp::Le,
                    ('<', false, _) => Cmp::Lt,
                    (_, true, _) => Cmp::Ge,
                    _ => Cmp::Gt,
                })
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '.') && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                if let Ok(n) = s.parse::<i64>() {
                    Tok::Int(n)
                } else {
                    match s.parse::<f64>() {
                        Ok(f) if f.is_finite() => Tok::Float(f),
                        _ => return err(start, format!("{s:?} is not a number")),
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                if (lower == "attr" || lower == "metric") && chars.get(i) == Some(&'.') {
                    i += 1;
                    let path = match chars.get(i) {
                        Some('"') | Some('\'') => quoted(&mut i)?,
                        _ => {
                            let p = i;
                            while i < chars.len() && is_path_char(chars[i]) {
                                i += 1;
                            }
                            if p == i {
                                return err(p, format!("{lower}. must be followed by a path, bare or quoted"));
                            }
                            chars[p..i].iter().collect()
                        }
                    };
                    Tok::Path {
                        metric: lower == "metric",
                        path,
                    }
                } else {
                    Tok::Word(word)
                }
            }
            c => return err(at, format!("unexpected character {c:?}")),
        };
        out.push((at, tok));
    }
    out.push((chars.len(), Tok::End));
    Ok(out)
}

// ---- syntax tree ----

#[derive(Debug, Clone, PartialEq)]
enum RawField {
    System(SystemField),
    Tag,
    Attr(String),
    Metric(String, MetricAgg),
}

#[derive(Debug, Clone, PartialEq)]
struct Lit {
    at: usize,
    tok: Tok,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Exists(usize, RawField),
    Compare(usize, RawField, Cmp, Lit),
    In(usize, RawField, Vec<Lit>, bool),
    Between(usize, RawField, Lit, Lit, bool),
    Like(usize, RawField, Lit, bool, bool),
    Lineage(Direction, ArtifactKind, String, Option<String>),
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
}

fn system_field(name: &str) -> Option<SystemField> {
    SystemField::ALL.into_iter().find(|f| f.name() == name)
}

fn metric_agg(name: &str) -> Option<MetricAgg> {
    [
        MetricAgg::Last,
        MetricAgg::Min,
        MetricAgg::Max,
        MetricAgg::Mean,
        MetricAgg::Count,
    ]
    .into_iter()
    .find(|a| a.name() == name)
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "between", "like", "ilike", "exists", "asc", "desc",
];

impl Parser {
    fn new(text: &str) -> Result<Self, FilterError> {
        Ok(Parser { toks: lex(text)?, i: 0 })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].1
    }

    fn at(&self) -> usize {
        self.toks[self.i].0
    }

    fn next(&mut self) -> (usize, Tok) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.next();
        }
        yes
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), FilterError> {
        if *self.peek() == t {
            self.next();
            Ok(())
        } else {
            err(self.at(), format!("expected {what}, found {}", self.peek().describe()))
        }
    }

    fn end(&self, expected: &str) -> Result<(), FilterError> {
        match self.peek() {
            Tok::End => Ok(()),
            t => err(self.at(), format!("expected {expected}, found {}", t.describe())),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut v = vec![self.and()?];
        while self.eat_word("or") {
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().expect("one")
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut v = vec![self.unary()?];
        while self.eat_word("and") {
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.pop().expect("one")
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let e = self.or()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(e);
        }
        if self.eat_word("exists") {
            let (at, f) = self.field()?;
            return Ok(Expr::Exists(at, f));
        }
        if self.is_word("used") || self.is_word("produced") {
            return self.lineage();
        }
        self.predicate()
    }

    fn lineage(&mut self) -> Result<Expr, FilterError> {
        let (_, Tok::Word(w)) = self.next() else {
            unreachable!("checked by the caller")
        };
        let direction = if w.eq_ignore_ascii_case("used") {
            Direction::Input
        } else {
            Direction::Output
        };
        self.expect(Tok::LParen, "'(' after used / produced")?;
        let at = self.at();
        let kind = match self.next().1 {
            Tok::Word(k) => ArtifactKind::parse(&k.to_ascii_lowercase()),
            _ => None,
        }
        .ok_or_else(|| FilterError {
            position: at,
            message: "expected an artifact kind: dataset, model, code, run or other".into(),
        })?;
        self.expect(Tok::Comma, "',' after the artifact kind")?;
        let name = self.string("the artifact name")?;
        let version = if *self.peek() == Tok::Comma {
            self.next();
            Some(self.string("the artifact version")?)
        } else {
            None
        };
        self.expect(Tok::RParen, "')'")?;
        Ok(Expr::Lineage(direction, kind, name, version))
    }

    fn string(&mut self, what: &str) -> Result<String, FilterError> {
        match self.next() {
            (_, Tok::Str(s)) => Ok(s),
            (at, t) => err(
                at,
                format!("expected {what} as a quoted string, found {}", t.describe()),
            ),
        }
    }

    /// A field: a system field, `tag`, `attr.PATH`, `metric.PATH` or `AGG(metric.PATH)`.
    fn field(&mut self) -> Result<(usize, RawField), FilterError> {
        let (at, t) = self.next();
        let f = match t {
            Tok::Path { metric: false, path } => RawField::Attr(path),
            Tok::Path { metric: true, path } => RawField::Metric(path, MetricAgg::Last),
            Tok::Word(w) => {
                let lower = w.to_ascii_lowercase();
                if let Some(agg) = metric_agg(&lower).filter(|_| *self.peek() == Tok::LParen) {
                    self.next();
                    let (pat, inner) = self.next();
                    let Tok::Path { metric: true, path } = inner else {
                        return err(pat, format!("{lower}(...) takes a metric: {lower}(metric.PATH)"));
                    };
                    self.expect(Tok::RParen, "')'")?;
                    RawField::Metric(path, agg)
                } else if lower == "tag" || lower == "tags" {
                    RawField::Tag
                } else if let Some(s) = system_field(&lower) {
                    RawField::System(s)
                } else if KEYWORDS.contains(&lower.as_str()) {
                    return err(at, format!("expected a field, found the keyword {lower:?}"));
                } else {
                    let known: Vec<&str> = SystemField::ALL.iter().map(|f| f.name()).collect();
                    return err(
                        at,
                        format!(
                            "unknown field {w:?}: use attr.PATH for an attribute, metric.PATH for a metric, \
                             tag, or one of {}",
                            known.join(", ")
                        ),
                    );
                }
            }
            t => return err(at, format!("expected a field, found {}", t.describe())),
        };
        Ok((at, f))
    }

    fn literal(&mut self) -> Result<Lit, FilterError> {
        let (at, tok) = self.next();
        match &tok {
            Tok::Str(_) | Tok::Int(_) | Tok::Float(_) => Ok(Lit { at, tok }),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => Ok(Lit { at, tok }),
            t => err(at, format!("expected a value, found {}", t.describe())),
        }
    }

    fn predicate(&mut self) -> Result<Expr, FilterError> {
        let (at, field) = self.field()?;
        let negated = self.eat_word("not");
        let op_at = self.at();
        if self.eat_word("in") {
            self.expect(Tok::LParen, "'(' after in")?;
            let mut values = vec![self.literal()?];
            while *self.peek() == Tok::Comma {
                self.next();
                values.push(self.literal()?);
            }
            self.expect(Tok::RParen, "')'")?;
            return Ok(Expr::In(at, field, values, negated));
        }
        if self.eat_word("between") {
            let low = self.literal()?;
            if !self.eat_word("and") {
                return err(self.at(), "expected 'and' in between ... and ...");
            }
            let high = self.literal()?;
            return Ok(Expr::Between(at, field, low, high, negated));
        }
        for (word, fold) in [("like", false), ("ilike", true)] {
            if self.eat_word(word) {
                let p = self.literal()?;
                return Ok(Expr::Like(at, field, p, fold, negated));
            }
        }
        if negated {
            return err(op_at, "expected in, between, like or ilike after not");
        }
        match self.next() {
            (_, Tok::Op(op)) => {
                let v = self.literal()?;
                Ok(Expr::Compare(at, field, op, v))
            }
            (at, t) => err(
                at,
                format!(
                    "expected a comparison (=, !=, <, <=, >, >=, in, between, like), found {}",
                    t.describe()
                ),
            ),
        }
    }
}

// ---- checking ----

/// Resolves fields against a project's catalog and types every comparison.
pub struct Checker<'a> {
    catalog: &'a Catalog,
    /// The instant relative dates (`'now-7d'`) count from, in ms since the epoch.
    now_ms: i64,
}

const STATES: &[&str] = &["running", "finished", "failed", "aborted"];

/// A `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` date with `Z` or `±HH:MM` (UTC when absent),
/// as milliseconds since the epoch: the short forms are completed to RFC 3339, which the
/// event schema's parser reads.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (s[0..4].parse().ok()?, s[5..7].parse().ok()?, s[8..10].parse().ok()?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut full = if b.len() == 10 {
        format!("{s}T00:00")
    } else {
        s.to_string()
    };
    if full.len() == 16
        || full
            .as_bytes()
            .get(16)
            .is_some_and(|c| matches!(c, b'Z' | b'z' | b'+' | b'-'))
    {
        full.insert_str(16, ":00");
    }
    if !full[10..].contains(['Z', 'z', '+', '-']) {
        full.push('Z');
    }
    runstream_schema::json::parse_rfc3339_ms(&full)
}

/// A date relative to `now_ms`: `now`, or `now` plus or minus amounts with units `w` (weeks),
/// `d`, `h`, `m` (minutes), `s` and `ms`, as in `now-7d`, `now - 1d12h`, `now+30m`.
pub fn parse_relative(s: &str, now_ms: i64) -> Option<i64> {
    let rest = s.trim().strip_prefix("now")?.trim_start();
    if rest.is_empty() {
        return Some(now_ms);
    }
    let (sign, mut rest) = match rest.as_bytes()[0] {
        b'-' => (-1i64, rest[1..].trim_start()),
        b'+' => (1, rest[1..].trim_start()),
        _ => return None,
    };
    let mut total: i64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit: i64 = match &rest[..unit_len] {
            "w" => 7 * 86_400_000,
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1000,
            "ms" => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = rest[unit_len..].trim_start();
    }
    now_ms.checked_add(sign * total)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl<'a> Checker<'a> {
    pub fn new(catalog: &'a Catalog) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Checker { catalog, now_ms }
    }

    /// A checker whose relative dates count from `now_ms`.
    pub fn at(catalog: &'a Catalog, now_ms: i64) -> Self {
        Checker { catalog, now_ms }
    }

    /// Parses and checks a filter; empty text selects every run.
    pub fn filter(&self, text: &str) -> Result<Filter, FilterError> {
        if text.trim().is_empty() {
            return Ok(Filter::True);
        }
        let mut p = Parser::new(text)?;
        let e = p.or()?;
        p.end("'and', 'or' or the end")?;
        self.check(e)
    }

    /// Parses a field expression, as used by columns, grouping and aggregates.
    pub fn field(&self, text: &str) -> Result<Field, FilterError> {
        let mut p = Parser::new(text)?;
        let (at, f) = p.field()?;
        p.end("the end of the field")?;
        self.resolve(at, f)
    }

    /// Parses a sort: a field, then `asc` or `desc` (ascending when absent).
    pub fn sort(&self, text: &str) -> Result<Sort, FilterError> {
        let mut p = Parser::new(text)?;
        let (at, f) = p.field()?;
        let descending = if p.eat_word("desc") {
            true
        } else {
            p.eat_word("asc");
            false
        };
        p.end("asc, desc or the end")?;
        Ok(Sort {
            field: self.resolve(at, f)?,
            descending,
        })
    }

    /// A numeric field to aggregate.
    pub fn numeric_field(&self, text: &str) -> Result<Field, FilterError> {
        let f = self.field(text)?;
        if !self.classes(&f).contains(&Class::Number) {
            return err(0, format!("{} has no numeric values to aggregate", display_field(&f)));
        }
        Ok(f)
    }

    fn resolve(&self, at: usize, f: RawField) -> Result<Field, FilterError> {
        match f {
            RawField::System(s) => Ok(Field::System(s)),
            RawField::Tag => err(
                at,
                "tag is a set of labels: it can be filtered on, not sorted, grouped or shown",
            ),
            RawField::Attr(path) => {
                if self.catalog.attributes.iter().any(|(p, _)| *p == path) {
                    Ok(Field::Attr(path))
                } else {
                    err(at, format!("unknown attribute {path:?}: no run of this project has it"))
                }
            }
            RawField::Metric(path, agg) => {
                if self.catalog.metrics.contains(&path) {
                    Ok(Field::Metric(path, agg))
                } else {
                    err(
                        at,
                        format!("unknown metric {path:?}: no run of this project has logged it"),
                    )
                }
            }
        }
    }

    fn classes(&self, f: &Field) -> Vec<Class> {
        match f {
            Field::System(s) => vec![s.class()],
            Field::Metric(..) => vec![Class::Number],
            Field::Attr(path) => {
                let mut out = Vec::new();
                let types = self.catalog.attributes.iter().find(|(p, _)| p == path);
                for t in types.map(|(_, t)| t.as_slice()).unwrap_or_default() {
                    let c = match t.as_str() {
                        "int" | "float" => Class::Number,
                        "string" => Class::String,
                        "bool" => Class::Bool,
                        "datetime" => Class::Datetime,
                        _ => continue,
                    };
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// The literal typed for the field, or an error saying why they cannot be compared.
    fn typed(&self, field: &Field, lit: &Lit) -> Result<Literal, FilterError> {
        let classes = self.classes(field);
        let plain = match &lit.tok {
            Tok::Int(i) => Literal::Number(Number::Int(*i)),
            Tok::Float(f) => Literal::Number(Number::Float(*f)),
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Word(w) => Literal::Bool(w.eq_ignore_ascii_case("true")),
            t => return err(lit.at, format!("expected a value, found {}", t.describe())),
        };
        if classes.contains(&plain.class()) {
            return Ok(plain);
        }
        if let (Literal::Str(s), true) = (&plain, classes.contains(&Class::Datetime)) {
            return match parse_datetime(s).or_else(|| parse_relative(s, self.now_ms)) {
                Some(ms) => Ok(Literal::Datetime(ms)),
                None => err(
                    lit.at,
                    format!(
                        "{} is a date: {s:?} is not one (write 'YYYY-MM-DD', 'YYYY-MM-DDTHH:MM:SSZ' or 'now-7d')",
                        display_field(field)
                    ),
                ),
            };
        }
        let has = if classes.is_empty() {
            "values of no comparable type (string sets)".to_string()
        } else {
            classes.iter().map(|c| c.name()).collect::<Vec<_>>().join(" or ")
        };
        err(
            lit.at,
            format!(
                "cannot compare {} ({has}) with {} ({})",
                display_field(field),
                lit.tok.describe(),
                plain.class().name()
            ),
        )
    }

    fn check(&self, e: Expr) -> Result<Filter, FilterError> {
        Ok(match e {
            Expr::And(v) => Filter::And(v.into_iter().map(|e| self.check(e)).collect::<Result<_, _>>()?),
            Expr::Or(v) => Filter::Or(v.into_iter().map(|e| self.check(e)).collect::<Result<_, _>>()?),
            Expr::Not(e) => Filter::Not(Box::new(self.check(*e)?)),
            Expr::Lineage(direction, kind, name, version) => Filter::Lineage {
                direction,
                kind,
                name,
                version,
            },
            Expr::Exists(_, RawField::Tag) => Filter::Tag(TagTest::Any),
            Expr::Exists(at, f) => Filter::Exists(match self.resolve(at, f)? {
                Field::Metric(p, _) => Field::Metric(p, MetricAgg::Last),
                f => f,
            }),
            Expr::Compare(_, RawField::Tag, op, v) => {
                let t = tag_value(&v)?;
                match op {
                    Cmp::Eq => Filter::Tag(TagTest::OneOf(vec![t])),
                    Cmp::Ne => Filter::Not(Box::new(Filter::Tag(TagTest::OneOf(vec![t])))),
                    _ => return err(v.at, "tags support =, !=, in, not in, like and ilike"),
                }
            }
            Expr::In(_, RawField::Tag, vs, negated) => {
                let t = Filter::Tag(TagTest::OneOf(vs.iter().map(tag_value).collect::<Result<_, _>>()?));
                if negated { Filter::Not(Box::new(t)) } else { t }
            }
            Expr::Like(_, RawField::Tag, p, fold_case, negated) => {
                let t = Filter::Tag(TagTest::Like {
                    pattern: tag_value(&p)?,
                    fold_case,
                });
                if negated { Filter::Not(Box::new(t)) } else { t }
            }
            Expr::Between(at, RawField::Tag, ..) => return err(at, "tags support =, !=, in, not in, like and ilike"),
            Expr::Compare(at, f, op, v) => {
                let field = self.resolve(at, f)?;
                let value = self.typed(&field, &v)?;
                check_state(&field, std::slice::from_ref(&v), std::slice::from_ref(&value))?;
                Filter::Compare { field, op, value }
            }
            Expr::In(at, f, vs, negated) => {
                let field = self.resolve(at, f)?;
                let values = vs
                    .iter()
                    .map(|v| self.typed(&field, v))
                    .collect::<Result<Vec<_>, _>>()?;
                same_class(&vs, &values)?;
                check_state(&field, &vs, &values)?;
                Filter::In { field, values, negated }
            }
            Expr::Between(at, f, lo, hi, negated) => {
                let field = self.resolve(at, f)?;
                let (low, high) = (self.typed(&field, &lo)?, self.typed(&field, &hi)?);
                same_class(&[lo, hi], &[low.clone(), high.clone()])?;
                Filter::Between {
                    field,
                    low,
                    high,
                    negated,
                }
            }
            Expr::Like(at, f, p, fold_case, negated) => {
                let field = self.resolve(at, f)?;
                let Tok::Str(pattern) = &p.tok else {
                    return err(p.at, "like takes a quoted pattern, such as 'resnet-%'");
                };
                if !self.classes(&field).contains(&Class::String) {
                    return err(at, format!("{} has no string values to match", display_field(&field)));
                }
                Filter::Like {
                    field,
                    pattern: pattern.clone(),
                    fold_case,
                    negated,
                }
            }
        })
    }
}

fn tag_value(l: &Lit) -> Result<String, FilterError> {
    match &l.tok {
        Tok::Str(s) => Ok(s.clone()),
        t => err(
            l.at,
            format!("tags are strings: cannot compare them with {}", t.describe()),
        ),
    }
}

fn same_class(lits: &[Lit], values: &[Literal]) -> Result<(), FilterError> {
    if let Some(first) = values.first()
        && let Some(i) = values.iter().position(|v| v.class() != first.class())
    {
        return err(
            lits[i].at,
            format!(
                "values must share one type: {} is a {}, the first a {}",
                lits[i].tok.describe(),
                values[i].class().name(),
                first.class().name()
            ),
        );
    }
    Ok(())
}

fn check_state(field: &Field, lits: &[Lit], values: &[Literal]) -> Result<(), FilterError> {
    if *field != Field::System(SystemField::State) {
        return Ok(());
    }
    for (l, v) in lits.iter().zip(values) {
        if let Literal::Str(s) = v
            && !STATES.contains(&s.as_str())
        {
            return err(l.at, format!("state is one of {}, not {s:?}", STATES.join(", ")));
        }
    }
    Ok(())
}

/// A field as the filter language writes it.
pub fn display_field(f: &Field) -> String {
    let path = |p: &str| {
        if !p.is_empty() && p.chars().all(is_path_char) {
            p.to_string()
        } else {
            format!("\"{}\"", p.replace('"', "\"\""))
        }
    };
    match f {
        Field::System(s) => s.name().to_string(),
        Field::Attr(p) => format!("attr.{}", path(p)),
        Field::Metric(p, MetricAgg::Last) => format!("metric.{}", path(p)),
        Field::Metric(p, agg) => format!("{}(metric.{})", agg.name(), path(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            attributes: vec![
                ("params/lr".into(), vec!["float".into()]),
                ("params/opt".into(), vec!["string".into()]),
                ("mixed".into(), vec!["int".into(), "string".into()]),
                ("when".into(), vec!["datetime".into()]),
                ("labels".into(), vec!["string_set".into()]),
                ("a b".into(), vec!["bool".into()]),
            ],
            metrics: vec!["val/acc".into(), "loss".into()],
        }
    }

    fn parse(s: &str) -> Result<Filter, FilterError> {
        Checker::new(&catalog()).filter(s)
    }

    #[test]
    fn precedence_and_forms() {
        let f = parse("attr.params/lr > 0.01 and metric.val/acc >= 0.9 or not tag = 'x'").unwrap();
        let Filter::Or(v) = f else { panic!("{f:?}") };
        assert!(matches!(&v[0], Filter::And(a) if a.len() == 2));
        assert_eq!(
            v[1],
            Filter::Not(Box::new(Filter::Tag(TagTest::OneOf(vec!["x".into()]))))
        );
        assert_eq!(
            parse("tag != 'x'").unwrap(),
            Filter::Not(Box::new(Filter::Tag(TagTest::OneOf(vec!["x".into()]))))
        );
        assert_eq!(
            parse("max(metric.loss) between 1 and 2.5").unwrap(),
            Filter::Between {
                field: Field::Metric("loss".into(), MetricAgg::Max),
                low: Literal::Number(Number::Int(1)),
                high: Literal::Number(Number::Float(2.5)),
                negated: false,
            }
        );
        assert_eq!(
            parse("attr.\"a b\" = TRUE").unwrap(),
            Filter::Compare {
                field: Field::Attr("a b".into()),
                op: Cmp::Eq,
                value: Literal::Bool(true),
            }
        );
        assert!(matches!(
            parse("state not in ('failed', 'aborted') AND name ilike 'RES%'").unwrap(),
            Filter::And(_)
        ));
        assert_eq!(
            parse("used(dataset, 'imagenet', 'v2')").unwrap(),
            Filter::Lineage {
                direction: Direction::Input,
                kind: ArtifactKind::Dataset,
                name: "imagenet".into(),
                version: Some("v2".into()),
            }
        );
        assert_eq!(parse("  ").unwrap(), Filter::True);
        assert_eq!(
            parse("created >= '2026-11-01'").unwrap(),
            Filter::Compare {
                field: Field::System(SystemField::Created),
                op: Cmp::Ge,
                value: Literal::Datetime(1_793_491_200_000),
            }
        );
        assert!(parse("attr.mixed = 3 or attr.mixed = 'x'").is_ok());
    }

    #[test]
    fn errors_name_their_position() {
        let cases = [
            ("attr.params/lr > 'high'", 17, "cannot compare"),
            ("attr.nope = 1", 0, "unknown attribute"),
            ("metric.nope > 1", 0, "unknown metric"),
            ("bogus = 1", 0, "unknown field"),
            ("name = 'a' and", 14, "expected a field"),
            ("(name = 'a'", 11, "expected ')'"),
            ("name = 'a", 7, "unterminated"),
            ("state = 'runing'", 8, "state is one of"),
            ("created > 'yesterday'", 10, "is a date"),
            ("tag > 'a'", 6, "tags support"),
            ("attr.mixed in (1, 'a')", 18, "share one type"),
            ("name # 1", 5, "unexpected character"),
            ("attr.labels = 'x'", 14, "no comparable type"),
            ("attr.params/lr like 'x%'", 0, "no string values"),
            ("name = 'a' name = 'b'", 11, "expected 'and', 'or'"),
            ("used(thing, 'x')", 5, "artifact kind"),
        ];
        for (text, pos, msg) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.position, pos, "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn dates_parse_to_epoch_milliseconds() {
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_datetime("2000-02-29 12:00"), Some(951_825_600_000));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "2001-02-29",
            "2026-13-01",
            "2026-1-1",
            "2026-01-01T25:00",
            "2026-01-01Tx",
            "soon",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn relative_dates_count_from_now() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_relative("now", now), Some(now));
        assert_eq!(parse_relative("now-7d", now), Some(now - 7 * 86_400_000));
        assert_eq!(parse_relative(" now - 1d12h ", now), Some(now - 36 * 3_600_000));
        assert_eq!(parse_relative("now+30m", now), Some(now + 1_800_000));
        assert_eq!(parse_relative("now-2w1s500ms", now), Some(now - 14 * 86_400_000 - 1500));
        for bad in [
            "now-",
            "now-7",
            "now-7y",
            "now7d",
            "now--7d",
            "today",
            "now-d",
            "now-99999999999999w",
        ] {
            assert_eq!(parse_relative(bad, now), None, "{bad}");
        }
        let cat = Catalog::default();
        let f = Checker::at(&cat, now).filter("created > 'now-7d'").unwrap();
        assert_eq!(
            f,
            Filter::Compare {
                field: Field::System(SystemField::Created),
                op: Cmp::Gt,
                value: Literal::Datetime(now - 7 * 86_400_000),
            }
        );
        let e = Checker::at(&cat, now).filter("created > 'now-7x'").unwrap_err();
        assert!(e.message.contains("'now-7d'"), "{e}");
    }

    #[test]
    fn sorts_and_fields() {
        let c = catalog();
        let ch = Checker::new(&c);
        assert_eq!(
            ch.sort("mean(metric.loss) desc").unwrap(),
            Sort {
                field: Field::Metric("loss".into(), MetricAgg::Mean),
                descending: true
            }
        );
        assert!(!ch.sort("created").unwrap().descending);
        assert!(ch.sort("tag").is_err());
        assert!(ch.numeric_field("attr.params/opt").is_err());
        assert_eq!(display_field(&ch.field("attr.\"a b\"").unwrap()), "attr.\"a b\"");
        assert_eq!(
            display_field(&ch.field("count(metric.val/acc)").unwrap()),
            "count(metric.val/acc)"
        );
    }
}
