//! The tracker's web side (`--web`): the JSON API's status codes, paging
//! bounds, counts exact against Locate, names escaped in the HTML, and
//! request rates by RPC. The tracker runs in process
//! ([`hive_tracker::serve_with_web`], both listeners on port 0); sessions
//! are made through the catalog, reads go over HTTP and gRPC as a client
//! would send them.

mod common;

use std::{io::Write, net::SocketAddr};

use common::{web, within};

use hive::{
    ChunkSet, ChunkSize, FileName, Manifest,
    pb::tracker::{ListFilesRequest, LocateRequest, tracker_client::TrackerClient},
};
use hive_tracker::{
    Config, SharedCatalog,
    registry::{Caller, Offer, Registered},
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;

/// A tracker serving gRPC and its web side; stops on drop.
struct Site {
    grpc: SocketAddr,
    web: SocketAddr,
    catalog: SharedCatalog,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Site {
    async fn start() -> Self {
        let config = Config {
            in_memory: true,
            web_allow_host: vec!["Swarm.Example".into()],
            ..Config::default()
        };
        let catalog = hive_tracker::connect(&config).await.expect("catalog");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let web = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (grpc_addr, web_addr) = (grpc.local_addr().unwrap(), web.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = catalog.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            hive_tracker::serve_with_web(grpc, served, &config, None, Some(web), shutdown)
                .await
                .expect("serve");
        });
        Self {
            grpc: grpc_addr,
            web: web_addr,
            catalog,
            http: web::client(),
            _stop: stop,
        }
    }

    /// `GET path`: the status and the body.
    async fn get(&self, path: &str) -> (u16, String) {
        let (status, body) = web::get_text(&self.http, &format!("http://{}{path}", self.web)).await;
        (status.as_u16(), body)
    }

    /// `GET path`, which must answer 200 with JSON.
    async fn json(&self, path: &str) -> Value {
        web::get_json(&self.http, &format!("http://{}{path}", self.web)).await
    }

    async fn grpc(&self) -> TrackerClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        TrackerClient::new(channel)
    }

    /// A new session at 10.0.0.1:`port` holding `offers`.
    async fn join(&self, port: u16, offers: Vec<Offer>) -> Registered {
        let caller = Caller::New {
            addr: format!("10.0.0.1:{port}"),
            member: None,
        };
        self.catalog
            .register(caller, offers)
            .await
            .expect("register")
    }
}

/// A manifest of `chunks` KiB-sized chunks of content `seed`.
fn manifest(name: &str, chunks: usize, seed: u8) -> Manifest {
    let len = chunks * 1024;
    let mut f = tempfile::tempfile().expect("tempfile");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    f.write_all(&data).expect("write");
    let name = FileName::new(name).expect("name");
    Manifest::from_file(&f, len as u64, name, Some(ChunkSize::MIN)).expect("hash")
}

fn offer(m: &Manifest, held: &[u32]) -> Offer {
    let ranges = held.iter().map(|&c| c..=c);
    Offer {
        manifest: m.clone(),
        chunks: ChunkSet::from_ranges(m.chunk_count(), ranges).expect("chunks"),
    }
}

fn full(m: &Manifest) -> Offer {
    Offer {
        manifest: m.clone(),
        chunks: ChunkSet::full(m.chunk_count()),
    }
}

/// Every value of attribute `attr` in `html`, in order.
fn attrs<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    html.match_indices(&key)
        .map(|(i, _)| {
            let rest = &html[i + key.len()..];
            &rest[..rest.find('"').expect("closed attribute")]
        })
        .collect()
}

