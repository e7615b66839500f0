//! Run search against a reference evaluator: random runs (attributes of every type, metrics,
//! tags, lineage, system fields) in two projects with the same run ids, random filters, sorts,
//! page sizes and groupings. Every filter is printed as text and parsed back, so the parser is
//! held to the typed form too. The backend must return exactly the runs, in exactly the order,
//! that the evaluator written here from the contract in `runstream_views::search` says.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runstream_query::filter::{Checker, display_field};
use runstream_schema::{ArtifactKind, Direction, RunState, Value};
use runstream_views::search::*;
use runstream_views::*;

const PROJECT: &str = "w/p";
const OTHER: &str = "w/other";
const RUNS: usize = 60;

/// Attribute paths and the types each may take ("mixed" takes two).
const ATTRS: &[(&str, &[&str])] = &[
    ("params/lr", &["float"]),
    ("params/layers", &["int"]),
    ("params/opt", &["string"]),
    ("flags/fast", &["bool"]),
    ("data/when", &["datetime"]),
    ("mixed", &["int", "string"]),
    ("labels", &["string_set"]),
    ("odd path", &["float"]),
];
const METRICS: &[&str] = &["loss", "val/acc", "lr"];
const WORDS: &[&str] = &[
    "adam",
    "sgd",
    "Adam",
    "res_net",
    "resnet-50",
    "a%b",
    "",
    "zeta",
    "ж",
    "c:\\x",
];
/// Numbers at the edges: past 2^53 (where floats skip integers), past the Int64 range,
/// subnormal, and negative zero.
const EDGE_FLOATS: &[f64] = &[1e19, -1e19, 9.3e18, 9_007_199_254_740_992.0, 5e-324, 1e-310, -0.0];
const EDGE_INTS: &[i64] = &[9_007_199_254_740_993, i64::MAX, i64::MIN, -9_007_199_254_740_993];
const TAGS: &[&str] = &["best", "baseline", "Best", "exp-1", "exp-2"];
const DATASETS: &[&str] = &["imagenet", "cifar"];
const VERSIONS: &[&str] = &["v1", "v2"];

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn random_value(rng: &mut StdRng, t: &str) -> Value {
    match t {
        "float" => match rng.random_range(0..12) {
            0 => Value::Float(f64::NAN),
            1 => Value::Float(-0.0),
            2 => Value::Float(*pick(rng, EDGE_FLOATS)),
            _ => Value::Float(f64::from(rng.random_range(-8..8)) * 0.25),
        },
        "int" => match rng.random_range(0..12) {
            0 => Value::Int(*pick(rng, EDGE_INTS)),
            _ => Value::Int(rng.random_range(-3..5)),
        },
        "string" => Value::String(pick(rng, WORDS).to_string()),
        "bool" => Value::Bool(rng.random()),
        "datetime" => Value::Datetime(1_700_000_000_000 + rng.random_range(0..5) * 86_400_000),
        "string_set" => Value::StringSet(vec![pick(rng, WORDS).to_string()]),
        _ => unreachable!(),
    }
}

