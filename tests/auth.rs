//! Authentication and authorisation on every route of the ingest and query services: requests
//! without valid credentials are refused with 401, tokens reach only the projects and roles they
//! were granted (403 otherwise), and a refused request leaves no trace.

mod common;

use common::{ADMIN_TOKEN, Server, client, event_id, get_json, post_events};
use reqwest::Method;
use serde_json::{Value, json};

/// One request to one route, and the status it gets when it is allowed.
struct Req {
    name: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    ok: u16,
}

impl Req {
    /// Reads need only the viewer role; searches are reads sent as POST (custom methods).
    fn is_read(&self) -> bool {
        self.method == Method::GET
            || self.path.contains("/runs:")
            || self.path.contains("/series:")
            || self.path == "/api/v1/sql"
    }

    fn get(name: &str, path: String) -> Req {
        Req {
            name: name.into(),
            method: Method::GET,
            path,
            content_type: None,
            body: Vec::new(),
            ok: 200,
        }
    }

    fn put(name: &str, path: String, body: &[u8]) -> Req {
        Req {
            name: name.into(),
            method: Method::PUT,
            path,
            content_type: Some("text/plain"),
            body: body.to_vec(),
            ok: 200,
        }
    }

    fn json(name: &str, method: Method, path: String, body: Value, ok: u16) -> Req {
        let body = body.to_string().into_bytes();
        Req {
            name: name.into(),
            method,
            path,
            content_type: Some("application/json"),
            body,
            ok,
        }
    }
}

/// Every project-scoped route, on `project` and its run `run`. Writes log under names holding
/// `tag`, so that their traces can be looked for.
fn project_requests(project: &str, run: &str, tag: &str) -> Vec<Req> {
    let base = format!("/api/v1/projects/{project}");
    let events = json!({"events": [
        {"id": event_id(), "run": run, "float_points": {"series": format!("probe/{tag}"), "steps": [0], "values": [1.0]}}
    ]});
    vec![
        Req::json("POST events", Method::POST, format!("{base}/events"), events, 200),
        Req::put("PUT file", format!("{base}/runs/{run}/files/probe-{tag}.txt"), b"probe"),
        Req::get("GET runs", format!("{base}/runs")),
        Req::json(
            "POST runs:search",
            Method::POST,
            format!("{base}/runs:search"),
            json!({"filter": "exists metric.loss"}),
            200,
        ),
        Req::json(
            "POST runs:groups",
            Method::POST,
            format!("{base}/runs:groups"),
            json!({"group_by": "state"}),
            200,
        ),
        Req::json(
            "POST runs:compare",
            Method::POST,
            format!("{base}/runs:compare"),
            json!({"runs": [run]}),
            200,
        ),
        Req::get("GET fields", format!("{base}/fields")),
        Req::get("GET lineage", format!("{base}/lineage?run={run}")),
        Req::json(
            "POST series:query",
            Method::POST,
            format!("{base}/series:query"),
            json!({"runs": [run], "paths": ["loss"]}),
            200,
        ),
        Req::get("GET run", format!("{base}/runs/{run}")),
        Req::get("GET events", format!("{base}/runs/{run}/events")),
        Req::get("GET series", format!("{base}/runs/{run}/series?path=loss")),
        Req::get("GET lines", format!("{base}/runs/{run}/lines?path=log")),
        Req::get("GET file", format!("{base}/runs/{run}/files/f.txt")),
    ]
}

/// The routes outside a project: projects, tokens. `victim` is the id of a token the DELETE
/// revokes when it is allowed.
fn global_requests(tag: &str, victim: &str) -> Vec<Req> {
    vec![
        Req::get("GET projects", "/api/v1/projects".into()),
        Req::json(
            "POST sql",
            Method::POST,
            "/api/v1/sql".into(),
            json!({"sql": "SELECT count(*) FROM runs"}),
            200,
        ),
        Req::json(
            "POST projects",
            Method::POST,
            "/api/v1/projects".into(),
            json!({"name": format!("p-{tag}")}),
            201,
        ),
        Req::json(
            "POST tokens",
            Method::POST,
            "/api/v1/tokens".into(),
            json!({"principal": format!("u-{tag}"), "grants": [{"project": "a", "role": "viewer"}]}),
            201,
        ),
        Req::json(
            "DELETE token",
            Method::DELETE,
            format!("/api/v1/tokens/{victim}"),
            json!({}),
            200,
        ),
    ]
}

