//! The OpenAPI document against the routes that exist: the document the server serves lists
//! exactly the (method, path) pairs the routers declare, every one of them answers (401 without
//! credentials, 200 where none are needed; never 404 or 405), and every `$ref` resolves.

mod common;

use std::collections::BTreeSet;

use common::{Server, client};
use serde_json::Value;

/// (method, path) of every `.route(...)` in a router's source, paths in OpenAPI form.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a route path literal");
        let end = chunk
            .find(".route(")
            .or_else(|| chunk.find(".with_state"))
            .unwrap_or(chunk.len());
        let body = &chunk[..end];
        for method in ["get", "post", "put", "delete", "patch"] {
            if body.contains(&format!("{method}(")) {
                out.insert((method.to_string(), path.replace("{*", "{")));
            }
        }
    }
    out
}

fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer.strip_prefix('#')?)
}

fn check_refs(doc: &Value, v: &Value, bad: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && resolve(doc, r).is_none()
            {
                bad.push(r.clone());
            }
            m.values().for_each(|x| check_refs(doc, x, bad));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x, bad)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let r = client().get(s.url("/api/v1/openapi.json")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.0.3");

    let mut routed = routes_in(include_str!("../query/src/lib.rs"));
    routed.extend(routes_in(include_str!("../ingest/src/lib.rs")));
    routed.extend(routes_in(include_str!("../src/serve.rs")));
    assert!(routed.len() > 15, "the route scan found only {routed:?}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented"
    );

    let mut bad = Vec::new();
    check_refs(&doc, &doc, &mut bad);
    assert!(bad.is_empty(), "unresolved $ref: {bad:?}");

    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        let open = op["security"].as_array().is_some_and(Vec::is_empty);
        let url = path
            .replace("{project}", "default")
            .replace("{run}", "r")
            .replace("{path}", "f.txt")
            .replace("{token_id}", "t");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let got = client().request(m, s.url(&url)).send().await.expect("request");
        let want = if open { 200 } else { 401 };
        assert_eq!(got.status().as_u16(), want, "{method} {path}");
    }
}