fn random_batch(rng: &mut StdRng, project: &str) -> RowBatch {
    let mut b = RowBatch::default();
    for i in 0..RUNS {
        let run = format!("r{i:02}");
        let created_ms = 1_700_000_000_000 + rng.random_range(0..20) * 1000;
        let state = *pick(
            rng,
            &[
                RunState::Running,
                RunState::Finished,
                RunState::Failed,
                RunState::Aborted,
            ],
        );
        b.runs.push(RunPatch {
            project: project.into(),
            run: run.clone(),
            created: Some(RunCreatedRow {
                name: pick(rng, WORDS).to_string(),
                experiment: pick(rng, &["e1", "e2"]).to_string(),
                parent_run: rng
                    .random_bool(0.3)
                    .then(|| format!("r{:02}", rng.random_range(0..RUNS))),
                description: String::new(),
                owner: pick(rng, &["ann", "bob", "cy"]).to_string(),
                created_ms,
            }),
            state: Some((state, String::new(), created_ms + rng.random_range(0..5) * 1500)),
            heartbeat_ms: None,
            deleted: Some(rng.random_bool(0.1)),
            updated_ms: created_ms + 10_000,
        });
        for (path, types) in ATTRS {
            if rng.random_bool(0.7) {
                b.attributes.push(AttrRow {
                    project: project.into(),
                    run: run.clone(),
                    path: path.to_string(),
                    value: Some({
                        let t = *pick(rng, types);
                        random_value(rng, t)
                    }),
                });
            }
        }
        for tag in TAGS {
            if rng.random_bool(0.3) {
                b.tags.push(TagRow {
                    project: project.into(),
                    run: run.clone(),
                    tag: tag.to_string(),
                    present: true,
                });
            }
        }
        for path in METRICS {
            if rng.random_bool(0.7) {
                let n = rng.random_range(1..6);
                let values = (0..n)
                    .map(|_| {
                        if rng.random_bool(0.1) {
                            f64::NAN
                        } else {
                            f64::from(rng.random_range(-8..8)) * 0.25
                        }
                    })
                    .collect();
                b.float_series.push(FloatSeriesRows {
                    key: SeriesKey {
                        project: project.into(),
                        run: run.clone(),
                        path: path.to_string(),
                    },
                    steps: (0..n).collect(),
                    times_ms: (0..n).map(|s| created_ms + s).collect(),
                    values,
                });
            }
        }
        if rng.random_bool(0.5) {
            b.lineage.push(LineageRow {
                project: project.into(),
                run: run.clone(),
                direction: *pick(rng, &[Direction::Input, Direction::Output]),
                kind: *pick(rng, &[ArtifactKind::Dataset, ArtifactKind::Model]),
                name: pick(rng, DATASETS).to_string(),
                version: pick(rng, VERSIONS).to_string(),
                digest: String::new(),
                uri: String::new(),
                time_ms: created_ms,
            });
        }
    }
    b.checkpoint = vec![(0, 1)];
    b
}

// ---- random filters ----

fn random_field(rng: &mut StdRng, sortable: bool) -> Field {
    match rng.random_range(0..3) {
        0 => Field::System(*pick(rng, &SystemField::ALL)),
        1 => Field::Attr(pick(rng, ATTRS).0.to_string()),
        _ => {
            let aggs = [
                MetricAgg::Last,
                MetricAgg::Min,
                MetricAgg::Max,
                MetricAgg::Mean,
                MetricAgg::Count,
            ];
            let agg = if sortable {
                *pick(rng, &aggs)
            } else {
                *pick(rng, &aggs[..4])
            };
            Field::Metric(pick(rng, METRICS).to_string(), agg)
        }
    }
}

