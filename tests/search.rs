//! Run search over HTTP against the real binary: filter, sort, columns, paging, groups, the field
//! catalog, and a corpus of bad filters each refused with a 400 that names the field and the
//! position at fault.

mod common;

use common::{Server, client, event_id, post_events};
use serde_json::{Value, json};

const PROJECT: &str = "default";

async fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(s.url(&format!("/api/v1/projects/{PROJECT}/{path}")))
        .bearer_auth(&s.token)
        .json(body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Five runs: (id, lr, optimizer, accuracy points, tags, dataset version, final state).
async fn seed(s: &Server) -> String {
    let runs = [
        ("a", 0.1, "adam", vec![0.5, 0.91, 0.95], vec!["best"], "v2", "finished"),
        ("b", 0.01, "sgd", vec![0.6, 0.97, 0.96], vec![], "v2", "finished"),
        ("c", 0.001, "adam", vec![0.2, 0.4], vec!["baseline"], "v1", "failed"),
        (
            "d",
            0.01,
            "adam",
            vec![0.93, 0.94],
            vec!["best", "baseline"],
            "v2",
            "running",
        ),
        ("e", 0.05, "Adam", vec![], vec![], "v1", "running"),
    ];
    let mut events = Vec::new();
    for (run, lr, opt, acc, tags, version, state) in runs {
        events.push(json!({"id": event_id(), "run": run, "run_created": {"name": format!("resnet-{run}")}}));
        events.push(json!({"id": event_id(), "run": run, "attributes_set": {"attributes": {
            "params": {"lr": lr, "optimizer": opt}, "odd key": run == "a"}}}));
        if !acc.is_empty() {
            let steps: Vec<i64> = (0..acc.len() as i64).collect();
            events.push(json!({"id": event_id(), "run": run, "float_points": {
                "series": "val/acc", "steps": steps, "values": acc}}));
        }
        if !tags.is_empty() {
            events.push(json!({"id": event_id(), "run": run, "tags_added": {"tags": tags}}));
        }
        events.push(json!({"id": event_id(), "run": run, "lineage": {
            "direction": "input", "kind": "dataset", "name": "imagenet", "version": version}}));
        if state != "running" {
            events.push(json!({"id": event_id(), "run": run, "run_state": {"state": state}}));
        }
    }
    let (status, body) = post_events(s, PROJECT, &json!({ "events": events })).await;
    assert_eq!(status, 200, "{body}");
    body["position"].as_str().expect("position").to_string()
}

fn ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs in {body}"))
        .iter()
        .map(|r| r["run"].as_str().expect("run id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn search_filters_sorts_pages_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let position = seed(&s).await;

    // The issue's example, in small: a dataset version, an accuracy threshold, newest-first by
    // default, with chosen columns.
    let (st, body) = post(
        &s,
        "runs:search",
        &json!({
            "filter": "used(dataset, 'imagenet', 'v2') and max(metric.val/acc) > 0.93",
            "sort": "max(metric.val/acc) desc",
            "columns": ["attr.params/lr", "max(metric.val/acc)", "metric.val/acc", "state", "attr.\"odd key\""],
            "min_position": position,
        }),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids(&body), ["b", "a", "d"]);
    let a = &body["runs"][1];
    assert_eq!(a["columns"]["attr.params/lr"], json!(0.1));
    assert_eq!(a["columns"]["max(metric.val/acc)"], json!(0.95));
    assert_eq!(a["columns"]["metric.val/acc"], json!(0.95));
    assert_eq!(a["columns"]["state"], json!("finished"));
    assert_eq!(a["columns"]["attr.\"odd key\""], json!(true));
    assert_eq!(body["runs"][0]["columns"]["attr.\"odd key\""], json!(false));
    assert_eq!(body["next_cursor"], Value::Null);

    // or, not, in, like / ilike, tags, exists; runs lacking the sort field come last.
    let cases = [
        (
            "attr.params/optimizer = 'adam' or tag = 'best'",
            "attr.params/lr asc",
            vec!["c", "d", "a"],
        ),
        (
            "attr.params/optimizer ilike 'ADAM'",
            "run desc",
            vec!["e", "d", "c", "a"],
        ),
        ("attr.params/optimizer like 'A%'", "", vec!["e"]),
        ("not tag in ('best', 'baseline')", "run", vec!["b", "e"]),
        ("tag = 'best' and tag != 'baseline'", "run", vec!["a"]),
        ("not exists metric.val/acc", "run", vec!["e"]),
        ("state in ('finished', 'failed') and not exists tag", "run", vec!["b"]),
        (
            "attr.params/lr between 0.01 and 0.05",
            "metric.val/acc desc",
            vec!["b", "d", "e"],
        ),
        ("exists finished", "finished", vec!["a", "b", "c"]),
        ("", "min(metric.val/acc) asc", vec!["c", "a", "b", "d", "e"]),
        ("count(metric.val/acc) >= 3", "run", vec!["a", "b"]),
        (
            "name like 'resnet-_'",
            "attr.params/lr desc",
            vec!["a", "e", "d", "b", "c"],
        ),
    ];
    for (filter, sort, want) in cases {
        let (st, body) = post(&s, "runs:search", &json!({"filter": filter, "sort": sort})).await;
        assert_eq!(st, 200, "{filter}: {body}");
        assert_eq!(ids(&body), want, "{filter} sorted by {sort:?}");
    }

    // Keyset paging through GET, one run a page, across the runs that lack the sort field.
    let mut cursor = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = client()
            .get(s.url(&format!("/api/v1/projects/{PROJECT}/runs")))
            .query(&[
                ("filter", "exists attr.params/lr"),
                ("sort", "last(metric.val/acc) desc"),
                ("limit", "2"),
            ])
            .query(&[("cursor", cursor.as_str())])
            .bearer_auth(&s.token)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        seen.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["b", "a", "d", "c", "e"]);

    // Groups: by optimizer, with accuracy and learning-rate summaries.
    let (st, body) = post(
        &s,
        "runs:groups",
        &json!({"group_by": "attr.params/optimizer", "aggregates": ["max(metric.val/acc)", "attr.params/lr"]}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let groups = body["groups"].as_array().expect("groups");
    let keys: Vec<&Value> = groups.iter().map(|g| &g["key"]).collect();
    assert_eq!(keys, [&json!("Adam"), &json!("adam"), &json!("sgd")]);
    let adam = &groups[1];
    assert_eq!(adam["runs"], json!(3));
    assert_eq!(adam["aggregates"]["max(metric.val/acc)"]["count"], json!(3));
    assert_eq!(adam["aggregates"]["max(metric.val/acc)"]["max"], json!(0.95));
    assert_eq!(adam["aggregates"]["max(metric.val/acc)"]["min"], json!(0.4));
    assert_eq!(adam["aggregates"]["attr.params/lr"]["max"], json!(0.1));
    assert_eq!(body["truncated"], json!(false));

    // The catalog a filter editor completes from.
    let r = client()
        .get(s.url(&format!("/api/v1/projects/{PROJECT}/fields")))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    let fields: Value = r.json().await.expect("json");
    let attrs: Vec<&str> = fields["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|a| a["field"].as_str().expect("field"))
        .collect();
    assert_eq!(attrs, ["attr.\"odd key\"", "attr.params/lr", "attr.params/optimizer"]);
    assert_eq!(fields["metrics"][0]["field"], json!("metric.val/acc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_filters_get_a_400_naming_field_and_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let position = seed(&s).await;
    let (st, _) = post(&s, "runs:search", &json!({"min_position": position})).await;
    assert_eq!(st, 200);

    // (request body, field at fault, position, words the message must hold)
    let cases: Vec<(Value, &str, Option<u64>, &[&str])> = vec![
        (
            json!({"filter": "attr.params/lr > 'high'"}),
            "filter",
            Some(17),
            &["cannot compare", "attr.params/lr"],
        ),
        (
            json!({"filter": "attr.nope = 1"}),
            "filter",
            Some(0),
            &["unknown attribute", "nope"],
        ),
        (
            json!({"filter": "metric.nope > 1"}),
            "filter",
            Some(0),
            &["unknown metric"],
        ),
        (
            json!({"filter": "colour = 'red'"}),
            "filter",
            Some(0),
            &["unknown field", "colour"],
        ),
        (
            json!({"filter": "name = 'a' and"}),
            "filter",
            Some(14),
            &["expected a field"],
        ),
        (
            json!({"filter": "(state = 'failed'"}),
            "filter",
            Some(17),
            &["expected ')'"],
        ),
        (
            json!({"filter": "name = 'unterminated"}),
            "filter",
            Some(7),
            &["unterminated"],
        ),
        (
            json!({"filter": "state = 'crashed'"}),
            "filter",
            Some(8),
            &["state is one of"],
        ),
        (
            json!({"filter": "created > 'last week'"}),
            "filter",
            Some(10),
            &["is a date"],
        ),
        (json!({"filter": "tag > 'a'"}), "filter", Some(6), &["tags support"]),
        (
            json!({"filter": "name in ('a', 1)"}),
            "filter",
            Some(14),
            &["cannot compare"],
        ),
        (
            json!({"filter": "duration > 1 1"}),
            "filter",
            Some(13),
            &["expected 'and', 'or'"],
        ),
        (
            json!({"filter": "name ; drop table runs"}),
            "filter",
            Some(5),
            &["unexpected character"],
        ),
        (
            json!({"filter": "used(car, 'x')"}),
            "filter",
            Some(5),
            &["artifact kind"],
        ),
        (
            json!({"sort": "max(attr.params/lr)"}),
            "sort",
            Some(4),
            &["takes a metric"],
        ),
        (json!({"sort": "tag desc"}), "sort", Some(0), &["tag is a set"]),
        (
            json!({"sort": "created sideways"}),
            "sort",
            Some(8),
            &["expected asc, desc"],
        ),
        (
            json!({"columns": ["run", "attr.zzz"]}),
            "columns[1]",
            Some(0),
            &["unknown attribute"],
        ),
        (json!({"cursor": "nonsense"}), "cursor", None, &["not a cursor"]),
        (json!({"limit": 0}), "limit", None, &["outside"]),
        (json!({"filter": 7}), "filter", None, &["invalid type"]),
        (
            json!({"fliter": "run = 'a'"}),
            "fliter",
            None,
            &["unknown field", "filter"],
        ),
    ];
    for (body, field, position, words) in cases {
        let (st, got) = post(&s, "runs:search", &body).await;
        let what = format!("{body} -> {got}");
        assert_eq!(st, 400, "{what}");
        let e = &got["error"];
        assert_eq!(e["code"], json!("invalid_argument"), "{what}");
        assert_eq!(e["field"], json!(field), "{what}");
        assert_eq!(e["position"].as_u64(), position, "{what}");
        let message = e["message"].as_str().expect("message");
        for w in words {
            assert!(message.contains(w), "{what}: message lacks {w:?}");
        }
    }

    // A cursor is bound to its sort.
    let (_, page) = post(&s, "runs:search", &json!({"sort": "run", "limit": 1})).await;
    let cursor = page["next_cursor"].as_str().expect("a next page").to_string();
    let (st, got) = post(
        &s,
        "runs:search",
        &json!({"sort": "name", "limit": 1, "cursor": cursor}),
    )
    .await;
    assert_eq!(st, 400, "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("belongs to a search sorted by")
    );

    // Groups check their fields the same way.
    let (st, got) = post(&s, "runs:groups", &json!({"group_by": "state", "aggregates": ["name"]})).await;
    assert_eq!(st, 400, "{got}");
    assert_eq!(got["error"]["field"], json!("aggregates[0]"));
    let (st, got) = post(&s, "runs:groups", &json!({"group_by": "bogus"})).await;
    assert_eq!(st, 400, "{got}");
    assert_eq!(got["error"]["field"], json!("group_by"));

    // The server is unharmed, and the data with it.
    let (st, body) = post(&s, "runs:search", &json!({"sort": "run"})).await;
    assert_eq!(st, 200);
    assert_eq!(ids(&body), ["a", "b", "c", "d", "e"]);
}

async fn get(s: &Server, path_and_query: &str) -> (u16, Value) {
    common::get_json(s, &format!("/api/v1/projects/{PROJECT}/{path_and_query}")).await
}

fn node_ids(g: &Value) -> Vec<String> {
    let mut v: Vec<String> = g["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {g}"))
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect();
    v.sort();
    v
}

fn edge_list(g: &Value) -> Vec<String> {
    let mut v: Vec<String> = g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| format!("{} -> {}", e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

/// prep: raw@v1 -> clean@v1; train: clean@v1 -> model m@1; eval: m@1 and the run train;
/// other: clean@v1 (a sibling of train, in neither its upstream nor its downstream).
#[tokio::test(flavor = "multi_thread")]
async fn lineage_graph_walks_upstream_and_downstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let link = |run: &str, direction: &str, kind: &str, name: &str, version: &str| {
        json!({"id": event_id(), "run": run, "lineage": {
            "direction": direction, "kind": kind, "name": name, "version": version}})
    };
    let mut events = Vec::new();
    for run in ["prep", "train", "eval", "other"] {
        events.push(json!({"id": event_id(), "run": run, "run_created": {"name": format!("{run} step")}}));
    }
    events.extend([
        link("prep", "input", "dataset", "raw", "v1"),
        link("prep", "output", "dataset", "clean", "v1"),
        link("train", "input", "dataset", "clean", "v1"),
        link("train", "output", "model", "m", "1"),
        link("eval", "input", "model", "m", "1"),
        link("eval", "input", "run", "train", ""),
        link("other", "input", "dataset", "clean", "v1"),
    ]);
    let (st, body) = post_events(&s, PROJECT, &json!({ "events": events })).await;
    assert_eq!(st, 200, "{body}");
    let pos = body["position"].as_str().expect("position");

    let (st, g) = get(
        &s,
        &format!("lineage?run=train&direction=upstream&depth=2&min_position={pos}"),
    )
    .await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(node_ids(&g), ["dataset:clean@v1", "run:prep", "run:train"]);
    assert_eq!(
        edge_list(&g),
        ["dataset:clean@v1 -> run:train", "run:prep -> dataset:clean@v1"]
    );
    assert_eq!(g["roots"], json!(["run:train"]));

    let (_, g) = get(&s, "lineage?run=train&direction=upstream&depth=3").await;
    assert!(node_ids(&g).contains(&"dataset:raw@v1".to_string()), "{g}");

    let (_, g) = get(&s, "lineage?run=train&direction=downstream").await;
    assert_eq!(node_ids(&g), ["model:m@1", "run:eval", "run:train"]);
    assert_eq!(
        edge_list(&g),
        [
            "model:m@1 -> run:eval",
            "run:train -> model:m@1",
            "run:train -> run:eval"
        ]
    );
    let eval = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "run:eval")
        .unwrap();
    assert_eq!(
        (&eval["name"], &eval["state"]),
        (&json!("eval step"), &json!("running"))
    );

    // From a dataset, all versions, both ways: the runs that made it and those made from it.
    let (st, g) = get(&s, "lineage?kind=dataset&name=clean&depth=1").await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(node_ids(&g), ["dataset:clean@v1", "run:other", "run:prep", "run:train"]);

    // The whole chain, both ways from the model.
    let (_, g) = get(&s, "lineage?kind=model&name=m&version=1&depth=10").await;
    let ids = node_ids(&g);
    for want in ["dataset:raw@v1", "run:prep", "run:train", "run:eval"] {
        assert!(ids.contains(&want.to_string()), "{want} missing from {ids:?}");
    }
    assert!(
        !ids.contains(&"run:other".to_string()),
        "a sibling is not lineage: {ids:?}"
    );

    for (q, status, field) in [
        ("lineage?run=nope", 404, None),
        ("lineage?kind=dataset&name=nope", 404, None),
        ("lineage?run=train&kind=dataset&name=clean", 400, Some("run")),
        ("lineage?run=train&depth=0", 400, Some("depth")),
        ("lineage?run=train&direction=sideways", 400, Some("direction")),
        ("lineage?kind=car&name=x", 400, Some("kind")),
    ] {
        let (st, body) = get(&s, q).await;
        assert_eq!(st, status, "{q}: {body}");
        if let Some(f) = field {
            assert_eq!(body["error"]["field"], json!(f), "{q}: {body}");
        }
    }
}

/// Many series in one request, raw and bucketed, and the live mode a chart of running runs polls.
#[tokio::test(flavor = "multi_thread")]
async fn many_series_in_one_request_and_live_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let position = seed(&s).await;
    let (st, body) = post(
        &s,
        "series:query",
        &json!({"runs": ["a", "c", "e"], "paths": ["val/acc", "nope"], "min_position": position}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), 6);
    assert_eq!(
        (&series[0]["run"], &series[0]["path"]),
        (&json!("a"), &json!("val/acc"))
    );
    assert_eq!(series[0]["values"], json!([0.5, 0.91, 0.95]));
    assert_eq!(series[0]["steps"], json!([0, 1, 2]));
    assert_eq!(series[1]["values"], json!([]), "a series that does not exist is empty");
    assert_eq!(series[2]["values"], json!([0.2, 0.4]));
    assert_eq!(series[4]["values"], json!([]));

    // Bucketed, and live: only what came after the step the chart has.
    let (st, body) = post(
        &s,
        "series:query",
        &json!({"series": [{"run": "b", "path": "val/acc"}, {"run": "a", "path": "val/acc", "after_step": 0}],
                "buckets": 1}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["series"][0]["buckets"][0]["max"], json!(0.97));
    assert_eq!(body["series"][0]["buckets"][0]["count"], json!(3));
    assert_eq!(body["series"][1]["buckets"][0]["count"], json!(2));
    let more = json!({"events": [{"id": event_id(), "run": "a", "float_points": {
        "series": "val/acc", "steps": [3, 4], "values": [0.96, 0.97]}}]});
    let (_, ack) = post_events(&s, PROJECT, &more).await;
    let (_, body) = post(
        &s,
        "series:query",
        &json!({"series": [{"run": "a", "path": "val/acc", "after_step": 2}],
                "min_position": ack["position"]}),
    )
    .await;
    assert_eq!(body["series"][0]["steps"], json!([3, 4]));
    assert_eq!(body["series"][0]["values"], json!([0.96, 0.97]));

    // Paging per series.
    let (_, body) = post(
        &s,
        "series:query",
        &json!({"runs": ["a"], "paths": ["val/acc"], "limit": 2}),
    )
    .await;
    assert_eq!(body["series"][0]["steps"], json!([0, 1]));
    assert_eq!(body["series"][0]["next_from_step"], json!(2));

    for (req, field) in [
        (json!({}), "series"),
        (json!({"runs": ["a"], "paths": ["x"], "buckets": 0}), "buckets"),
        (json!({"runs": ["a"], "paths": ["x"], "limit": 0}), "limit"),
        (
            json!({"series": [{"run": "a", "path": "x", "after_step": -1}]}),
            "series[0].after_step",
        ),
        (
            json!({"series": [{"run": "a", "path": "x", "after_time_ms": 5}]}),
            "series[0].after_time_ms",
        ),
        (json!({"series": [{"run": "a", "path": "a//b"}]}), "series[0].path"),
        (
            json!({"runs": ["a"], "paths": ["x"], "from_step": 5, "to_step": 1}),
            "from_step",
        ),
    ] {
        let (st, body) = post(&s, "series:query", &req).await;
        assert_eq!(st, 400, "{req}: {body}");
        assert_eq!(body["error"]["field"], json!(field), "{req}: {body}");
    }
}

/// A step logged again at another time keeps both points (MLflow logs every step-less metric at
/// step 0): pages end and resume inside a step, live reads follow new points of a step, the last
/// value is the latest point of the highest step, and the same step and time again replaces.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_logged_again_keeps_every_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let points = |steps: Vec<i64>, times: Vec<i64>, values: Vec<f64>| {
        json!({"events": [{"id": event_id(), "run": "r", "float_points": {
            "series": "loss", "steps": steps, "times_ms": times, "values": values}}]})
    };
    let (st, _) = post_events(
        &s,
        PROJECT,
        &json!({"events": [
        {"id": event_id(), "run": "r", "run_created": {"name": "r"}}]}),
    )
    .await;
    assert_eq!(st, 200);
    post_events(
        &s,
        PROJECT,
        &points(vec![0, 0, 0, 1], vec![100, 200, 300, 150], vec![1.0, 2.0, 3.0, 4.0]),
    )
    .await;
    // Step 0 again at a new time, and at time 200 again (which replaces 2.0).
    let (_, ack) = post_events(&s, PROJECT, &points(vec![0, 0], vec![400, 200], vec![5.0, 2.5])).await;
    let pos = ack["position"].as_str().expect("position").to_string();
    let series = |q: &str| format!("runs/r/series?path=loss&min_position={pos}{q}");
    let (st, all) = get(&s, &series("")).await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(all["steps"], json!([0, 0, 0, 0, 1]));
    assert_eq!(all["times_ms"], json!([100, 200, 300, 400, 150]));
    assert_eq!(all["values"], json!([1.0, 2.5, 3.0, 5.0, 4.0]));
    assert_eq!(all["next_from_step"], Value::Null, "no page follows");

    // Pages of two: the first ends inside step 0 and says where in it the next starts.
    let (_, p1) = get(&s, &series("&limit=2")).await;
    assert_eq!(p1["times_ms"], json!([100, 200]));
    assert_eq!(
        (&p1["next_from_step"], &p1["next_from_time_ms"]),
        (&json!(0), &json!(300))
    );
    let (_, p2) = get(&s, &series("&limit=2&from_step=0&from_time_ms=300")).await;
    assert_eq!(p2["times_ms"], json!([300, 400]));
    assert_eq!(p2["next_from_step"], json!(1));
    assert!(
        p2.get("next_from_time_ms").is_none(),
        "the next page starts at a new step: {p2}"
    );
    let (_, p3) = get(&s, &series("&limit=2&from_step=1")).await;
    assert_eq!((&p3["steps"], &p3["next_from_step"]), (&json!([1]), &Value::Null));

    // The summary's last value is the latest point of the highest step, then of step 0 once
    // step 1 is gone from view (a range read); buckets count every point.
    let (_, b) = get(&s, &series("&buckets=1&to_step=0")).await;
    assert_eq!(b["buckets"][0]["count"], json!(4));
    assert_eq!(b["buckets"][0]["last_value"], json!(5.0));
    assert_eq!(b["buckets"][0]["last_time_ms"], json!(400));
    let (_, b) = get(&s, &series("&buckets=1")).await;
    assert_eq!(
        (&b["buckets"][0]["last_step"], &b["buckets"][0]["last_value"]),
        (&json!(1), &json!(4.0))
    );

    // Live: after the last point the chart has, inside step 0.
    let (_, ack) = post_events(&s, PROJECT, &points(vec![0], vec![500], vec![6.0])).await;
    let (st, live) = post(
        &s,
        "series:query",
        &json!({"series": [{"run": "r", "path": "loss", "after_step": 0, "after_time_ms": 400}],
                "min_position": ack["position"]}),
    )
    .await;
    assert_eq!(st, 200, "{live}");
    assert_eq!(live["series"][0]["times_ms"], json!([500, 150]));
    assert_eq!(live["series"][0]["steps"], json!([0, 1]));
    let (st, body) = get(&s, &format!("runs/r/lines?path=log&from_time_ms=5&min_position={pos}")).await;
    assert_eq!((st, &body["error"]["field"]), (400, &json!("from_time_ms")), "{body}");
}

/// Runs side by side: attribute differences, metric summaries, series aligned by step.
#[tokio::test(flavor = "multi_thread")]
async fn compare_puts_runs_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let position = seed(&s).await;
    let (st, body) = post(
        &s,
        "runs:compare",
        &json!({"runs": ["a", "d", "e"], "series": ["val/acc"], "min_position": position}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let runs: Vec<&Value> = body["runs"].as_array().unwrap().iter().map(|r| &r["run"]).collect();
    assert_eq!(runs, [&json!("a"), &json!("d"), &json!("e")]);
    assert_eq!(body["attributes"]["params/lr"]["values"], json!([0.1, 0.01, 0.05]));
    assert_eq!(body["attributes"]["params/lr"]["differs"], json!(true));
    assert_eq!(
        body["attributes"]["params/optimizer"]["values"],
        json!(["adam", "adam", "Adam"])
    );
    assert_eq!(body["metrics"]["val/acc"][0]["max"], json!(0.95));
    assert_eq!(body["metrics"]["val/acc"][2], Value::Null);
    assert_eq!(body["tags"], json!([["best"], ["baseline", "best"], []]));
    let acc = &body["series"]["val/acc"];
    assert_eq!(acc["steps"], json!([0, 1, 2]));
    assert_eq!(
        acc["values"],
        json!([[0.5, 0.91, 0.95], [0.93, 0.94, null], [null, null, null]])
    );

    // Only what differs.
    let (_, body) = post(
        &s,
        "runs:compare",
        &json!({"runs": ["a", "c"], "only_differences": true}),
    )
    .await;
    let attrs = body["attributes"].as_object().expect("attributes");
    assert!(
        attrs.contains_key("params/lr") && !attrs.contains_key("params/optimizer"),
        "{body}"
    );

    for (req, status) in [
        (json!({"runs": []}), 400),
        (json!({"runs": ["a", "a"]}), 400),
        (json!({"runs": ["a", "zz"]}), 404),
        (json!({"runs": ["a"], "series": ["bad//path"]}), 400),
    ] {
        let (st, body) = post(&s, "runs:compare", &req).await;
        assert_eq!(st, status, "{req}: {body}");
    }
}
