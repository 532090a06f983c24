//! Super-seeding on the wire (issue 15): a peer holding a whole file sends,
//! of the chunk asked for and those the request names instead, the one it
//! has sent least, says which on the first message, and refuses a bad list
//! without counting anything; a real downloader verifies such a chunk
//! against its own digest and writes it where it belongs.

mod common;

use common::{
    download::fetch_whole,
    metrics::{sample, scrape},
    *,
};
use hive::pb::peer::{GetChunkRequest, peer_client::PeerClient};
use tonic::{Code, transport::Channel};

/// Asks for chunk `n` of "f", naming `instead`: the chunk the first
/// message names (0 if none) and all the bytes.
async fn ask(
    client: &mut PeerClient<Channel>,
    n: u32,
    instead: &[u32],
    may_decline: bool,
) -> Result<(u32, Vec<u8>), tonic::Status> {
    let req = GetChunkRequest {
        name: "f".into(),
        chunk: n,
        may_decline,
        instead: instead.to_vec(),
    };
    let mut stream = client.get_chunk(req).await?.into_inner();
    let (mut sent, mut out) = (None, Vec::new());
    while let Some(msg) = stream.message().await? {
        sent.get_or_insert(msg.chunk);
        out.extend_from_slice(&msg.data);
    }
    Ok((sent.unwrap_or(0), out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_sends_a_chunk_named_instead_and_says_which() {
    within(60, async {
        let tracker = TestTracker::start().await;
        // 8 chunks of 1 KiB.
        let bytes = data(8 * 1024, 15);
        let seeder = TestPeer::start(&tracker, &[("f", &bytes)]).await;
        let mut client = PeerClient::new(channel(seeder.listen).await);
        let (sent, got) = ask(&mut client, 1, &[], false).await.expect("chunk 1");
        assert_eq!((sent, got.as_slice()), (1, chunk_of(&bytes, 1)));
        // Chunk 1 went out once, 3 and 2 never: the first of those comes.
        let (sent, got) = ask(&mut client, 1, &[3, 2], true).await.expect("a swap");
        assert_eq!((sent, got.as_slice()), (3, chunk_of(&bytes, 3)));
        // A bad list is refused, and counts nothing.
        let too_many: Vec<u32> = (0..65).map(|i| i % 8 + 1).collect();
        for bad in [too_many, vec![0], vec![9]] {
            let err = ask(&mut client, 2, &bad, true).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        }
        // Chunk 2 was never sent: it comes as asked, not declined.
        let (sent, got) = ask(&mut client, 2, &[4], true).await.expect("chunk 2");
        assert_eq!((sent, got.as_slice()), (2, chunk_of(&bytes, 2)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloader_verifies_and_places_a_chunk_sent_instead() {
    within(60, async {
        let tracker = TestTracker::start().await;
        // 16 chunks of 1 KiB; chunks 1-8 go out once before the download.
        let bytes = data(16 * 1024, 16);
        let extra = ["--metrics", "127.0.0.1:0"];
        let seeder = TestPeer::start_with(&tracker.url(), &[("f", &bytes)], &extra).await;
        for n in 1..=8 {
            get_chunk(seeder.listen, "f", n).await.expect("sent before");
        }
        let leecher = TestPeer::start(&tracker, &[]).await;
        let done = fetch_whole(leecher.control, "f")
            .await
            .expect("the download");
        let got = std::fs::read(leecher.dir.join("f")).expect("the downloaded file");
        assert!(got == bytes, "every chunk in its place");
        assert_eq!(hex(&done.digest), blake3::hash(&bytes).to_hex().as_str());
        assert_eq!(done.chunks_fetched, 16);
        let m = scrape(seeder.daemon.metrics_addr()).await;
        // Its requests for chunks 1-8 named unsent chunks too: the seeder
        // sent those in their place (all but impossible otherwise: the
        // download would have to ask for 9-16 before any of 1-8).
        let swapped = sample(&m, "hive_peer_uploads_swapped_total").unwrap_or(0.0);
        assert!(swapped >= 1.0, "{m}");
    })
    .await;
}