fn classes(field: &Field) -> Vec<Class> {
    match field {
        Field::System(s) => vec![s.class()],
        Field::Metric(..) => vec![Class::Number],
        Field::Attr(p) => {
            let types = ATTRS.iter().find(|(q, _)| q == p).expect("known").1;
            let mut out = Vec::new();
            for t in types {
                let c = match *t {
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

fn random_literal(rng: &mut StdRng, class: Class, field: &Field) -> Literal {
    match class {
        Class::Number => {
            if rng.random_bool(0.1) {
                if rng.random() {
                    Literal::Number(Number::Int(*pick(rng, EDGE_INTS)))
                } else {
                    Literal::Number(Number::Float(*pick(rng, EDGE_FLOATS)))
                }
            } else if rng.random_bool(0.5) {
                Literal::Number(Number::Int(rng.random_range(-3..5)))
            } else {
                Literal::Number(Number::Float(f64::from(rng.random_range(-8..8)) * 0.25))
            }
        }
        Class::String => Literal::Str(match field {
            Field::System(SystemField::State) => pick(rng, &["running", "finished", "failed", "aborted"]).to_string(),
            Field::System(SystemField::Owner) => pick(rng, &["ann", "bob", "cy", "dee"]).to_string(),
            Field::System(SystemField::Run | SystemField::Parent) => format!("r{:02}", rng.random_range(0..RUNS)),
            Field::System(SystemField::Experiment) => pick(rng, &["e1", "e2"]).to_string(),
            _ => pick(rng, WORDS).to_string(),
        }),
        Class::Bool => Literal::Bool(rng.random()),
        Class::Datetime => Literal::Datetime(match field {
            Field::Attr(_) => 1_700_000_000_000 + rng.random_range(0..5) * 86_400_000,
            _ => 1_700_000_000_000 + rng.random_range(0..30) * 1000,
        }),
    }
}

fn random_pattern(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "%",
            "a%",
            "%am",
            "res%",
            "res\\_net",
            "_dam",
            "%\\%%",
            "RES%",
            "%-%",
            "B%",
            "exp-_",
            "%e%",
            // An escaped ordinary character is that character; a lone trailing `\` is itself.
            "\\adam",
            "%\\\\%",
            "c:\\",
            "%\\",
        ],
    )
    .to_string()
}

fn random_filter(rng: &mut StdRng, depth: u32) -> Filter {
    if depth > 0 && rng.random_bool(0.4) {
        let n = rng.random_range(2..4);
        let parts = (0..n).map(|_| random_filter(rng, depth - 1)).collect();
        return match rng.random_range(0..3) {
            0 => Filter::And(parts),
            1 => Filter::Or(parts),
            _ => Filter::Not(Box::new(random_filter(rng, depth - 1))),
        };
    }
    match rng.random_range(0..10) {
        0 => Filter::Exists(match random_field(rng, false) {
            Field::Metric(p, _) => Field::Metric(p, MetricAgg::Last),
            f => f,
        }),
        1 => Filter::Tag(match rng.random_range(0..3) {
            0 => TagTest::Any,
            1 => TagTest::OneOf(
                (0..rng.random_range(1..3))
                    .map(|_| pick(rng, TAGS).to_string())
                    .collect(),
            ),
            _ => TagTest::Like {
                pattern: random_pattern(rng),
                fold_case: rng.random(),
            },
        }),
        2 => Filter::Lineage {
            direction: *pick(rng, &[Direction::Input, Direction::Output]),
            kind: *pick(rng, &[ArtifactKind::Dataset, ArtifactKind::Model]),
            name: pick(rng, DATASETS).to_string(),
            version: rng.random_bool(0.5).then(|| pick(rng, VERSIONS).to_string()),
        },
        _ => loop {
            let field = random_field(rng, true);
            let cs = classes(&field);
            if cs.is_empty() {
                continue;
            }
            let class = *pick(rng, &cs);
            let negated = rng.random();
            break match rng.random_range(0..5) {
                0 => Filter::In {
                    values: (0..rng.random_range(1..4))
                        .map(|_| random_literal(rng, class, &field))
                        .collect(),
                    field,
                    negated,
                },
                1 => {
                    let (a, b) = (random_literal(rng, class, &field), random_literal(rng, class, &field));
                    Filter::Between {
                        field,
                        low: a,
                        high: b,
                        negated,
                    }
                }
                2 if class == Class::String => Filter::Like {
                    field,
                    pattern: random_pattern(rng),
                    fold_case: rng.random(),
                    negated,
                },
                _ => Filter::Compare {
                    op: *pick(rng, &[Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge]),
                    value: random_literal(rng, class, &field),
                    field,
                },
            };
        },
    }
}

// ---- printing filters as text ----

fn civil(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn lit(l: &Literal) -> String {
    match l {
        Literal::Number(Number::Int(i)) => i.to_string(),
        Literal::Number(Number::Float(f)) => format!("{f:?}"),
        Literal::Str(s) => quote(s),
        Literal::Bool(b) => b.to_string(),
        Literal::Datetime(t) => quote(&civil(*t)),
    }
}

fn print(f: &Filter) -> String {
    let not = |n: bool| if n { "not " } else { "" };
    match f {
        Filter::True => String::new(),
        Filter::And(v) => format!("({})", v.iter().map(print).collect::<Vec<_>>().join(" and ")),
        Filter::Or(v) => format!("({})", v.iter().map(print).collect::<Vec<_>>().join(" OR ")),
        Filter::Not(f) => format!("not ({})", print(f)),
        Filter::Compare { field, op, value } => {
            let op = match op {
                Cmp::Eq => "=",
                Cmp::Ne => "!=",
                Cmp::Lt => "<",
                Cmp::Le => "<=",
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
            };
            format!("{} {op} {}", display_field(field), lit(value))
        }
        Filter::In { field, values, negated } => format!(
            "{} {}in ({})",
            display_field(field),
            not(*negated),
            values.iter().map(lit).collect::<Vec<_>>().join(", ")
        ),
        Filter::Between {
            field,
            low,
            high,
            negated,
        } => format!(
            "{} {}between {} and {}",
            display_field(field),
            not(*negated),
            lit(low),
            lit(high)
        ),
        Filter::Like {
            field,
            pattern,
            fold_case,
            negated,
        } => format!(
            "{} {}{} {}",
            display_field(field),
            not(*negated),
            if *fold_case { "ilike" } else { "like" },
            quote(pattern)
        ),
        Filter::Exists(field) => format!("exists {}", display_field(field)),
        Filter::Tag(TagTest::Any) => "exists tag".into(),
        Filter::Tag(TagTest::OneOf(t)) => {
            format!("tag in ({})", t.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", "))
        }
        Filter::Tag(TagTest::Like { pattern, fold_case }) => {
            format!("tag {} {}", if *fold_case { "ilike" } else { "like" }, quote(pattern))
        }
        Filter::Lineage {
            direction,
            kind,
            name,
            version,
        } => format!(
            "{}({}, {}{})",
            if *direction == Direction::Input {
                "used"
            } else {
                "produced"
            },
            kind.as_str(),
            quote(name),
            version.as_ref().map(|v| format!(", {}", quote(v))).unwrap_or_default()
        ),
    }
}

// ---- the reference evaluator ----

/// `like` as the contract defines it: `%`, `_` (one character), `\` escapes; ASCII folding.
fn like(s: &str, pattern: &str, fold: bool) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Ch(char),
    }
    let mut p = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        p.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => P::Ch(it.next().unwrap_or('\\')),
            c => P::Ch(c),
        });
    }
    let fold_c = |c: char| if fold { c.to_ascii_lowercase() } else { c };
    let s: Vec<char> = s.chars().collect();
    fn go(s: &[char], p: &[P], f: &dyn Fn(char) -> char) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(P::Any) => (0..=s.len()).any(|i| go(&s[i..], &p[1..], f)),
            Some(P::One) => !s.is_empty() && go(&s[1..], &p[1..], f),
            Some(P::Ch(c)) => s.first().is_some_and(|x| f(*x) == f(*c)) && go(&s[1..], &p[1..], f),
        }
    }
    go(&s, &p, &fold_c)
}

