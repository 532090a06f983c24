//! The peer's web UI and HTTP/JSON API (`peer --web`) against a real
//! tracker and peers: a fetch started through the API and followed to the
//! end on the event stream, with every chunk's origin; pause, resume and
//! cancel with their codes; bad input refused with state unchanged; the
//! CSRF token, Origin and Host checks; the cookie off loopback; pages with
//! escaped names.

mod common;

use std::net::SocketAddr;

use common::web;
use common::*;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

/// 3 MiB in 64 KiB chunks: 48 chunks.
const SIZE: usize = 3 << 20;
const CHUNK: &str = "64KiB";
const CHUNKS: u64 = 48;

/// A web UI at `addr`, with its CSRF token once asked for.
struct Ui {
    base: String,
    http: Client,
    csrf: String,
}

impl Ui {
    async fn new(addr: SocketAddr) -> Self {
        let http = web::client();
        let base = format!("http://{addr}");
        let status = web::get_json(&http, &format!("{base}/api/v1/status")).await;
        let csrf = status["csrf"].as_str().expect("csrf").to_owned();
        assert_eq!(csrf.len(), 64);
        Self { base, http, csrf }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// A mutating request carrying the token.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("x-hive-csrf", &self.csrf);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request")
    }

    async fn post(&self, path: &str) -> Response {
        self.send(Method::POST, path, None).await
    }

    async fn transfers(&self) -> Value {
        self.get("/api/v1/transfers")
            .await
            .json()
            .await
            .expect("JSON")
    }
}

/// The status and `{code, message}` body of an error answer.
async fn error(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("error JSON");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    (status, body["code"].as_str().expect("code").to_owned())
}

/// A server-sent event stream.
struct Events {
    resp: Response,
    buf: String,
}

