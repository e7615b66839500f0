//! End-to-end round trip: everything a training run logs is read back exactly through the HTTP API.

mod common;

use std::collections::BTreeMap;

use common::{Server, client, event_id, get_json, merge_positions, post_events};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PROJECT: &str = "default";
const N: i64 = 100_000;
const T0: i64 = 1_700_000_000_000;
const SERIES: [&str; 3] = ["train/loss", "train/bits", "val/score"];

// ---------------------------------------------------------------------------------------------
// helpers

/// SplitMix64: a small deterministic generator, so every run of the test sends the same data.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The value every series must hold at `step` once all writes are applied.
fn expected_value(series: usize, step: i64) -> f64 {
    match series {
        0 => match step {
            10 => f64::NAN,
            20 => f64::INFINITY,
            30 => f64::NEG_INFINITY,
            50 => f64::MIN_POSITIVE,
            60 => f64::from_bits(1), // the smallest subnormal
            70 => f64::MAX,
            80 => f64::MIN,
            s if s % 997 == 0 => f64::NAN,
            s => 2.0 / (1.0 + s as f64 / 1000.0) + ((s * 7919) % 1000) as f64 * 1e-6,
        },
        // Arbitrary bit patterns: every exponent, subnormals, the occasional NaN or infinity.
        1 => f64::from_bits(mix(step as u64 ^ 0x5eed_0000_0000_0001)),
        _ => match step {
            s if s == N - 1 => f64::NEG_INFINITY,
            s if s % 5003 == 17 => f64::INFINITY,
            s if s % 7001 == 3 => f64::NEG_INFINITY,
            s if s % 4001 == 1 => f64::NAN,
            s => (s as f64).sqrt() * 0.1 - 3.0,
        },
    }
}

fn expected_time(series: usize, step: i64) -> i64 {
    T0 + step * 10 + series as i64
}

/// A float as the API writes it: a number, or "NaN", "Infinity", "-Infinity".
fn float_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

/// Reads a float the API wrote; `None` for JSON null.
fn parse_float(v: &Value) -> Option<f64> {
    match v {
        Value::Null => None,
        Value::Number(n) => Some(n.as_f64().expect("number")),
        Value::String(s) => Some(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => panic!("unexpected float string {other:?}"),
        }),
        other => panic!("not a float: {other}"),
    }
}

/// NaN equals NaN; everything else must match bit for bit.
fn same_float(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

async fn post_ok(s: &Server, events: Vec<Value>) -> String {
    let n = events.len();
    let (status, body) = post_events(s, PROJECT, &json!({ "events": events })).await;
    assert_eq!(status, 200, "post failed: {body}");
    assert_eq!(body["accepted"], json!(n), "{body}");
    assert_eq!(body["duplicates"], json!(0), "{body}");
    body["position"].as_str().expect("position").to_string()
}

async fn put_file(s: &Server, run: &str, path_and_query: &str, bytes: Vec<u8>) -> Value {
    let r = client()
        .put(s.url(&format!("/api/v1/projects/{PROJECT}/runs/{run}/files/{path_and_query}")))
        .bearer_auth(&s.token)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "upload of {path_and_query} failed: {body}");
    body
}

async fn get_bytes(s: &Server, path_and_query: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = client()
        .get(s.url(path_and_query))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, ct, r.bytes().await.expect("body").to_vec())
}

/// Every raw point of a float series, page by page with the default page size.
async fn read_all_points(
    s: &Server,
    run: &str,
    path: &str,
    min_position: &str,
) -> (Vec<i64>, Vec<i64>, Vec<f64>, usize) {
    let (mut steps, mut times, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut from = 0i64;
    let mut pages = 0;
    loop {
        let (status, page) = get_json(
            s,
            &format!(
                "/api/v1/projects/{PROJECT}/runs/{run}/series?path={path}&from_step={from}&min_position={min_position}&wait_ms=30000"
            ),
        )
        .await;
        assert_eq!(status, 200, "series {path} from {from}: {page}");
        pages += 1;
        let st = page["steps"].as_array().expect("steps");
        let ti = page["times_ms"].as_array().expect("times_ms");
        let va = page["values"].as_array().expect("values");
        assert_eq!(st.len(), ti.len());
        assert_eq!(st.len(), va.len());
        assert!(
            st.len() <= 10_000,
            "a page holds at most the default limit of 10000 points, got {}",
            st.len()
        );
        steps.extend(st.iter().map(|v| v.as_i64().expect("step")));
        times.extend(ti.iter().map(|v| v.as_i64().expect("time")));
        values.extend(va.iter().map(|v| parse_float(v).expect("value is not null")));
        match page["next_from_step"].as_i64() {
            Some(next) => {
                assert!(next > from, "paging must advance");
                from = next;
            }
            None => break,
        }
        assert!(pages < 1000, "runaway paging");
    }
    (steps, times, values, pages)
}

// ---------------------------------------------------------------------------------------------
// a PNG built by hand: signature, IHDR, one stored-deflate IDAT, IEND

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

fn tiny_png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[(x * 40) as u8 ^ seed, (y * 60) as u8, seed.wrapping_mul(3)]);
        }
    }
    let mut z = vec![0x78, 0x01, 0x01]; // zlib header, final stored block
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(&raw);
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &z);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