fn value_of(d: &RunDetail, field: &Field) -> Option<Literal> {
    match field {
        Field::System(s) => s.value(&d.run),
        Field::Attr(p) => d
            .attributes
            .iter()
            .find(|(q, _)| q == p)
            .and_then(|(_, v)| Literal::of_value(v)),
        Field::Metric(p, agg) => {
            let s = d.series.iter().find(|s| s.path == *p && s.kind == "float")?;
            let f = |v: Option<f64>| v.filter(|x| !x.is_nan()).map(|x| Literal::Number(Number::Float(x)));
            match agg {
                MetricAgg::Last => f(s.last_value),
                MetricAgg::Min => f(s.min),
                MetricAgg::Max => f(s.max),
                MetricAgg::Mean => f(s.mean),
                MetricAgg::Count => Some(Literal::Number(Number::Int(s.count as i64))),
            }
        }
    }
}

/// The order of two literals of one class; `None` if the classes differ.
fn order(a: &Literal, b: &Literal) -> Option<Ordering> {
    match (a, b) {
        (Literal::Number(x), Literal::Number(y)) => x.partial_cmp_exact(*y),
        (Literal::Str(x), Literal::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Literal::Bool(x), Literal::Bool(y)) => Some(x.cmp(y)),
        (Literal::Datetime(x), Literal::Datetime(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn eval(f: &Filter, d: &RunDetail) -> bool {
    let has = |field: &Field, class: Class| value_of(d, field).filter(|v| v.class() == class);
    match f {
        Filter::True => true,
        Filter::And(v) => v.iter().all(|f| eval(f, d)),
        Filter::Or(v) => v.iter().any(|f| eval(f, d)),
        Filter::Not(f) => !eval(f, d),
        Filter::Compare { field, op, value } => has(field, value.class())
            .and_then(|v| order(&v, value))
            .is_some_and(|o| op.holds(o)),
        Filter::In { field, values, negated } => has(field, values[0].class())
            .is_some_and(|v| values.iter().any(|x| order(&v, x) == Some(Ordering::Equal)) != *negated),
        Filter::Between {
            field,
            low,
            high,
            negated,
        } => has(field, low.class()).is_some_and(|v| {
            let inside = order(&v, low).is_some_and(|o| o != Ordering::Less)
                && order(&v, high).is_some_and(|o| o != Ordering::Greater);
            inside != *negated
        }),
        Filter::Like {
            field,
            pattern,
            fold_case,
            negated,
        } => match has(field, Class::String) {
            Some(Literal::Str(s)) => like(&s, pattern, *fold_case) != *negated,
            _ => false,
        },
        Filter::Exists(field) => match field {
            Field::System(_) => value_of(d, field).is_some(),
            Field::Attr(p) => d.attributes.iter().any(|(q, _)| q == p),
            Field::Metric(p, _) => d.series.iter().any(|s| s.path == *p && s.kind == "float"),
        },
        Filter::Tag(TagTest::Any) => !d.tags.is_empty(),
        Filter::Tag(TagTest::OneOf(t)) => d.tags.iter().any(|x| t.contains(x)),
        Filter::Tag(TagTest::Like { pattern, fold_case }) => d.tags.iter().any(|t| like(t, pattern, *fold_case)),
        Filter::Lineage {
            direction,
            kind,
            name,
            version,
        } => d.lineage.iter().any(|l| {
            l.direction == *direction
                && l.kind == *kind
                && l.name == *name
                && version.as_ref().is_none_or(|v| *v == l.version)
        }),
    }
}

fn sort_key(d: &RunDetail, f: &Field) -> Option<SortValue> {
    value_of(d, f).map(|v| v.sort_key())
}

fn expected_order(runs: &[RunDetail], s: &RunSearch) -> Vec<String> {
    let mut hits: Vec<(&RunDetail, Option<SortValue>)> = runs
        .iter()
        .filter(|d| (s.include_deleted || !d.run.deleted) && eval(&s.filter, d))
        .map(|d| (d, sort_key(d, &s.sort.field)))
        .collect();
    hits.sort_by(|(a, ka), (b, kb)| {
        let o = match (ka, kb) {
            (Some(x), Some(y)) => x.cmp_contract(y).then_with(|| a.run.run.cmp(&b.run.run)),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => a.run.run.cmp(&b.run.run),
        };
        if s.sort.descending { o.reverse() } else { o }
    });
    hits.into_iter().map(|(d, _)| d.run.run.clone()).collect()
}

fn numeric(v: Option<Literal>, field: &Field) -> Option<f64> {
    match (field, v?) {
        (Field::System(_) | Field::Metric(..), Literal::Number(n)) => Some(n.as_f64()),
        (Field::Attr(_), Literal::Number(n)) => Some(n.as_f64()),
        _ => None,
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        (None, None) => true,
        _ => false,
    }
}

fn check_groups(runs: &[RunDetail], g: &RunGrouping, got: &Groups, context: &str) {
    let mut groups: Vec<(Option<SortValue>, Vec<&RunDetail>)> = Vec::new();
    for d in runs
        .iter()
        .filter(|d| (g.include_deleted || !d.run.deleted) && eval(&g.filter, d))
    {
        let k = sort_key(d, &g.by);
        match groups.iter_mut().find(|(x, _)| match (x, &k) {
            (Some(a), Some(b)) => a.cmp_contract(b) == Ordering::Equal,
            (None, None) => true,
            _ => false,
        }) {
            Some((_, v)) => v.push(d),
            None => groups.push((k, vec![d])),
        }
    }
    groups.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(x), Some(y)) => x.cmp_contract(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    assert_eq!(got.truncated, groups.len() > g.limit, "{context}");
    groups.truncate(g.limit);
    assert_eq!(got.groups.len(), groups.len(), "{context}: {got:?}");
    for ((key, members), have) in groups.iter().zip(&got.groups) {
        let same_key = match (key, &have.key) {
            (Some(a), Some(b)) => a.cmp_contract(b) == Ordering::Equal,
            (None, None) => true,
            _ => false,
        };
        assert!(same_key, "{context}: key {key:?} vs {:?}", have.key);
        assert_eq!(have.runs, members.len() as u64, "{context}: group {key:?}");
        for (field, stats) in g.aggregates.iter().zip(&have.aggregates) {
            let xs: Vec<f64> = members
                .iter()
                .filter_map(|d| numeric(value_of(d, field), field))
                .collect();
            let min = xs.iter().copied().reduce(f64::min);
            let max = xs.iter().copied().reduce(f64::max);
            let mean = (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
            assert_eq!(stats.count, xs.len() as u64, "{context}: {field:?} in {key:?}");
            assert!(
                close(stats.min, min) && close(stats.max, max),
                "{context}: {field:?} {stats:?}"
            );
            // A sum of huge values of both signs may cancel: the server's order of addition
            // decides the rounding, so the mean is held to the scale of its terms.
            let scale = xs.iter().fold(0f64, |m, x| m.max(x.abs()));
            let mean_close = match (stats.mean, mean) {
                (Some(a), Some(b)) => close(Some(a), Some(b)) || (a - b).abs() <= 1e-12 * scale,
                (a, b) => close(a, b),
            };
            assert!(mean_close, "{context}: {field:?} mean {stats:?} vs {mean:?}");
        }
    }
}

async fn seeded(views: &dyn ViewStore, seed: u64) -> (Catalog, Vec<RunDetail>) {
    let mut rng = StdRng::seed_from_u64(seed);
    views.apply(random_batch(&mut rng, PROJECT)).await.unwrap();
    views.apply(random_batch(&mut rng, OTHER)).await.unwrap();
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push(views.get_run(PROJECT, &format!("r{i:02}")).await.unwrap().unwrap());
    }
    (views.catalog(PROJECT).await.unwrap(), runs)
}

/// Runs `cases` random searches and groupings over the runs of `seed` in `views` (empty).
/// Returns how many runs the searches selected, so callers can check the filters meant something.
async fn agrees_with_the_reference_evaluator(views: &dyn ViewStore, seed: u64, cases: usize) -> usize {
    let mut checked_hits = 0usize;
    {
        let (catalog, runs) = seeded(views, seed).await;
        let checker = Checker::new(&catalog);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        for case in 0..cases {
            let filter = if case % 10 == 0 {
                Filter::True
            } else {
                random_filter(&mut rng, 2)
            };
            let text = print(&filter);
            let parsed = checker.filter(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, filter, "{text}");
            let sort = Sort {
                field: random_field(&mut rng, true),
                descending: rng.random(),
            };
            let columns: Vec<Field> = (0..rng.random_range(0..3))
                .map(|_| random_field(&mut rng, true))
                .collect();
            let mut search = RunSearch {
                project: PROJECT.into(),
                filter: parsed,
                include_deleted: rng.random_bool(0.3),
                sort,
                after: None,
                limit: rng.random_range(1..9),
                columns,
            };
            let context = format!("seed {seed} case {case}: {text} sorted by {:?}", search.sort);
            let want = expected_order(&runs, &search);
            let mut got = Vec::new();
            loop {
                let page = views.search_runs(search.clone()).await.unwrap();
                assert!(page.runs.len() <= search.limit, "{context}");
                for f in &page.runs {
                    let d = runs
                        .iter()
                        .find(|d| d.run.run == f.run.run)
                        .expect("a run of the project");
                    assert_eq!(f.run, d.run, "{context}");
                    for (col, v) in search.columns.iter().zip(&f.columns) {
                        let expect = match col {
                            Field::Attr(p) => d.attributes.iter().find(|(q, _)| q == p).map(|(_, v)| v.clone()),
                            Field::System(_) => None,
                            // A column shows the last value as it is, NaN included.
                            Field::Metric(p, MetricAgg::Last) => d
                                .series
                                .iter()
                                .find(|s| s.path == *p && s.kind == "float")
                                .and_then(|s| s.last_value)
                                .map(Value::Float),
                            Field::Metric(..) => value_of(d, col).map(|l| match l {
                                Literal::Number(Number::Int(i)) => Value::Int(i),
                                Literal::Number(Number::Float(x)) => Value::Float(x),
                                _ => unreachable!(),
                            }),
                        };
                        // NaN never equals itself: compare what the API would print.
                        assert_eq!(format!("{v:?}"), format!("{expect:?}"), "{context}: column {col:?}");
                    }
                    got.push(f.run.run.clone());
                }
                match page.next {
                    Some(c) => search.after = Some(c),
                    None => break,
                }
                assert!(got.len() <= RUNS, "{context}: paging does not end");
            }
            assert_eq!(got, want, "{context}");
            checked_hits += want.len();

            let grouping = RunGrouping {
                project: PROJECT.into(),
                filter: search.filter.clone(),
                include_deleted: search.include_deleted,
                by: random_field(&mut rng, true),
                // Now and then very many, as a wide dashboard asks.
                aggregates: (0..if case % 20 == 7 { 120 } else { rng.random_range(0..3) })
                    .map(|_| {
                        loop {
                            let f = random_field(&mut rng, true);
                            if classes(&f).contains(&Class::Number) {
                                break f;
                            }
                        }
                    })
                    .collect(),
                limit: rng.random_range(1..12),
            };
            let got = views.group_runs(grouping.clone()).await.unwrap();
            check_groups(
                &runs,
                &grouping,
                &got,
                &format!("{context}; grouped by {:?}", grouping.by),
            );
        }
    }
    checked_hits
}

#[tokio::test]
async fn sqlite_search_agrees_with_the_reference_evaluator() {
    let mut hits = 0;
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let views = SqliteViews::open(dir.path().join("v.db")).await.unwrap();
        hits += agrees_with_the_reference_evaluator(&views, seed, 150).await;
    }
    // The filters must select something often enough to mean anything.
    assert!(hits > 6 * 150 * 5, "only {hits} hits");
}

/// The same cases against a real ClickHouse server (fewer of them: every search is a round trip
/// to a server, where SQLite answers in process).
#[tokio::test]
async fn clickhouse_search_agrees_with_the_reference_evaluator() {
    let mut hits = 0;
    for seed in 0..2u64 {
        let url = runstream_testkit::clickhouse_url(&format!("search{seed}"));
        let views = ClickHouseViews::open(&url).await.unwrap();
        hits += agrees_with_the_reference_evaluator(&views, seed, 60).await;
    }
    assert!(hits > 2 * 60 * 5, "only {hits} hits");
}
