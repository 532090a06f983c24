//! The web pages in a real browser (issue 19, item 5): headless Chromium
//! driven over WebDriver by fantoccini. A tracker, a seeder and a peer with
//! `--web` run on loopback; the test starts a fetch from the peer's page,
//! watches its progress bar and chunk map fill in, pauses and resumes it
//! from the page, then finds the new holder on the tracker's page. It
//! drives the pages only through the selectors of the shared web contract
//! (docs/WEB.md).
//!
//! It needs a WebDriver server, so plain `cargo test` lists it as ignored;
//! `scripts/browser-test.sh` installs Chromium and chromedriver, starts the
//! driver and runs it with `--ignored`, `HIVE_WEBDRIVER` set to the
//! driver's URL. Run with `--ignored` but without that variable, it fails.
//! With `HIVE_SCREENSHOTS=DIR` it saves peer-transfers.png,
//! peer-chunk-map.png and tracker-file.png there.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const FILE: &str = "swarm.bin";
/// 6 MiB at 1 MiB/s: time enough to pause it from the page.
const SIZE: usize = 6 << 20;
const RATE: &str = "1MiB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a WebDriver server: run scripts/browser-test.sh (it sets HIVE_WEBDRIVER)"]
async fn a_fetch_started_in_the_browser_fills_in_and_shows_on_the_tracker() {
    let webdriver = std::env::var("HIVE_WEBDRIVER").expect(
        "HIVE_WEBDRIVER (a WebDriver URL) is not set: run scripts/browser-test.sh, which starts chromedriver",
    );
    within(300, scenario(&webdriver)).await;
}

async fn scenario(webdriver: &str) {
    let tracker = TestTracker::start_with(&["--in-memory", "--web", "127.0.0.1:0"]).await;
    let tracker_web = web::logged_web_url(&tracker.daemon).await;
    let data = data(SIZE, 19);
    let _seeder = TestPeer::start(&tracker, &[(FILE, &data)]).await;
    let peer = TestPeer::start_with(
        &tracker.url(),
        &[],
        &["--web", "127.0.0.1:0", "--max-download-rate", RATE],
    )
    .await;
    let peer_web = web::logged_web_url(&peer.daemon).await;
    let browser = Browser::connect(webdriver).await;

    // Start the fetch from the page's form.
    browser.goto(&peer_web).await;
    let b = &browser;
    b.until("the fetch form", || async {
        b.client.find(Locator::Css("#fetch-name")).await.ok()
    })
    .await
    .send_keys(FILE)
    .await
    .expect("type the name");
    b.click("#fetch-submit").await;
    let row = format!("[data-transfer=\"{FILE}\"]");
    let bar = format!("{row} progress");

    // It runs and its bar moves; pause it from the page.
    b.until("the transfer running with chunks done", || async {
        let state = b.attr(&row, "data-state").await?;
        let done: u64 = b.attr(&bar, "value").await?.parse().ok()?;
        (state == "running" && done > 0).then_some(())
    })
    .await;
    b.click(&format!("{row} button[data-action=\"pause\"]"))
        .await;
    b.until("data-state paused", || async {
        (b.attr(&row, "data-state").await? == "paused").then_some(())
    })
    .await;
    let (done, total) = b.progress(&bar).await;
    assert!(done < total, "paused before the end ({done} of {total})");
    b.screenshot("peer-transfers.png").await;

    // Resumed, it goes on from where it was.
    b.click(&format!("{row} button[data-action=\"resume\"]"))
        .await;
    b.until("data-state running again", || async {
        let state = b.attr(&row, "data-state").await?;
        matches!(state.as_str(), "running" | "done").then_some(())
    })
    .await;
    b.until("progress past the pause", || async {
        (b.progress(&bar).await.0 > done).then_some(())
    })
    .await;

    // Its chunk map fills in live, to every chunk held.
    let href = b
        .attr(&format!("{row} a.chunks"), "href")
        .await
        .expect("a link to the chunk map");
    b.goto(&absolute(&peer_web, &href)).await;
    b.until("the chunk map complete", || async {
        let held = b.attr("#chunk-map", "data-held").await?;
        (held == b.attr("#chunk-map", "data-total").await?).then_some(())
    })
    .await;
    let total_chunks: usize = b
        .attr("#chunk-map", "data-total")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let held = b.count("#chunk-map .chunk.held").await;
    assert_eq!(held, total_chunks, "one held cell per chunk");
    b.screenshot("peer-chunk-map.png").await;

    // The transfers page shows it done, its bar full.
    b.goto(&peer_web).await;
    b.until("data-state done, the bar full", || async {
        let (done, total) = b.progress_opt(&bar).await?;
        (b.attr(&row, "data-state").await? == "done" && done == total).then_some(())
    })
    .await;
    let got = std::fs::read(peer.dir.join(FILE)).expect("the fetched file");
    assert!(got == data, "the fetched file is the seeder's");

    // The tracker's file page lists the new holder, and every chunk now
    // has two holders in the availability strip.
    b.goto(&tracker_web).await;
    let link = format!("tr[data-file=\"{FILE}\"] a[href]");
    let file_page = b
        .until("the file on the tracker's list", || async {
            b.attr(&link, "href").await
        })
        .await;
    let holder = format!("#holders tr[data-peer=\"{}\"]", peer.listen);
    b.until("the new holder and a full strip of two", || async {
        b.goto(&absolute(&tracker_web, &file_page)).await;
        b.client.find(Locator::Css(&holder)).await.ok()?;
        let counts = b.attrs("#availability .chunk", "data-holders").await?;
        (!counts.is_empty() && counts.iter().all(|c| c == "2")).then_some(())
    })
    .await;
    b.screenshot("tracker-file.png").await;
    browser
        .client
        .clone()
        .close()
        .await
        .expect("close the browser");
}

/// `href` (as a page gives it) against `base` (`http://ADDR/`).
fn absolute(base: &str, href: &str) -> String {
    match href.starts_with("http") {
        true => href.to_owned(),
        false => format!("{}{}", base.trim_end_matches('/'), href),
    }
}

/// A headless Chromium session.
struct Browser {
    client: Client,
}

impl Browser {
    async fn connect(webdriver: &str) -> Self {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1100,900",
            ] }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(webdriver)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session at {webdriver}: {e}"));
        Self { client }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Polls `check` (live pages replace their elements, so each try finds
    /// them again) until it gives a value; fails after a deadline.
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let html = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting for {what} at {url:?}; the page:\n{html}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Attribute `name` of the first element `css` selects, if any.
    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.attr(name).await.ok().flatten()
    }

    /// Attribute `name` of every element `css` selects.
    async fn attrs(&self, css: &str, name: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for el in self.client.find_all(Locator::Css(css)).await.ok()? {
            out.push(el.attr(name).await.ok().flatten()?);
        }
        Some(out)
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// A `<progress>`'s value and max.
    async fn progress_opt(&self, css: &str) -> Option<(u64, u64)> {
        let value = self.attr(css, "value").await?.parse().ok()?;
        let max = self.attr(css, "max").await?.parse().ok()?;
        Some((value, max))
    }

    async fn progress(&self, css: &str) -> (u64, u64) {
        self.until(&format!("a progress bar at {css}"), || {
            self.progress_opt(css)
        })
        .await
    }

    /// Clicks the element `css` selects, once it is there.
    async fn click(&self, css: &str) {
        self.until(&format!("{css} to click"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.click().await.ok()
        })
        .await;
    }

    /// Saves the page as `name` in `HIVE_SCREENSHOTS`, when it is set.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("HIVE_SCREENSHOTS").filter(|d| !d.is_empty()) else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(dir).join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
