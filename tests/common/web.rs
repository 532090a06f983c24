//! The HTTP side of the web tests: one client (reqwest, HTTP/1, redirects
//! left to the test), reads of a page or a JSON answer with their status,
//! and a daemon's web address from its log.

use std::time::Duration;

use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;
use tokio::time::Instant;

use super::Daemon;

/// The tests' HTTP client: redirects are answers to check, not to follow.
pub fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("HTTP client")
}

/// `GET url` with `http`: the status and the body as text.
pub async fn get_text(http: &Client, url: &str) -> (StatusCode, String) {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

/// `GET url` with `http`, which must answer 200 with JSON.
pub async fn get_json(http: &Client, url: &str) -> Value {
    let (status, body) = get_text(http, url).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// The `http://ADDR/` that `daemon` logged as `web UI listening on
/// http://ADDR/`, waiting up to 30 s for the line.
pub async fn logged_web_url(daemon: &Daemon) -> String {
    const LINE: &str = "web UI listening on ";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = daemon.log();
        if let Some(url) = log
            .lines()
            .find_map(|l| l.split_once(LINE))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .filter(|url| url.starts_with("http://"))
        {
            return url.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no `{LINE}http://…` line in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
