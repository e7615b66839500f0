//! Files in an S3-compatible blob store (`--blobs s3://BUCKET/PREFIX?endpoint=...`), against a
//! real S3 server process (s3s-fs): uploads through runstream's API and MLflow's proxied
//! artifacts land in the bucket under their content address, read back byte for byte, survive a
//! restart of runstream, and a store that is away is a 503 with Retry-After, not an error that
//! loses the upload.

mod common;

use common::{Server, client, event_id, post_events};
use runstream_testkit::S3;
use sha2::{Digest, Sha256};

const PROJECT: &str = "default";

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

async fn put(s: &Server, path: &str, body: &[u8]) -> (u16, String, Option<String>) {
    let r = client()
        .put(s.url(path))
        .bearer_auth(&s.token)
        .body(body.to_vec())
        .send()
        .await
        .expect("put");
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (r.status().as_u16(), r.text().await.unwrap_or_default(), retry)
}

async fn get(s: &Server, path: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(s.url(path))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.bytes().await.unwrap_or_default().to_vec())
}

const MLFLOW_PATH: &str = "/api/2.0/mlflow-artifacts/artifacts/0/r1/artifacts/plot.bin";

/// Every file reads back as written.
async fn check(s: &Server, small: &[u8], large: &[u8], artifact: &[u8]) {
    for (path, body) in [
        ("r1/files/artifacts/notes.bin", small),
        ("r1/files/model/weights.bin", large),
    ] {
        let (status, got) = get(s, &format!("/api/v1/projects/{PROJECT}/runs/{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert!(got == body, "{path}: read back other bytes");
    }
    let (status, got) = get(s, MLFLOW_PATH).await;
    assert_eq!((status, got == artifact), (200, true));
}

fn start(dir: &std::path::Path, s3: &S3) -> Server {
    let blobs = s3.url("runstream", "blobs");
    Server::start_with_env("serve", dir, &["--blobs", blobs.as_str()], &S3::env())
}

#[tokio::test(flavor = "multi_thread")]
async fn files_live_in_an_s3_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s3 = S3::start(&["runstream"]);
    let mut server = start(dir.path(), &s3);
    let created = serde_json::json!({"events": [{"id": event_id(), "run": "r1", "run_created": {"name": "r1"}}]});
    let (status, body) = post_events(&server, PROJECT, &created).await;
    assert_eq!(status, 200, "{body}");

    // A small file and one past the store's 5 MiB part size, through runstream's file API.
    let small = bytes(200_000, 1);
    let large = bytes(12 * 1024 * 1024 + 17, 2);
    let files = [
        ("r1/files/artifacts/notes.bin", &small),
        ("r1/files/model/weights.bin", &large),
    ];
    for (path, body) in files {
        let (status, text, _) = put(&server, &format!("/api/v1/projects/{PROJECT}/runs/{path}"), body).await;
        assert_eq!(status, 200, "{path}: {text}");
        // In the bucket, under the prefix, at its content address, whole.
        let sha = hex::encode(Sha256::digest(body));
        let key = format!("blobs/sha256/{}/{sha}", &sha[..2]);
        let stored = std::fs::read(s3.object_file("runstream", &key)).expect("the object in the bucket");
        assert!(stored == **body, "{path}: the bucket holds other bytes");
    }
    // MLflow's proxied artifacts go to the same store.
    let artifact = bytes(3000, 3);
    let (status, text, _) = put(&server, MLFLOW_PATH, &artifact).await;
    assert_eq!(status, 200, "{text}");

    check(&server, &small, &large, &artifact).await;
    // What runstream acknowledged is in the store, not in the process: after a restart it reads
    // the same.
    server.stop();
    let server = start(dir.path(), &s3);
    check(&server, &small, &large, &artifact).await;

    // The store away: an upload is refused with 503 and Retry-After, and a read is unavailable,
    // not missing.
    s3.stop();
    let (status, text, retry) = put(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/r1/files/later.bin"),
        &bytes(1000, 4),
    )
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(retry.is_some(), "503 without Retry-After");
    let (status, _) = get(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/r1/files/artifacts/notes.bin"),
    )
    .await;
    assert_eq!(status, 503);
    // Back: the upload goes through when the client sends it again.
    s3.restart();
    let (status, text, _) = put(
        &server,
        &format!("/api/v1/projects/{PROJECT}/runs/r1/files/later.bin"),
        &bytes(1000, 4),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}
