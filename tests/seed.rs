//! The seed's scenario, end to end, through peerctl as a user would run it:
//! client2 shares `23`, client1 shares `bse`, both are listed; client1 fetches
//! chunk 2 of `23` from client2; the tracker then lists client1 for chunk 2,
//! and a third peer fetches chunk 2 from client1.

mod common;

use common::*;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "peerctl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("peerctl printed nothing");
    serde_json::from_str(last).expect("peerctl --json prints JSON")
}

fn file<'a>(files: &'a Value, name: &str) -> &'a Value {
    files["files"]
        .as_array()
        .expect("files array")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {files}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let f23 = data(69630, 23);
        let bse = data(1822, 1822);
        let client2 = TestPeer::start(&tracker, &[("23", &f23)]).await;
        let client1 = TestPeer::start(&tracker, &[("bse", &bse)]).await;

        // Message 2: both files, with their holders and chunk lists.
        let files = json(&client1.peerctl(&["--json", "files"]).await);
        let f = file(&files, "23");
        assert_eq!(f["size"], 69630);
        assert_eq!(f["chunk_count"], 68);
        assert_eq!(f["holders"][0]["addr"], client2.listen.to_string());
        assert_eq!(f["holders"][0]["chunks"], serde_json::json!([[1, 68]]));
        assert_eq!(
            f["digest"],
            blake3::hash(&f23).to_hex().as_str(),
            "the digest is b3sum's"
        );
        let b = file(&files, "bse");
        assert_eq!(b["chunk_count"], 2);
        assert_eq!(b["holders"][0]["addr"], client1.listen.to_string());
        assert_eq!(b["holders"][0]["chunks"], serde_json::json!([[1, 2]]));

        // Messages 3, 5 and 4: client1 fetches chunk 2 of 23 from client2.
        let from2 = client2.listen.to_string();
        let done = json(
            &client1
                .peerctl(&["--json", "fetch", "23", "--chunk", "2", "--from", &from2])
                .await,
        );
        assert_eq!(done["event"], "done");
        assert_eq!(done["source"], from2);
        assert_eq!(done["bytes_received"], 1024);
        // Client1 now holds and serves exactly that chunk.
        assert_eq!(
            get_chunk(client1.listen, "23", 2).await.unwrap(),
            chunk_of(&f23, 2)
        );
        let err = get_chunk(client1.listen, "23", 3).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::NotFound,
            "only chunk 2 was fetched"
        );

        // The tracker lists client1 as a holder of chunk 2.
        let located = json(&client1.peerctl(&["--json", "locate", "23"]).await);
        let holders = located["holders"].as_array().unwrap();
        let c1 = holders
            .iter()
            .find(|h| h["addr"] == client1.listen.to_string())
            .expect("client1 is a holder of 23");
        assert_eq!(c1["chunks"], serde_json::json!([[2, 2]]));
        assert_eq!(located["chunk_holders"][0], 1);
        assert_eq!(located["chunk_holders"][1], 2);

        // A third peer fetches chunk 2 from client1.
        let client3 = TestPeer::start(&tracker, &[]).await;
        let from1 = client1.listen.to_string();
        let done = json(
            &client3
                .peerctl(&["--json", "fetch", "23", "--chunk", "2", "--from", &from1])
                .await,
        );
        assert_eq!(done["source"], from1);
        assert_eq!(
            get_chunk(client3.listen, "23", 2).await.unwrap(),
            chunk_of(&f23, 2)
        );
        let located = json(&client3.peerctl(&["--json", "locate", "23"]).await);
        assert_eq!(located["chunk_holders"][1], 3);
        assert_eq!(located["holder_count"], 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_output_and_exit_codes() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f23 = data(69630, 23);
        let client = TestPeer::start(&tracker, &[("23", &f23)]).await;

        let out = client.peerctl(&["files"]).await;
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains("23") && text.contains("1-68"),
            "{text}"
        );

        // A refusal is one line on stderr and exit 64 + the gRPC code.
        let out = client.peerctl(&["locate", "no-such-file"]).await;
        assert_eq!(out.status.code(), Some(64 + tonic::Code::NotFound as i32));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("NOT_FOUND"), "{err}");

        // Chunks are numbered from 1: 0 is a usage error...
        let out = client.peerctl(&["fetch", "23", "--chunk", "0"]).await;
        assert_eq!(out.status.code(), Some(2));
        // ...and one past the last is refused by the daemon.
        let out = client.peerctl(&["fetch", "23", "--chunk", "69"]).await;
        assert_eq!(
            out.status.code(),
            Some(64 + tonic::Code::InvalidArgument as i32)
        );

        // Nothing listening: UNAVAILABLE.
        let out = peerctl("http://127.0.0.1:9", "127.0.0.1:9", &["status"]).await;
        assert_eq!(
            out.status.code(),
            Some(64 + tonic::Code::Unavailable as i32)
        );

        let out = client.peerctl(&["health"]).await;
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    })
    .await;
}