/// Every route of both services.
fn all_requests(tag: &str, victim: &str) -> Vec<Req> {
    let mut v = global_requests(tag, victim);
    v.extend(project_requests("a", "ra", tag));
    v
}

fn tag(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `r` with `authorization` as the Authorization header (none when `None`).
async fn send(s: &Server, r: &Req, authorization: Option<&str>) -> (u16, Value) {
    let mut b = client().request(r.method.clone(), s.url(&r.path));
    if let Some(a) = authorization {
        b = b.header(reqwest::header::AUTHORIZATION, a);
    }
    if let Some(ct) = r.content_type {
        b = b.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if r.method != Method::GET && r.method != Method::DELETE {
        b = b.body(r.body.clone());
    }
    let resp = b
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", r.method, r.path));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// Checks an answer; records what is wrong with it in `problems`.
fn check(
    problems: &mut Vec<String>,
    what: &str,
    got: &(u16, Value),
    status: u16,
    code: Option<&str>,
    message: &[&str],
) {
    let (st, v) = got;
    if *st != status {
        problems.push(format!("{what}: answered {st}, expected {status}: {v}"));
        return;
    }
    let Some(code) = code else { return };
    if v["error"]["code"] != code {
        problems.push(format!(
            "{what}: error code {}, expected {code}: {v}",
            v["error"]["code"]
        ));
    }
    let msg = v["error"]["message"].as_str().unwrap_or("");
    for m in message {
        if !msg.contains(m) {
            problems.push(format!("{what}: message {msg:?} does not mention {m:?}"));
        }
    }
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Issues a token with the admin token; returns (token, token_id).
async fn issue(s: &Server, principal: &str, grants: Value) -> (String, String) {
    let r = Req::json(
        "issue",
        Method::POST,
        "/api/v1/tokens".into(),
        json!({"principal": principal, "grants": grants}),
        201,
    );
    let (st, v) = send(s, &r, Some(&bearer(ADMIN_TOKEN))).await;
    assert_eq!(st, 201, "issuing a token for {principal}: {v}");
    (
        v["token"].as_str().expect("token").to_string(),
        v["token_id"].as_str().expect("token_id").to_string(),
    )
}

/// Creates projects `a` and `b`, each with a run (`ra`, `rb`) holding a series `loss`, lines
/// `log` and a file `f.txt`.
async fn setup(s: &Server) {
    for p in ["a", "b"] {
        let r = Req::json(
            "create",
            Method::POST,
            "/api/v1/projects".into(),
            json!({"name": p}),
            201,
        );
        let (st, v) = send(s, &r, Some(&bearer(ADMIN_TOKEN))).await;
        assert_eq!(st, 201, "creating project {p}: {v}");
        let run = format!("r{p}");
        let batch = json!({"events": [
            {"id": event_id(), "run": run, "run_created": {"name": run}},
            {"id": event_id(), "run": run, "float_points": {"series": "loss", "steps": [0, 1], "values": [0.5, 0.25]}},
            {"id": event_id(), "run": run, "string_lines": {"series": "log", "steps": [0], "lines": ["hello"]}},
        ]});
        let (st, v) = post_events(s, p, &batch).await;
        assert_eq!(st, 200, "seeding {p}: {v}");
        let r = client()
            .put(s.url(&format!("/api/v1/projects/{p}/runs/{run}/files/f.txt")))
            .bearer_auth(ADMIN_TOKEN)
            .body(format!("file of {p}"))
            .send()
            .await
            .expect("upload");
        assert_eq!(r.status().as_u16(), 200, "uploading to {p}");
        let pos = r.json::<Value>().await.expect("upload answer")["position"]
            .as_str()
            .expect("position")
            .to_string();
        let (st, v) = get_json(s, &format!("/api/v1/projects/{p}/runs/{run}?min_position={pos}")).await;
        assert_eq!(st, 200, "{v}");
    }
}

/// Checks that no write refused so far left anything named with `marker` in `project`'s run
/// `run`, nor a project so named. A sentinel write to the same run (same log partition) comes
/// after every refused write, so waiting for it shows anything they appended.
async fn assert_no_trace(s: &Server, project: &str, run: &str, marker: &str) {
    let batch = json!({"events": [
        {"id": event_id(), "run": run, "float_points": {"series": "sentinel", "steps": [0], "values": [0.0]}}
    ]});
    let (st, v) = post_events(s, project, &batch).await;
    assert_eq!(st, 200, "sentinel: {v}");
    let pos = v["position"].as_str().expect("position");
    let (st, v) = get_json(s, &format!("/api/v1/projects/{project}/runs/{run}?min_position={pos}")).await;
    assert_eq!(st, 200, "{v}");
    let series: Vec<&str> = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert!(series.contains(&"sentinel"), "{v}");
    assert!(
        !series.iter().any(|p| p.contains(marker)),
        "a refused write logged a series in {project}/{run}: {series:?}"
    );
    let files: Vec<&str> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        !files.iter().any(|p| p.contains(marker)),
        "a refused upload stored a file in {project}/{run}: {files:?}"
    );
    let (st, v) = get_json(
        s,
        &format!("/api/v1/projects/{project}/runs/{run}/events?limit=10000&min_position={pos}"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        !v.to_string().contains(marker),
        "a refused write reached the history of {project}/{run}: {v}"
    );
    let (st, v) = get_json(s, "/api/v1/projects").await;
    assert_eq!(st, 200, "{v}");
    assert!(
        !v.to_string().contains(marker),
        "a refused request created a project: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_requests_without_valid_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    setup(&s).await;
    let admin = bearer(ADMIN_TOKEN);
    let mut problems = Vec::new();

    // With the admin token every request is allowed: the refusals below are about credentials.
    let (_, victim) = issue(&s, "victim", json!([{"project": "*", "role": "viewer"}])).await;
    for r in all_requests(&tag("ok"), &victim) {
        let got = send(&s, &r, Some(&admin)).await;
        check(&mut problems, &format!("admin: {}", r.name), &got, r.ok, None, &[]);
    }
    assert_no_problems(&problems);

    let (survivor, survivor_id) = issue(&s, "survivor", json!([{"project": "*", "role": "viewer"}])).await;
    let variants: Vec<(&str, Option<String>, &str)> = vec![
        ("no Authorization header", None, "missing Authorization header"),
        (
            "'Bearer' alone",
            Some("Bearer".into()),
            "malformed Authorization header",
        ),
        (
            "'Bearer ' and spaces",
            Some("Bearer   ".into()),
            "malformed Authorization header",
        ),
        ("'Token x'", Some("Token x".into()), "malformed Authorization header"),
        (
            "the bare token",
            Some(ADMIN_TOKEN.into()),
            "malformed Authorization header",
        ),
        ("'Basic !!!'", Some("Basic !!!".into()), "malformed Basic credentials"),
        (
            "Basic without a password",
            Some(basic(ADMIN_TOKEN, "")),
            "token as password",
        ),
        (
            "Basic without a colon",
            Some(format!("Basic {}", base64(ADMIN_TOKEN.as_bytes()))),
            "token as password",
        ),
        (
            "unknown bearer token",
            Some(bearer("rs_0123456789abcdef0123456789abcdef")),
            "unknown token",
        ),
        (
            "admin token plus a letter",
            Some(bearer(&format!("{ADMIN_TOKEN}x"))),
            "unknown token",
        ),
        (
            "admin token minus a letter",
            Some(bearer(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
            "unknown token",
        ),
        (
            "unknown token as Basic password",
            Some(basic("user", "rs_nope")),
            "unknown token",
        ),
    ];
    for (what, header, message) in &variants {
        for r in all_requests(&tag("refused"), &survivor_id) {
            let got = send(&s, &r, header.as_deref()).await;
            check(
                &mut problems,
                &format!("{what}: {} {}", r.name, r.path),
                &got,
                401,
                Some("unauthenticated"),
                &[message],
            );
        }
    }

    // A token that worked is refused everywhere once revoked, as Bearer and as Basic password.
    let (token, token_id) = issue(&s, "temporary", json!([{"project": "*", "role": "admin"}])).await;
    let (_, victim) = issue(&s, "victim", json!([{"project": "*", "role": "viewer"}])).await;
    for r in all_requests(&tag("ok"), &victim) {
        let got = send(&s, &r, Some(&bearer(&token))).await;
        check(
            &mut problems,
            &format!("before revocation: {}", r.name),
            &got,
            r.ok,
            None,
            &[],
        );
    }
    let revoke = Req::json(
        "revoke",
        Method::DELETE,
        format!("/api/v1/tokens/{token_id}"),
        json!({}),
        200,
    );
    let got = send(&s, &revoke, Some(&admin)).await;
    check(&mut problems, "revoking", &got, 200, None, &[]);
    for header in [bearer(&token), basic("temporary", &token)] {
        for r in all_requests(&tag("refused"), &survivor_id) {
            let got = send(&s, &r, Some(&header)).await;
            check(
                &mut problems,
                &format!("revoked ({}): {} {}", &header[..6], r.name, r.path),
                &got,
                401,
                Some("unauthenticated"),
                &["revoked"],
            );
        }
    }
    assert_no_problems(&problems);

    // None of the refused requests had an effect: the survivor was not revoked, nothing was
    // logged, uploaded or created.
    let got = send(
        &s,
        &Req::get("survivor", "/api/v1/projects".into()),
        Some(&bearer(&survivor)),
    )
    .await;
    assert_eq!(got.0, 200, "a refused DELETE revoked a token: {}", got.1);
    assert_no_trace(&s, "a", "ra", "refused").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_reach_only_their_projects_and_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    setup(&s).await;
    let mut problems = Vec::new();
    let (a_admin, _) = issue(&s, "a-admin", json!([{"project": "a", "role": "admin"}])).await;
    let (a_writer, _) = issue(&s, "a-writer", json!([{"project": "a", "role": "writer"}])).await;
    let (a_viewer, _) = issue(&s, "a-viewer", json!([{"project": "a", "role": "viewer"}])).await;
    let (b_viewer, b_viewer_id) = issue(&s, "b-viewer", json!([{"project": "b", "role": "viewer"}])).await;

    for (who, token) in [("a-admin", &a_admin), ("a-writer", &a_writer), ("a-viewer", &a_viewer)] {
        let auth = bearer(token);
        // On project B, every route is forbidden, whatever the role on A.
        for r in project_requests("b", "rb", &tag("refused")) {
            let got = send(&s, &r, Some(&auth)).await;
            let what = format!("{who} on b: {} {}", r.name, r.path);
            check(&mut problems, &what, &got, 403, Some("permission_denied"), &["\"b\""]);
        }
        // A project that does not exist is forbidden too, not reported missing.
        for r in project_requests("zzz", "rz", &tag("refused")) {
            let got = send(&s, &r, Some(&auth)).await;
            check(
                &mut problems,
                &format!("{who} on zzz: {}", r.name),
                &got,
                403,
                Some("permission_denied"),
                &[],
            );
        }
        // Tokens for B or for the whole workspace cannot be had from a grant on A.
        for (grant, refused) in [("b", "\"b\""), ("*", "workspace")] {
            let r = Req::json(
                "POST tokens",
                Method::POST,
                "/api/v1/tokens".into(),
                json!({"principal": "escalate", "grants": [{"project": grant, "role": "viewer"}]}),
                201,
            );
            let got = send(&s, &r, Some(&auth)).await;
            let what = format!("{who}: token with a grant on {grant}");
            check(&mut problems, &what, &got, 403, Some("permission_denied"), &[refused]);
        }
        let r = Req::json(
            "POST projects",
            Method::POST,
            "/api/v1/projects".into(),
            json!({"name": tag("refused")}),
            201,
        );
        let got = send(&s, &r, Some(&auth)).await;
        check(
            &mut problems,
            &format!("{who}: create a project"),
            &got,
            403,
            Some("permission_denied"),
            &["admin"],
        );
        let r = Req::json(
            "DELETE token",
            Method::DELETE,
            format!("/api/v1/tokens/{b_viewer_id}"),
            json!({}),
            200,
        );
        let got = send(&s, &r, Some(&auth)).await;
        check(
            &mut problems,
            &format!("{who}: revoke another's token"),
            &got,
            403,
            Some("permission_denied"),
            &[],
        );
        // The project list shows A only.
        let got = send(&s, &Req::get("GET projects", "/api/v1/projects".into()), Some(&auth)).await;
        let names: Vec<&str> = got.1["projects"]
            .as_array()
            .map_or(vec![], |v| v.iter().filter_map(|p| p["project"].as_str()).collect());
        if got.0 != 200 || names != ["a"] {
            problems.push(format!(
                "{who}: GET projects answered {} {}, expected only project a",
                got.0, got.1
            ));
        }
    }

    // On A each role gets what it was granted, and no more.
    for (who, token, may_write, may_admin) in [
        ("a-admin", &a_admin, true, true),
        ("a-writer", &a_writer, true, false),
        ("a-viewer", &a_viewer, false, false),
    ] {
        let auth = bearer(token);
        for r in project_requests("a", "ra", &tag(if may_write { "ok" } else { "refused" })) {
            let got = send(&s, &r, Some(&auth)).await;
            let what = format!("{who} on a: {} {}", r.name, r.path);
            if r.is_read() || may_write {
                check(&mut problems, &what, &got, r.ok, None, &[]);
            } else {
                check(
                    &mut problems,
                    &what,
                    &got,
                    403,
                    Some("permission_denied"),
                    &["writer", "\"a\""],
                );
            }
        }
        let r = Req::json(
            "POST tokens",
            Method::POST,
            "/api/v1/tokens".into(),
            json!({"principal": format!("{who}-child"), "grants": [{"project": "a", "role": "viewer"}]}),
            201,
        );
        let got = send(&s, &r, Some(&auth)).await;
        if may_admin {
            check(&mut problems, &format!("{who}: token on a"), &got, 201, None, &[]);
        } else {
            check(
                &mut problems,
                &format!("{who}: token on a"),
                &got,
                403,
                Some("permission_denied"),
                &["\"a\""],
            );
        }
    }

    // The admin token reaches B, and is told that zzz does not exist.
    for r in project_requests("b", "rb", &tag("ok")) {
        let got = send(&s, &r, Some(&bearer(ADMIN_TOKEN))).await;
        check(&mut problems, &format!("admin on b: {}", r.name), &got, r.ok, None, &[]);
    }
    for r in project_requests("zzz", "rz", &tag("ok")) {
        let got = send(&s, &r, Some(&bearer(ADMIN_TOKEN))).await;
        check(
            &mut problems,
            &format!("admin on zzz: {}", r.name),
            &got,
            404,
            Some("not_found"),
            &["zzz"],
        );
    }
    assert_no_problems(&problems);

    let got = send(
        &s,
        &Req::get("GET runs", "/api/v1/projects/b/runs".into()),
        Some(&bearer(&b_viewer)),
    )
    .await;
    assert_eq!(got.0, 200, "a refused DELETE revoked b-viewer's token: {}", got.1);
    assert_no_trace(&s, "a", "ra", "refused").await;
    assert_no_trace(&s, "b", "rb", "refused").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_takes_the_token_as_password_and_healthz_needs_none() {
    assert_eq!(base64(b"user:tok"), "dXNlcjp0b2s=");
    assert_eq!(base64(b"ab"), "YWI=");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());

    for header in [None, Some("Bearer nonsense"), Some("Basic !!!")] {
        let mut r = client().get(s.url("/healthz"));
        if let Some(h) = header {
            r = r.header(reqwest::header::AUTHORIZATION, h);
        }
        let resp = r.send().await.expect("healthz");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status == 200 && body.trim() == "ok",
            "/healthz with {header:?}: {status} {body:?}"
        );
    }

    setup(&s).await;
    let mut problems = Vec::new();
    let (_, victim) = issue(&s, "victim", json!([{"project": "*", "role": "viewer"}])).await;
    for r in all_requests(&tag("basic"), &victim) {
        let got = send(&s, &r, Some(&basic("mlflow", ADMIN_TOKEN))).await;
        check(
            &mut problems,
            &format!("Basic admin: {} {}", r.name, r.path),
            &got,
            r.ok,
            None,
            &[],
        );
    }
    let (token, _) = issue(&s, "reader", json!([{"project": "a", "role": "viewer"}])).await;
    for header in [
        basic("reader", &token),
        basic("", &token),
        format!("bearer {token}"),
        format!("BASIC {}", base64(format!("x:{token}").as_bytes())),
    ] {
        let got = send(
            &s,
            &Req::get("GET run", "/api/v1/projects/a/runs/ra".into()),
            Some(&header),
        )
        .await;
        check(&mut problems, &format!("viewer with {header:?}"), &got, 200, None, &[]);
        let got = send(
            &s,
            &Req::get("GET run", "/api/v1/projects/b/runs/rb".into()),
            Some(&header),
        )
        .await;
        check(
            &mut problems,
            &format!("viewer on b with {header:?}"),
            &got,
            403,
            Some("permission_denied"),
            &[],
        );
    }
    assert_no_problems(&problems);
}

/// A file event names its blob by key. A token confined to project A must not get at a file of
/// project B by logging, in A, a file event that names B's blob (content-addressed keys are
/// easy to know: the sha256 of the content).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_event_cannot_reach_another_projects_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    setup(&s).await;
    let (st, run_b) = get_json(&s, "/api/v1/projects/b/runs/rb").await;
    assert_eq!(st, 200, "{run_b}");
    let file_b = run_b["files"]
        .as_array()
        .and_then(|f| f.first())
        .cloned()
        .expect("b's file");
    let (a_writer, _) = issue(&s, "a-writer", json!([{"project": "a", "role": "writer"}])).await;
    let auth = bearer(&a_writer);

    let direct = send(
        &s,
        &Req::get("GET b's file", "/api/v1/projects/b/runs/rb/files/f.txt".into()),
        Some(&auth),
    )
    .await;
    assert_eq!(direct.0, 403, "{}", direct.1);

    let event = json!({"events": [{"id": event_id(), "run": "ra", "file": {
        "path": "borrowed.txt", "blob_key": file_b["blob_key"], "size": file_b["size"], "sha256": file_b["sha256"],
    }}]});
    let logged = send(
        &s,
        &Req::json(
            "POST events",
            Method::POST,
            "/api/v1/projects/a/events".into(),
            event,
            200,
        ),
        Some(&auth),
    )
    .await;
    if logged.0 != 200 {
        // Refusing the event is one way to keep B's file out of reach.
        return;
    }
    let pos = logged.1["position"].as_str().expect("position");
    let path = format!("/api/v1/projects/a/runs/ra/files/borrowed.txt?min_position={pos}");
    let read = send(&s, &Req::get("GET borrowed", path), Some(&auth)).await;
    assert!(
        !(read.0 == 200 && read.1 == json!("file of b")),
        "a token confined to project a read project b's file through a file event naming its blob {}",
        file_b["blob_key"]
    );
}

/// Credentials are checked before anything else of the request: a URL whose names are not even
/// UTF-8 is still answered 401 to a client that did not authenticate.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked_before_the_url_is_parsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    setup(&s).await;
    let mut problems = Vec::new();
    let mut odd = project_requests("%FF", "ra", &tag("refused"));
    odd.extend(project_requests("a", "%C3%28", &tag("refused")));
    odd.push(Req::json(
        "DELETE token",
        Method::DELETE,
        "/api/v1/tokens/%FF".into(),
        json!({}),
        200,
    ));
    for r in &odd {
        let got = send(&s, r, None).await;
        let what = format!("no credentials, odd URL: {} {}", r.name, r.path);
        check(
            &mut problems,
            &what,
            &got,
            401,
            Some("unauthenticated"),
            &["missing Authorization header"],
        );
    }
    assert_no_problems(&problems);
}

/// A token confined to project A learns nothing about B but 403, even from a malformed request.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_confined_to_a_project_gets_403_before_validation_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    setup(&s).await;
    let mut problems = Vec::new();
    let (a_admin, _) = issue(&s, "a-admin", json!([{"project": "a", "role": "admin"}])).await;
    let b = "/api/v1/projects/b";
    let malformed = [
        Req::json(
            "POST garbage events",
            Method::POST,
            format!("{b}/events"),
            json!({"events": "x"}),
            200,
        ),
        Req::put(
            "PUT file with a bad step",
            format!("{b}/runs/rb/files/x.txt?step=-1"),
            b"x",
        ),
        Req::get("GET runs, limit 0", format!("{b}/runs?limit=0")),
        Req::json(
            "POST runs:search, bad filter",
            Method::POST,
            format!("{b}/runs:search"),
            json!({"filter": "((("}),
            200,
        ),
        Req::get("GET run, bad min_position", format!("{b}/runs/rb?min_position=x")),
        Req::get("GET lineage, depth 0", format!("{b}/lineage?run=rb&depth=0")),
        Req::get("GET events, limit 0", format!("{b}/runs/rb/events?limit=0")),
        Req::get("GET series without a path", format!("{b}/runs/rb/series")),
        Req::get(
            "GET series, 0 buckets",
            format!("{b}/runs/rb/series?path=loss&buckets=0"),
        ),
        Req::get(
            "GET lines with buckets",
            format!("{b}/runs/rb/lines?path=log&buckets=2"),
        ),
        Req::get("GET file, bad step", format!("{b}/runs/rb/files/f.txt?step=x")),
    ];
    for r in &malformed {
        let got = send(&s, r, Some(&bearer(&a_admin))).await;
        let what = format!("a-admin, malformed on b: {} {}", r.name, r.path);
        check(&mut problems, &what, &got, 403, Some("permission_denied"), &["\"b\""]);
    }
    assert_no_problems(&problems);
}