// ---------------------------------------------------------------------------------------------

fn float_event(run: &str, series: usize, writes: &[(i64, i64, f64)]) -> Value {
    json!({
        "id": event_id(), "run": run,
        "float_points": {
            "series": SERIES[series],
            "steps": writes.iter().map(|w| w.0).collect::<Vec<_>>(),
            "times_ms": writes.iter().map(|w| w.1).collect::<Vec<_>>(),
            "values": writes.iter().map(|w| float_json(w.2)).collect::<Vec<_>>(),
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_logged_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let run = "e2e-run-1";
    let mut positions: Vec<String> = Vec::new();
    let mut rng = Rng(42);

    // ---- batch 1: the run, its config, tags, stale points that later writes must replace ----
    let config = json!({
        "params": {
            "optimizer": {"name": "adam", "lr": 0.001, "eps": 1e-8, "betas": {"$set": ["0.9", "0.999"]}},
            "epochs": 5,
            "layers": ["conv1", "conv2", "fc"],
            "dropout": 0.0,
            "whole": 2.0,
            "nan_param": {"$float": "NaN"},
            "inf_param": {"$float": "-Infinity"},
            "use_amp": false,
        },
        "seed": -42,
        "big_int": 9_007_199_254_740_993i64,
        "max_i64": i64::MAX,
        "min_i64": i64::MIN,
        "started": {"$datetime": "2024-03-01T12:00:00.250Z"},
        "ended": {"$datetime": 1_709_294_500_000i64},
        "notes": "unicode ✓ — tab\there, \"quoted\"",
        "scratch": {"tmp": 1},
    });
    // Points (step and time) written first with wrong values in an earlier batch; the later,
    // correct write of the same step and time must win.
    let overwritten: Vec<i64> = vec![0, 777, 12_345, 50_000, 99_999];
    let mut batch1 = vec![
        json!({"id": event_id(), "run": run, "run_created": {
            "name": "resnet baseline", "experiment": "e2e", "description": "round-trip test run"}}),
        json!({"id": event_id(), "run": run, "run_state": {"state": "running"}}),
        json!({"id": event_id(), "run": run, "attributes_set": {"attributes": config}}),
        json!({"id": event_id(), "run": run, "tags_added": {"tags": ["baseline", "resnet", "to-remove"]}}),
    ];
    for s in 0..SERIES.len() {
        let stale: Vec<(i64, i64, f64)> = overwritten
            .iter()
            .map(|&st| (st, expected_time(s, st), -12_345.5))
            .collect();
        batch1.push(float_event(run, s, &stale));
    }
    positions.push(post_ok(&server, batch1).await);

    // ---- batches 2..5: every step of the three series, shuffled, in four batches ----
    let mut order: Vec<i64> = (0..N).collect();
    rng.shuffle(&mut order);
    let chunks: Vec<Vec<i64>> = order.chunks((N / 4) as usize).map(|c| c.to_vec()).collect();
    assert_eq!(chunks.len(), 4);
    for chunk in &chunks {
        let mut events = Vec::new();
        for s in 0..SERIES.len() {
            let mut writes: Vec<(i64, i64, f64)> = chunk
                .iter()
                .map(|&st| (st, expected_time(s, st), expected_value(s, st)))
                .collect();
            // A point repeated inside one event: the later occurrence wins.
            let dup = chunk[chunk.len() / 2];
            writes.insert(0, (dup, expected_time(s, dup), 31_337.0));
            events.push(float_event(run, s, &writes));
        }
        positions.push(post_ok(&server, events).await);
    }

    // ---- strings, more attributes and tags, lineage ----
    let lines: Vec<(i64, String)> = (0..300i64)
        .map(|i| {
            let text = match i % 4 {
                0 => format!("epoch {i}: loss={:.4}", 1.0 / (i + 1) as f64),
                1 => String::new(),
                2 => format!("ünïcödé ✓ line {i}\twith tab\nand newline"),
                _ => "x".repeat(i as usize * 10),
            };
            (i * 3, text)
        })
        .collect();
    let mut shuffled_lines = lines.clone();
    rng.shuffle(&mut shuffled_lines);
    positions.push(
        post_ok(
            &server,
            vec![
                json!({"id": event_id(), "run": run, "client_time_ms": T0 + 5, "string_lines": {
                    "series": "logs/stdout",
                    "steps": shuffled_lines.iter().map(|l| l.0).collect::<Vec<_>>(),
                    "lines": shuffled_lines.iter().map(|l| l.1.clone()).collect::<Vec<_>>(),
                }}),
                json!({"id": event_id(), "run": run, "attributes_set": {"attributes": {"params": {"epochs": 10}}}}),
                json!({"id": event_id(), "run": run, "attributes_deleted": {"paths": ["scratch/tmp"]}}),
                json!({"id": event_id(), "run": run, "tags_removed": {"tags": ["to-remove"]}}),
                json!({"id": event_id(), "run": run, "lineage": {"direction": "input", "kind": "dataset",
                    "name": "mnist", "version": "v3", "digest": "sha256:abc123", "uri": "s3://datasets/mnist/v3"}}),
                json!({"id": event_id(), "run": run, "lineage": {"direction": "output", "kind": "model",
                    "name": "resnet18-mnist", "version": "1", "uri": "s3://models/resnet18-mnist/1"}}),
            ],
        )
        .await,
    );

    // ---- files: 5 MB of random bytes, and two images of a file series ----
    let mut big = vec![0u8; 5 * 1024 * 1024];
    for (i, chunk) in big.chunks_mut(8).enumerate() {
        let r = mix(i as u64 ^ 0xf11e).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let big_sha = hex::encode(Sha256::digest(&big));
    let up = put_file(&server, run, "checkpoints/model.bin", big.clone()).await;
    assert_eq!(up["sha256"], json!(big_sha), "{up}");
    assert_eq!(up["size"], json!(big.len()), "{up}");
    assert_eq!(up["media_type"], json!("application/octet-stream"), "{up}");
    assert_eq!(up["duplicate"], json!(false), "{up}");
    positions.push(up["position"].as_str().unwrap().to_string());

    let png7 = tiny_png(4, 3, 7);
    let png8 = tiny_png(4, 3, 8);
    assert_ne!(png7, png8);
    let up7 = put_file(
        &server,
        run,
        "images/sample.png?step=7&media_type=image/png",
        png7.clone(),
    )
    .await;
    assert_eq!(up7["step"], json!(7), "{up7}");
    assert_eq!(up7["media_type"], json!("image/png"), "{up7}");
    positions.push(up7["position"].as_str().unwrap().to_string());
    // No media type given: guessed from the extension.
    let up8 = put_file(&server, run, "images/sample.png?step=8", png8.clone()).await;
    assert_eq!(up8["media_type"], json!("image/png"), "{up8}");
    positions.push(up8["position"].as_str().unwrap().to_string());

    positions.push(
        post_ok(
            &server,
            vec![json!({"id": event_id(), "run": run, "run_state": {"state": "finished", "message": "done"}})],
        )
        .await,
    );
    let pos = merge_positions(&positions);

    // ---- the run ----
    let (status, detail) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}?min_position={pos}&wait_ms=30000"),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    let r = &detail["run"];
    assert_eq!(r["run"], json!(run));
    assert_eq!(r["name"], json!("resnet baseline"));
    assert_eq!(r["experiment"], json!("e2e"));
    assert_eq!(r["description"], json!("round-trip test run"));
    assert_eq!(r["parent_run"], Value::Null);
    assert_eq!(r["owner"], json!("admin"));
    assert_eq!(r["state"], json!("finished"), "{r}");
    assert_eq!(r["state_message"], json!("done"));
    assert!(
        r["finished_ms"].as_i64().is_some(),
        "a finished run has finished_ms: {r}"
    );
    assert_eq!(r["deleted"], json!(false));

    // ---- attributes, with their types ----
    let want_attrs: BTreeMap<String, Value> = [
        ("params/optimizer/name", json!("adam")),
        ("params/optimizer/lr", json!(0.001)),
        ("params/optimizer/eps", json!(1e-8)),
        ("params/optimizer/betas", json!({"$set": ["0.9", "0.999"]})),
        ("params/epochs", json!(10)),
        ("params/layers", json!({"$set": ["conv1", "conv2", "fc"]})),
        ("params/dropout", json!(0.0)),
        ("params/whole", json!(2.0)),
        ("params/nan_param", json!({"$float": "NaN"})),
        ("params/inf_param", json!({"$float": "-Infinity"})),
        ("params/use_amp", json!(false)),
        ("seed", json!(-42)),
        ("big_int", json!(9_007_199_254_740_993i64)),
        ("max_i64", json!(i64::MAX)),
        ("min_i64", json!(i64::MIN)),
        ("started", json!({"$datetime": 1_709_294_400_250i64})),
        ("ended", json!({"$datetime": 1_709_294_500_000i64})),
        ("notes", json!("unicode ✓ — tab\there, \"quoted\"")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let got_attrs: BTreeMap<String, Value> = detail["attributes"]
        .as_object()
        .expect("attributes")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        got_attrs.keys().collect::<Vec<_>>(),
        want_attrs.keys().collect::<Vec<_>>(),
        "attribute paths"
    );
    for (k, want) in &want_attrs {
        let got = &got_attrs[k];
        assert_eq!(got, want, "attribute {k}");
        // serde_json compares 2 and 2.0 as different numbers already; say it outright for the types.
        if let (Value::Number(g), Value::Number(w)) = (got, want) {
            assert_eq!(
                (g.is_i64(), g.is_u64(), g.is_f64()),
                (w.is_i64(), w.is_u64(), w.is_f64()),
                "type of {k}"
            );
        }
    }

    // ---- tags, lineage ----
    assert_eq!(detail["tags"], json!(["baseline", "resnet"]));
    let lineage = detail["lineage"].as_array().expect("lineage");
    assert_eq!(lineage.len(), 2, "{lineage:?}");
    let strip = |l: &Value| {
        assert!(l["time_ms"].as_i64().is_some(), "lineage time_ms: {l}");
        let mut l = l.clone();
        l.as_object_mut().unwrap().remove("time_ms");
        l
    };
    assert_eq!(
        strip(&lineage[0]),
        json!({"direction": "input", "kind": "dataset", "name": "mnist", "version": "v3",
               "digest": "sha256:abc123", "uri": "s3://datasets/mnist/v3"})
    );
    assert_eq!(
        strip(&lineage[1]),
        json!({"direction": "output", "kind": "model", "name": "resnet18-mnist", "version": "1",
               "digest": "", "uri": "s3://models/resnet18-mnist/1"})
    );

    // ---- files: the listing, then the bytes ----
    let files = detail["files"].as_array().expect("files");
    let listed: Vec<(String, Value, String, u64, String)> = files
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["step"].clone(),
                f["sha256"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["media_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    assert_eq!(
        listed,
        vec![
            (
                "checkpoints/model.bin".into(),
                Value::Null,
                big_sha.clone(),
                big.len() as u64,
                "application/octet-stream".into()
            ),
            (
                "images/sample.png".into(),
                json!(7),
                sha(&png7),
                png7.len() as u64,
                "image/png".into()
            ),
            (
                "images/sample.png".into(),
                json!(8),
                sha(&png8),
                png8.len() as u64,
                "image/png".into()
            ),
        ]
    );
    let (status, ct, bytes) = get_bytes(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}/files/checkpoints/model.bin"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    assert_eq!(bytes.len(), big.len());
    assert_eq!(sha(&bytes), big_sha);
    assert!(bytes == big, "downloaded bytes differ from the upload");
    for (step, png) in [(7, &png7), (8, &png8)] {
        let (status, ct, bytes) = get_bytes(
            &server,
            &format!("/api/v1/projects/{PROJECT}/runs/{run}/files/images/sample.png?step={step}"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(ct.as_deref(), Some("image/png"));
        assert_eq!(&bytes, png, "image at step {step}");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
    let (status, _, _) = get_bytes(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}/files/images/sample.png?step=9"),
    )
    .await;
    assert_eq!(status, 404, "no image was logged at step 9");

    // ---- series listing and summaries ----
    let kinds: Vec<(String, String, u64)> = detail["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().into(),
                s["kind"].as_str().unwrap().into(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("logs/stdout".into(), "string".into(), lines.len() as u64),
            ("train/bits".into(), "float".into(), N as u64),
            ("train/loss".into(), "float".into(), N as u64),
            ("val/score".into(), "float".into(), N as u64),
        ]
    );
    for (s, name) in SERIES.iter().enumerate() {
        let m = &detail["metrics"][*name];
        assert_eq!(m["count"], json!(N), "{name}: {m}");
        assert_eq!(m["last_step"], json!(N - 1), "{name}: {m}");
        let last = parse_float(&m["last"]).expect("last");
        assert!(
            same_float(last, expected_value(s, N - 1)),
            "{name}: last {last} != {}",
            expected_value(s, N - 1)
        );
        let finite: Vec<f64> = (0..N).map(|st| expected_value(s, st)).filter(|v| !v.is_nan()).collect();
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            same_float(parse_float(&m["min"]).expect("min"), min),
            "{name}: min {} != {min}",
            m["min"]
        );
        assert!(
            same_float(parse_float(&m["max"]).expect("max"), max),
            "{name}: max {} != {max}",
            m["max"]
        );
        if s != 1 {
            // loss and score hold both infinities, so their mean is NaN whatever the summing order.
            assert!(
                parse_float(&m["mean"]).expect("mean").is_nan(),
                "{name}: mean {}",
                m["mean"]
            );
        }
    }

    // ---- every point of every series, exactly ----
    for (s, name) in SERIES.iter().enumerate() {
        let (steps, times, values, pages) = read_all_points(&server, run, name, &pos).await;
        assert_eq!(steps.len(), N as usize, "{name}: number of points");
        assert!(pages >= (N as usize).div_ceil(10_000), "{name}: read in {pages} pages");
        let mut bad = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            if *st != i as i64 {
                bad.push(format!("position {i} holds step {st}"));
            } else if times[i] != expected_time(s, *st) {
                bad.push(format!("step {st}: time {} != {}", times[i], expected_time(s, *st)));
            } else if !same_float(values[i], expected_value(s, *st)) {
                bad.push(format!(
                    "step {st}: value {:e} != {:e}",
                    values[i],
                    expected_value(s, *st)
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{name}: {} wrong points, first: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        // The specials really went through.
        if s == 0 {
            assert!(values[10].is_nan());
            assert_eq!(values[20], f64::INFINITY);
            assert_eq!(values[30], f64::NEG_INFINITY);
            assert_eq!(values[60].to_bits(), 1);
        }
    }
    // A bounded range read with a small page limit.
    let (status, page) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}/series?path=train/bits&from_step=12340&to_step=12350&limit=4"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["steps"], json!([12340, 12341, 12342, 12343]));
    assert_eq!(page["next_from_step"], json!(12344));
    for (i, v) in page["values"].as_array().unwrap().iter().enumerate() {
        assert!(same_float(parse_float(v).unwrap(), expected_value(1, 12340 + i as i64)));
    }

    // ---- buckets agree with the points ----
    for s in [0usize, 2, 1] {
        let name = SERIES[s];
        for (from, to, n) in [
            (0i64, N - 1, 100usize),
            (123, 98_765, 7),
            (0, N - 1, 1),
            (40_000, 40_999, 10),
        ] {
            let (status, b) = get_json(
                &server,
                &format!(
                    "/api/v1/projects/{PROJECT}/runs/{run}/series?path={name}&buckets={n}&from_step={from}&to_step={to}"
                ),
            )
            .await;
            assert_eq!(status, 200, "{b}");
            let buckets = b["buckets"].as_array().expect("buckets");
            assert!(
                !buckets.is_empty() && buckets.len() <= n,
                "{name} {from}..={to}: {} buckets for {n}",
                buckets.len()
            );
            let mut prev_to = from - 1;
            let mut total = 0u64;
            for bk in buckets {
                let (bf, bt) = (bk["from_step"].as_i64().unwrap(), bk["to_step"].as_i64().unwrap());
                assert!(
                    bf > prev_to && bt >= bf && bt <= to,
                    "{name}: bucket {bf}..={bt} after {prev_to} in {from}..={to}"
                );
                prev_to = bt;
                let vals: Vec<f64> = (bf..=bt).map(|st| expected_value(s, st)).collect();
                let count = bk["count"].as_u64().unwrap();
                assert_eq!(count, vals.len() as u64, "{name}: count of bucket {bf}..={bt}");
                total += count;
                let non_nan: Vec<f64> = vals.iter().copied().filter(|v| !v.is_nan()).collect();
                let (min, max) = if non_nan.is_empty() {
                    (None, None)
                } else {
                    (
                        Some(non_nan.iter().copied().fold(f64::INFINITY, f64::min)),
                        Some(non_nan.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                    )
                };
                let got_min = parse_float(&bk["min"]);
                let got_max = parse_float(&bk["max"]);
                assert!(
                    got_min.map(f64::to_bits) == min.map(f64::to_bits),
                    "{name}: min of bucket {bf}..={bt}: {got_min:?} != {min:?}"
                );
                assert!(
                    got_max.map(f64::to_bits) == max.map(f64::to_bits),
                    "{name}: max of bucket {bf}..={bt}: {got_max:?} != {max:?}"
                );
                assert_eq!(bk["last_step"], json!(bt));
                let lv = parse_float(&bk["last_value"]).unwrap();
                assert!(
                    same_float(lv, expected_value(s, bt)),
                    "{name}: last value of bucket {bf}..={bt}"
                );
                assert_eq!(bk["last_time_ms"], json!(expected_time(s, bt)));
                if s != 1 && !non_nan.is_empty() {
                    let has_pos_inf = non_nan.contains(&f64::INFINITY);
                    let has_neg_inf = non_nan.contains(&f64::NEG_INFINITY);
                    let mean = parse_float(&bk["mean"]).expect("mean");
                    if has_pos_inf && has_neg_inf {
                        assert!(
                            mean.is_nan(),
                            "{name}: mean of bucket {bf}..={bt} holding both infinities: {mean}"
                        );
                    } else if has_pos_inf || has_neg_inf {
                        let want = if has_pos_inf { f64::INFINITY } else { f64::NEG_INFINITY };
                        assert_eq!(mean, want, "{name}: mean of bucket {bf}..={bt}");
                    } else if non_nan.iter().all(|v| v.abs() < 1e100) {
                        let want = non_nan.iter().sum::<f64>() / non_nan.len() as f64;
                        assert!(
                            (mean - want).abs() <= 1e-9 * want.abs().max(1.0),
                            "{name}: mean of bucket {bf}..={bt}: {mean} != {want}"
                        );
                    }
                }
            }
            assert_eq!(
                total,
                (to - from + 1) as u64,
                "{name}: buckets over {from}..={to} must cover every point once"
            );
        }
    }

    // ---- the string series ----
    let (status, got) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}/lines?path=logs/stdout"),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let want_steps: Vec<i64> = lines.iter().map(|l| l.0).collect();
    let want_lines: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(got["steps"], json!(want_steps));
    assert_eq!(got["lines"], json!(want_lines));
    assert_eq!(
        got["times_ms"],
        json!(vec![T0 + 5; lines.len()]),
        "lines without times take the client time"
    );
    assert_eq!(got["next_from_step"], Value::Null);
}

/// Values at the edges of what the schema accepts, checked on their own so that a failure here
/// names exactly which value does not survive.
#[tokio::test(flavor = "multi_thread")]
async fn edge_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let run = "edge-run";
    let pos = post_ok(
        &server,
        vec![
            json!({"id": event_id(), "run": run, "run_created": {"name": "edges"}}),
            json!({"id": event_id(), "run": run, "attributes_set": {"attributes": {
                "neg_zero": -0.0,
                "set_of_one_empty_string": [""],
                "set_with_separator_char": ["a\u{1f}b", "c"],
                "set_with_empty_member": ["", "x"],
            }}}),
            json!({"id": event_id(), "run": run, "float_points": {"series": "z", "steps": [0, 1, 2],
                "times_ms": [T0, T0, T0], "values": [-0.0, 0.0, -5e-324]}}),
        ],
    )
    .await;
    let (status, detail) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}?min_position={pos}&wait_ms=30000"),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    let a = &detail["attributes"];
    let mut problems = Vec::new();
    let nz = a["neg_zero"].as_f64();
    if nz.map(f64::to_bits) != Some((-0.0f64).to_bits()) {
        problems.push(format!("attribute neg_zero: sent -0.0, read back {}", a["neg_zero"]));
    }
    for (k, want) in [
        ("set_of_one_empty_string", json!({"$set": [""]})),
        ("set_with_separator_char", json!({"$set": ["a\u{1f}b", "c"]})),
        ("set_with_empty_member", json!({"$set": ["", "x"]})),
    ] {
        if a[k] != want {
            problems.push(format!("attribute {k}: sent {want}, read back {}", a[k]));
        }
    }
    let (status, page) = get_json(&server, &format!("/api/v1/projects/{PROJECT}/runs/{run}/series?path=z")).await;
    assert_eq!(status, 200, "{page}");
    let got: Vec<f64> = page["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| parse_float(v).unwrap())
        .collect();
    for (i, want) in [-0.0f64, 0.0, -5e-324].into_iter().enumerate() {
        if got.get(i).map(|g| g.to_bits()) != Some(want.to_bits()) {
            problems.push(format!("point at step {i}: sent {want:?}, read back {:?}", got.get(i)));
        }
    }
    // The event history (decoded from the stored protobuf) must hold exactly what was sent too;
    // comparing it with the views tells whether a loss happens in the log or in the views.
    let (status, history) = get_json(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/{run}/events?limit=100"),
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{history}");
    let logged: Vec<u64> = events[2]["float_points"]["values"]
        .as_array()
        .expect("float_points event")
        .iter()
        .map(|v| parse_float(v).unwrap().to_bits())
        .collect();
    if logged != [(-0.0f64).to_bits(), 0.0f64.to_bits(), (-5e-324f64).to_bits()] {
        problems.push(format!(
            "event history: float_points values {}",
            events[2]["float_points"]["values"]
        ));
    }
    let logged_attrs = &events[1]["attributes_set"]["attributes"];
    if logged_attrs["neg_zero"].as_f64().map(f64::to_bits) != Some((-0.0f64).to_bits())
        || logged_attrs["set_of_one_empty_string"] != json!({"$set": [""]})
    {
        problems.push(format!("event history: attributes {logged_attrs}"));
    }
    assert!(
        problems.is_empty(),
        "values changed on the way through:\n  {}",
        problems.join("\n  ")
    );
}

/// A chart asks for N buckets of a series without a step range; it must get buckets spread over
/// the steps the series has, not over the whole domain of steps (which puts everything in one).
#[tokio::test(flavor = "multi_thread")]
async fn bucket_read_without_range_spans_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let run = "bucket-run";
    let steps: Vec<i64> = (0..10_000).collect();
    let pos = post_ok(
        &server,
        vec![
            json!({"id": event_id(), "run": run, "run_created": {"name": "buckets"}}),
            json!({"id": event_id(), "run": run, "float_points": {"series": "loss",
                "values": steps.iter().map(|&s| s as f64 * 0.5).collect::<Vec<_>>(), "steps": steps}}),
        ],
    )
    .await;
    let base = format!("/api/v1/projects/{PROJECT}/runs/{run}/series?path=loss&buckets=100&min_position={pos}");
    // With the range given, the rollups answer with about 100 buckets.
    let (status, ranged) = get_json(&server, &format!("{base}&from_step=0&to_step=9999")).await;
    assert_eq!(status, 200, "{ranged}");
    let ranged = ranged["buckets"].as_array().unwrap().len();
    assert!((50..=100).contains(&ranged), "{ranged} buckets over 0..=9999");
    // Without it, the same series must not collapse into one bucket.
    let (status, open) = get_json(&server, &base).await;
    assert_eq!(status, 200, "{open}");
    let buckets = open["buckets"].as_array().unwrap();
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10_000);
    assert!(
        buckets.len() >= 50,
        "buckets=100 without from_step/to_step gave {} bucket(s) for a series of steps 0..=9999: {}",
        buckets.len(),
        serde_json::to_string(&buckets[..buckets.len().min(2)]).unwrap()
    );
}