/// Walks a JSON list page by page, `size` at a time.
async fn walk(site: &Site, path: &str, list: &str, size: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = site
            .json(&format!("{path}{sep}page_size={size}&page_token={token}"))
            .await;
        let items = page[list].as_array().expect("a list");
        assert!(items.len() <= size, "a page larger than asked");
        all.extend(items.iter().cloned());
        match page["next_page_token"].as_str() {
            Some(next) => token = next.to_owned(),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_their_http_status_and_a_message() {
    within(60, async {
        let site = Site::start().await;
        site.join(4001, vec![full(&manifest("x", 2, 1))]).await;
        let before = site.json("/api/v1/files").await;

        let cases = [
            ("/api/v1/files/nope", 404),
            ("/files/nope", 404),
            // A slash is never in a name: not a token ListFiles gave.
            ("/api/v1/files?page_token=a%2Fb", 400),
            ("/?page_token=a%2Fb", 400),
            ("/api/v1/peers?page_token=not-an-id", 400),
            ("/peers?page_token=not-an-id", 400),
            ("/api/v1/files/x?page_token=zz", 400),
            ("/files/x?page_token=zz", 400),
            ("/api/v1/files?page_size=many", 400),
            ("/api/v1/files?page_size=-1", 400),
            ("/api/v1/nothing", 404),
        ];
        for (path, want) in cases {
            let (status, body) = site.get(path).await;
            assert_eq!(status, want, "{path}: {body}");
            if path.starts_with("/api/v1/files") {
                let error: Value = serde_json::from_str(&body).expect("a JSON error");
                assert!(
                    error["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{body}"
                );
            }
        }
        let (_, body) = site.get("/api/v1/files?page_size=many").await;
        assert!(
            body.contains("page_size"),
            "the message names the parameter: {body}"
        );
        assert_eq!(
            site.json("/api/v1/files").await,
            before,
            "a refusal changed something"
        );
    })
    .await;
}

/// DNS rebinding: a page on another site whose name was made to resolve to
/// the tracker sends that name as Host, and must not read the swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_addresses_localhost_and_allowed_names_may_read_the_page() {
    within(60, async {
        let site = Site::start().await;
        site.join(4001, vec![full(&manifest("secret-name", 2, 1))])
            .await;
        let port = site.web.port();
        let get = |path: &'static str, host: String| {
            let http = site.http.clone();
            let url = format!("http://{}{path}", site.web);
            async move {
                let reply = http.get(url).header("host", host).send().await.unwrap();
                (reply.status().as_u16(), reply.text().await.unwrap())
            }
        };
        for path in ["/", "/peers", "/api/v1/files", "/api/v1/peers"] {
            for host in [
                format!("attacker.example:{port}"),
                "127.0.0.1.nip.io".to_owned(),
            ] {
                let (status, body) = get(path, host.clone()).await;
                assert_eq!(status, 403, "{path} as {host}: {body}");
                assert!(!body.contains("secret-name"), "{path} leaked: {body}");
                assert!(
                    body.contains("--web-allow-host"),
                    "the refusal names the flag: {body}"
                );
            }
            for host in [
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
                format!("localhost:{port}"),
                format!("swarm.example:{port}"),
            ] {
                let (status, body) = get(path, host.clone()).await;
                assert_eq!(status, 200, "{path} as {host}: {body}");
            }
        }
        let (_, files) = get("/api/v1/files", format!("127.0.0.1:{port}")).await;
        assert!(files.contains("secret-name"), "{files}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_is_paged_within_its_cap() {
    within(120, async {
        let site = Site::start().await;
        // 230 files: past the 200 a page may hold.
        let files: Vec<Offer> = (0..230)
            .map(|i| full(&manifest(&format!("f{i:03}"), 1, i as u8)))
            .collect();
        site.join(4000, files).await;
        let page = site.json("/api/v1/files?page_size=100000").await;
        assert_eq!(page["files"].as_array().unwrap().len(), 200);
        assert_eq!(page["next_page_token"], "f199");
        assert_eq!(
            site.json("/api/v1/files").await["files"]
                .as_array()
                .unwrap()
                .len(),
            50
        );
        let all = walk(&site, "/api/v1/files", "files", 70).await;
        let names: Vec<&str> = all.iter().map(|f| f["name"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..230).map(|i| format!("f{i:03}")).collect();
        assert_eq!(names, want, "each file once, in name order");

        // 60 more sessions hold one shared file.
        let shared = manifest("shared", 4, 9);
        for i in 0..60 {
            site.join(5000 + i, vec![full(&shared)]).await;
        }
        let page = site.json("/api/v1/peers?page_size=100000").await;
        assert_eq!(page["peers"].as_array().unwrap().len(), 61);
        let page = site.json("/api/v1/peers").await;
        assert_eq!(
            page["peers"].as_array().unwrap().len(),
            50,
            "the default page"
        );
        assert!(page["next_page_token"].is_string());
        // The first session holds 230 files: it lists 10 and says how many.
        let first = page["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["addr"] == "10.0.0.1:4000")
            .cloned();
        if let Some(p) = first {
            assert_eq!(p["file_count"], 230);
            assert_eq!(p["files"].as_array().unwrap().len(), 10);
        }
        let peers = walk(&site, "/api/v1/peers", "peers", 7).await;
        let ids: Vec<&str> = peers
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted, "each peer once, in id order");
        assert_eq!(ids.len(), 61);

        let holders = walk(&site, "/api/v1/files/shared", "holders", 25).await;
        assert_eq!(holders.len(), 60);
        let page = site.json("/api/v1/files/shared?page_size=100000").await;
        assert_eq!(page["holders"].as_array().unwrap().len(), 60);
        assert_eq!(page["file"]["holder_count"], 60);

        // The pages are paged alike.
        let (status, html) = site.get("/peers").await;
        assert_eq!(status, 200);
        assert_eq!(attrs(&html, "data-peer").len(), 50);
        assert!(html.contains("Next page"));
        let (_, html) = site.get("/").await;
        assert_eq!(attrs(&html, "data-file").len(), 50);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_against_locate() {
    within(60, async {
        let site = Site::start().await;
        let m = manifest("m", 8, 1);
        site.join(4001, vec![offer(&m, &[1, 2, 3, 4])]).await;
        site.join(4002, vec![offer(&m, &[3, 4, 5, 6])]).await;
        site.join(4003, vec![offer(&m, &[4, 6])]).await;
        let b = site.join(4004, vec![full(&m)]).await;
        site.catalog
            .register_chunks(
                hive_tracker::registry::Credentials {
                    peer: b.peer,
                    token: b.token.as_ref().unwrap().hash(),
                },
                m.name(),
                &[],
                &[8..=8],
            )
            .await
            .expect("withdraw chunk 8");

        let located = site
            .grpc()
            .await
            .locate(LocateRequest {
                name: "m".into(),
                ..Default::default()
            })
            .await
            .expect("locate")
            .into_inner();
        let counts: Vec<u64> = located.chunk_holders.iter().map(|&c| c.into()).collect();
        assert_eq!(counts, [2, 2, 3, 4, 2, 3, 1, 0]);

        let file = site.json("/api/v1/files/m").await;
        let json_counts: Vec<u64> = file["chunk_holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(json_counts, counts);
        assert_eq!(file["file"]["holder_count"], located.holder_count);
        let mut held: Vec<(String, u64)> = file["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["addr"].as_str().unwrap().into(),
                    h["chunks_held"].as_u64().unwrap(),
                )
            })
            .collect();
        held.sort();
        let want = [
            ("10.0.0.1:4001", 4),
            ("10.0.0.1:4002", 4),
            ("10.0.0.1:4003", 2),
            ("10.0.0.1:4004", 7),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(a, n)| (a.to_string(), *n)).collect();
        assert_eq!(held, want);

        let listed = site.json("/api/v1/files").await;
        assert_eq!(listed["files"][0]["available_chunks"], 7);
        assert_eq!(listed["files"][0]["rarest_chunk_holders"], 0);
        assert_eq!(listed["files"][0]["holder_count"], 4);

        // The strip: one cell per chunk, its count; the rarest marked.
        let (status, html) = site.get("/files/m").await;
        assert_eq!(status, 200);
        let strip = &html[html.find("id=\"availability\"").expect("the strip")..];
        let strip = &strip[..strip.find("</div>").unwrap()];
        let cells: Vec<u64> = attrs(strip, "data-holders")
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(cells, counts);
        assert_eq!(strip.matches("rarest").count(), 1, "chunk 8 alone: {strip}");
        assert_eq!(attrs(&html, "data-peer").len(), 4);

        // A file of 2,000 chunks: a strip of 512 cells, each its run's minimum.
        let big = manifest("big", 2000, 2);
        site.join(4005, vec![full(&big)]).await;
        site.join(4006, vec![offer(&big, &[1000])]).await;
        let (_, html) = site.get("/files/big").await;
        let strip = &html[html.find("id=\"availability\"").unwrap()..];
        let strip = &strip[..strip.find("</div>").unwrap()];
        let cells = attrs(strip, "data-holders");
        assert_eq!(cells.len(), 512);
        assert!(
            cells.iter().all(|&c| c == "1"),
            "chunk 1000's cell shows its run's fewest"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_escaped_in_the_pages() {
    within(60, async {
        let site = Site::start().await;
        let evil = "<img src=x onerror=alert(1)>\"&'.txt";
        site.join(4001, vec![full(&manifest(evil, 2, 1))]).await;
        for path in ["/", "/peers"] {
            let (status, html) = site.get(path).await;
            assert_eq!(status, 200);
            assert!(!html.contains("<img"), "{path} has the raw name: {html}");
            assert!(
                html.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&amp;"),
                "{path}: {html}"
            );
        }
        // The file's link is percent-encoded and leads to its page.
        let (_, html) = site.get("/").await;
        let href = attrs(&html, "href")
            .into_iter()
            .find(|h| h.starts_with("/files/"))
            .expect("a link to the file");
        assert!(!href.contains(['<', '"', ' ', '\'']), "{href}");
        let (status, page) = site.get(href).await;
        assert_eq!(status, 200, "{href}");
        assert!(!page.contains("<img"));
        let file = site.json(&format!("/api/v1{href}")).await;
        assert_eq!(file["file"]["name"], evil, "JSON carries the name as it is");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rates_count_grpc_calls_by_rpc() {
    within(60, async {
        let site = Site::start().await;
        let mut client = site.grpc().await;
        for _ in 0..3 {
            client
                .list_files(ListFilesRequest::default())
                .await
                .expect("list");
        }
        let missing = client
            .locate(LocateRequest {
                name: "nope".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown file");
        assert_eq!(missing.code(), tonic::Code::NotFound);

        let stats = site.json("/api/v1/stats").await;
        let rpc = |name: &str| {
            stats["rpcs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["method"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} in {stats}"))
        };
        assert_eq!(
            (
                rpc("ListFiles")["calls"].as_u64(),
                rpc("ListFiles")["failed"].as_u64()
            ),
            (Some(3), Some(0))
        );
        assert_eq!(
            (
                rpc("Locate")["calls"].as_u64(),
                rpc("Locate")["failed"].as_u64()
            ),
            (Some(1), Some(1))
        );
        let (status, html) = site.get("/stats").await;
        assert_eq!(status, 200);
        assert!(html.contains("data-rpc=\"ListFiles\""), "{html}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_peer_swarm_makes_small_pages() {
    within(240, async {
        let site = Site::start().await;
        // 10,000 sessions hold one 2,000-chunk file.
        let shared = manifest("shared", 2000, 1);
        for i in 0..10_000u32 {
            let caller = Caller::New {
                addr: format!("10.{}.{}.1:4000", i / 250, i % 250),
                member: None,
            };
            site.catalog
                .register(caller, vec![full(&shared)])
                .await
                .expect("register");
        }
        // Each page, and how long it takes: median of five.
        for path in [
            "/",
            "/peers",
            "/files/shared",
            "/api/v1/files",
            "/api/v1/peers",
            "/api/v1/files/shared",
        ] {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..5 {
                let started = std::time::Instant::now();
                let (status, body) = site.get(path).await;
                times.push(started.elapsed());
                assert_eq!(status, 200, "{path}");
                size = body.len();
            }
            times.sort();
            eprintln!("{path}: {size} bytes, median {:?}", times[2]);
            assert!(size < 256 << 10, "{path} is {size} bytes");
        }
        let (_, html) = site.get("/files/shared").await;
        assert_eq!(attrs(&html, "data-peer").len(), 50, "one page of holders");
        assert!(html.contains("Holders (10000)"));
    })
    .await;
}