impl Events {
    async fn open(ui: &Ui, query: &str) -> Self {
        let resp = ui.get(&format!("/api/v1/events{query}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event: its name and data.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return (name, serde_json::from_str(&data).expect("event JSON"));
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .expect("event stream")
                .expect("event stream ended");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|t| t["name"] == name)
}

async fn seeder(tracker: &TestTracker, files: &[(&str, &[u8])]) -> TestPeer {
    TestPeer::start_with(&tracker.url(), files, &["--chunk-size", CHUNK]).await
}

async fn web_peer(tracker: &TestTracker, extra: &[&str]) -> TestPeer {
    let mut args = vec!["--web", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    TestPeer::start_with(&tracker.url(), &[], &args).await
}

#[tokio::test]
async fn a_fetch_started_through_the_api_completes_on_the_event_stream() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let data = data(SIZE, 19);
        let seed = seeder(&tracker, &[("movie.bin", &data)]).await;
        let peer = web_peer(&tracker, &[]).await;
        let ui = Ui::new(peer.web.expect("web address")).await;

        // peerctl status shows where the UI is.
        let out = peer.peerctl(&["--json", "status"]).await;
        let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(status["web_url"], format!("{}/", ui.base));

        // The tracker's list, through the peer.
        let files: Value = ui.get("/api/v1/tracker/files").await.json().await.unwrap();
        assert_eq!(files["files"][0]["name"], "movie.bin");
        assert_eq!(files["files"][0]["chunk_count"], CHUNKS);

        let mut events = Events::open(&ui, "?file=movie.bin").await;
        let (name, first) = events.next().await;
        assert_eq!((name.as_str(), first), ("transfers", json!([])));

        let r = ui
            .send(
                Method::POST,
                "/api/v1/transfers",
                Some(json!({"name": "movie.bin"})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);

        let seed_addr = seed.listen.to_string();
        let mut held = std::collections::BTreeSet::new();
        let mut states = Vec::new();
        let mut inflight_seen = false;
        loop {
            match events.next().await {
                (name, list) if name == "transfers" => {
                    let t = find(&list, "movie.bin").expect("the transfer is listed");
                    let state = t["state"].as_str().unwrap().to_owned();
                    if states.last() != Some(&state) {
                        states.push(state.clone());
                    }
                    if state == "done" {
                        assert_eq!(t["chunks_done"], CHUNKS);
                        assert_eq!(t["bytes_done"], SIZE as u64);
                        break;
                    }
                    assert_ne!(state, "failed", "{t}");
                }
                (name, batch) if name == "chunks" => {
                    assert_eq!(batch["name"], "movie.bin");
                    for c in batch["chunks"].as_array().unwrap() {
                        match c["state"].as_str().unwrap() {
                            "held" => {
                                assert_eq!(c["from"], seed_addr, "{c}");
                                held.insert(c["chunk"].as_u64().unwrap());
                            }
                            "inflight" => inflight_seen = true,
                            // A request that failed: asked again later.
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(
            states.last().map(String::as_str),
            Some("done"),
            "{states:?}"
        );
        assert!(
            inflight_seen,
            "chunks are shown in flight before they arrive"
        );
        // Every chunk's arrival was pushed (sent within 200 ms of it; the
        // transfer is listed done only after the last one).
        while held.len() < CHUNKS as usize {
            let (name, batch) = events.next().await;
            if name == "chunks" {
                for c in batch["chunks"].as_array().unwrap() {
                    if c["state"] == "held" {
                        held.insert(c["chunk"].as_u64().unwrap());
                    }
                }
            }
        }
        assert_eq!(held, (1..=CHUNKS).collect());

        // The chunk map: every chunk held, and from the seeder.
        let map: Value = ui
            .get("/api/v1/files/movie.bin/chunks")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (map["chunk_count"].as_u64(), map["held"].as_u64()),
            (Some(CHUNKS), Some(CHUNKS))
        );
        for c in map["chunks"].as_array().unwrap() {
            assert_eq!(
                (c["state"].as_str(), c["from"].as_str()),
                (Some("held"), Some(&*seed_addr))
            );
        }
        let on_disk = std::fs::read(peer.dir.join("movie.bin")).expect("the fetched file");
        assert_eq!(blake3::hash(&on_disk), blake3::hash(&data));

        // The seeder's chunks were held before: the map says so.
        let one: Value = ui
            .get("/api/v1/transfers/movie.bin")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(one["state"], "done");
        let shared: Value = ui.get("/api/v1/files").await.json().await.unwrap();
        assert_eq!(shared["files"][0]["name"], "movie.bin");
        assert_eq!(shared["files"][0]["state"], "seeding");
    })
    .await;
}

#[tokio::test]
async fn pause_resume_cancel_and_bad_input_keep_their_codes_and_the_state() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let (slow, small) = (data(SIZE, 1), data(100_000, 2));
        let _seed = seeder(&tracker, &[("slow.bin", &slow), ("small.bin", &small)]).await;
        // 256 KiB/s: the 3 MiB file takes about 12 s, time to act on it.
        let peer = web_peer(&tracker, &["--max-download-rate", "256KiB"]).await;
        let ui = Ui::new(peer.web.unwrap()).await;

        // Bad input first: nothing is listed after it.
        let bad = ui
            .send(
                Method::POST,
                "/api/v1/transfers",
                Some(json!({"name": "../etc"})),
            )
            .await;
        assert_eq!(
            error(bad).await,
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT".into())
        );
        let bad = ui
            .send(Method::POST, "/api/v1/transfers", Some(json!({"nom": "x"})))
            .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let unknown = ui.post("/api/v1/transfers/nothing.bin/pause").await;
        assert_eq!(
            error(unknown).await,
            (StatusCode::NOT_FOUND, "NOT_FOUND".into())
        );
        let unknown = ui.get("/api/v1/files/nothing.bin/chunks").await;
        assert_eq!(error(unknown).await.0, StatusCode::NOT_FOUND);
        assert_eq!(ui.transfers().await, json!({"transfers": []}));

        // Without the token, or from another origin: refused, nothing starts.
        let no_token = ui
            .http
            .post(ui.url("/api/v1/transfers"))
            .json(&json!({"name": "slow.bin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error(no_token).await,
            (StatusCode::FORBIDDEN, "PERMISSION_DENIED".into())
        );
        let cross = ui
            .http
            .post(ui.url("/api/v1/transfers"))
            .header("x-hive-csrf", &ui.csrf)
            .header("origin", "http://evil.example")
            .json(&json!({"name": "slow.bin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(error(cross).await.0, StatusCode::FORBIDDEN);
        let form = ui
            .http
            .post(ui.url("/fetch"))
            .form(&[("name", "slow.bin"), ("csrf", "not-the-token")])
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), StatusCode::FORBIDDEN);
        // DNS rebinding: a page on another name pointed at this address.
        let rebound = ui
            .http
            .get(ui.url("/api/v1/status"))
            .header("host", "attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
        assert_eq!(ui.transfers().await, json!({"transfers": []}));

        // The plain form (no script) starts it and comes back to the page.
        let form = ui
            .http
            .post(ui.url("/fetch"))
            .form(&[("name", "slow.bin"), ("csrf", ui.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), StatusCode::SEE_OTHER);
        let paused = ui.post("/api/v1/transfers/slow.bin/pause").await;
        assert_eq!(paused.status(), StatusCode::OK);
        let paused: Value = paused.json().await.unwrap();
        assert_eq!(paused["state"], "paused");
        let listed = ui.transfers().await;
        assert_eq!(
            find(&listed["transfers"], "slow.bin").unwrap()["state"],
            "paused"
        );
        let resumed: Value = ui
            .post("/api/v1/transfers/slow.bin/resume")
            .await
            .json()
            .await
            .unwrap();
        assert!(
            matches!(resumed["state"].as_str(), Some("queued" | "running")),
            "{resumed}"
        );
        let cancelled = ui
            .post("/api/v1/transfers/slow.bin/cancel?remove=true")
            .await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        assert!(find(&ui.transfers().await["transfers"], "slow.bin").is_none());
        let again = ui.post("/api/v1/transfers/slow.bin/cancel").await;
        assert_eq!(error(again).await.0, StatusCode::NOT_FOUND);

        // A finished transfer cannot be paused (FAILED_PRECONDITION: 409),
        // and stays done.
        let r = ui
            .send(
                Method::POST,
                "/api/v1/transfers",
                Some(json!({"name": "small.bin"})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let mut events = Events::open(&ui, "").await;
        loop {
            let (name, list) = events.next().await;
            if name == "transfers" && find(&list, "small.bin").is_some_and(|t| t["state"] == "done")
            {
                break;
            }
        }
        let late = ui.post("/api/v1/transfers/small.bin/pause").await;
        assert_eq!(
            error(late).await,
            (StatusCode::CONFLICT, "FAILED_PRECONDITION".into())
        );
        let listed = ui.transfers().await;
        assert_eq!(
            find(&listed["transfers"], "small.bin").unwrap()["state"],
            "done"
        );

        // Limits: set, read back, and a bad one refused.
        let set = ui
            .send(
                Method::PUT,
                "/api/v1/limits",
                Some(json!({"max_upload_rate": 1_048_576})),
            )
            .await;
        assert_eq!(set.status(), StatusCode::OK);
        let limits: Value = ui.get("/api/v1/limits").await.json().await.unwrap();
        assert_eq!(
            limits,
            json!({"max_upload_rate": 1_048_576, "max_download_rate": 262_144})
        );
        let bad = ui
            .send(
                Method::PUT,
                "/api/v1/limits",
                Some(json!({"max_upload_rate": "fast"})),
            )
            .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    })
    .await;
}

/// The UI is plain HTTP: with TLS asked for, off loopback it would carry
/// the control secret in the clear, so the daemon will not start.
#[tokio::test]
async fn with_tls_the_ui_must_stay_on_loopback() {
    within(60, async {
        let dir = tempfile::tempdir().unwrap();
        // Refused before the certificates are read: they need not exist.
        let pem = |name: &str| dir.path().join(name).display().to_string();
        let out = tokio::process::Command::new(bin("peer"))
            .args(["--dir", &dir.path().display().to_string()])
            .args([
                "--tracker",
                "https://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--web", "0.0.0.0:0"])
            .args(["--tls-cert", &pem("cert.pem"), "--tls-key", &pem("key.pem")])
            .args(["--tls-ca", &pem("ca.pem")])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run peer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--web 0.0.0.0:0 is not a loopback address")
                && err.contains("plain HTTP")
                && err.contains("TLS proxy"),
            "{err}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).is_empty(),
            "nothing was bound"
        );
    })
    .await;
}

#[tokio::test]
async fn off_loopback_the_cookie_is_required() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let peer = TestPeer::start_with(&tracker.url(), &[], &["--web", "0.0.0.0:0"]).await;
        let port = peer.web.unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let http = web::client();
        let cookie = std::fs::read_to_string(peer.cookie()).expect("the cookie");

        let bare = http
            .get(format!("{base}/api/v1/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error(bare).await,
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED".into())
        );
        let wrong = http
            .get(format!("{base}/api/v1/status"))
            .bearer_auth("0".repeat(64))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = http
            .get(format!("{base}/api/v1/status"))
            .bearer_auth(cookie.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK);

        // A browser: sent to log in, then in with the session cookie.
        let page = http.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()["location"], "/login");
        let login = http.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(login.status(), StatusCode::OK);
        let refused = http
            .post(format!("{base}/login"))
            .form(&[("secret", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let ok = http
            .post(format!("{base}/login"))
            .form(&[("secret", cookie.trim())])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(
            !set.contains(cookie.trim()),
            "the session is not the secret"
        );
        let session = set.split(';').next().unwrap();
        let page = http
            .get(format!("{base}/"))
            .header("cookie", session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn pages_render_with_escaped_names() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let name = r#"<b>&"x".bin"#;
        let escaped = "&lt;b&gt;&amp;&quot;x&quot;.bin";
        let data = data(200_000, 3);
        let _seed = seeder(&tracker, &[(name, &data)]).await;
        let peer = web_peer(&tracker, &[]).await;
        let ui = Ui::new(peer.web.unwrap()).await;
        let r = ui
            .send(
                Method::POST,
                "/api/v1/transfers",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let mut events = Events::open(&ui, "").await;
        loop {
            let (event, list) = events.next().await;
            if event == "transfers" && find(&list, name).is_some_and(|t| t["state"] == "done") {
                break;
            }
        }

        let page = ui.get("/").await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(!html.contains("<b>&"), "a name is never markup");
        assert!(html.contains(&format!(r#"data-transfer="{escaped}" data-state="done""#)));
        assert!(
            html.contains(r#"<progress value="4" max="4">"#),
            "200 kB in 64 KiB chunks"
        );
        assert!(html.contains(r#"<form id="fetch""#) && html.contains(r#"id="fetch-name""#));
        assert!(html.contains(&format!(r#"<option value="{escaped}">"#)));
        let encoded = "%3Cb%3E%26%22x%22%2Ebin";
        assert!(html.contains(&format!(r#"<a class="chunks" href="/files/{encoded}">"#)));

        let map = ui.get(&format!("/files/{encoded}")).await;
        assert_eq!(map.status(), StatusCode::OK);
        let html = map.text().await.unwrap();
        assert!(!html.contains("<b>&"));
        assert!(html.contains(r#"id="chunk-map""#));
        assert!(html.contains(r#"data-total="4" data-held="4""#));
        assert_eq!(
            html.matches(r#"class="chunk held""#).count(),
            4 + 1,
            "the cells and the legend"
        );

        let files = ui.get("/files").await.text().await.unwrap();
        assert!(files.contains(&format!(r#"<tr data-file="{escaped}">"#)));
        let missing = ui.get("/files/nothing.bin").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let js = ui.get("/assets/app.js").await;
        assert_eq!(js.headers()["content-type"], "text/javascript");
    })
    .await;
}

/// The transfers page asks the tracker for its files to pick from; a
/// tracker that does not answer (stopped with SIGSTOP, its connections open)
/// costs the page that list and a note saying so, not its answer.
#[tokio::test]
async fn a_stalled_tracker_leaves_the_transfers_page_without_its_list() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let data = data(200_000, 5);
        let _seed = seeder(&tracker, &[("listed.bin", &data)]).await;
        let peer = web_peer(&tracker, &[]).await;
        let ui = Ui::new(peer.web.unwrap()).await;
        const NOTE: &str = r#"id="tracker-files-missing""#;

        let html = ui.get("/").await.text().await.unwrap();
        assert!(html.contains(r#"<option value="listed.bin">"#), "{html}");
        assert!(!html.contains(NOTE));

        tracker.daemon.signal("STOP");
        let asked = tokio::time::Instant::now();
        let page = within(20, ui.get("/")).await;
        let waited = asked.elapsed();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        tracker.daemon.signal("CONT");
        assert!(
            waited < std::time::Duration::from_secs(10),
            "the page waited {waited:?} for the tracker"
        );
        assert!(html.contains(NOTE), "{html}");
        assert!(!html.contains(r#"<option value="listed.bin">"#));
        assert!(
            html.contains(r#"<form id="fetch""#),
            "the form still works by name"
        );
        assert!(html.contains(r#"id="transfers""#));
    })
    .await;
}
