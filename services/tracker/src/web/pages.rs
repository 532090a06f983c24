//! The HTML pages: server-rendered (readable without JavaScript), every
//! value escaped by maud, small enough for a phone. `assets/app.js` only
//! refreshes `main` every few seconds while the tab is visible.

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use hive_runtime::web::byte_size;
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{PageQuery, Refusal, Web, api::page_query, ops, rates::RpcRates, strip};
use crate::{registry::PeerView, state::Stats};

/// Seconds between refreshes of a page's live part.
const REFRESH_SECS: u32 = 5;

/// A refused page: its status, and the message on a page of its own.
pub struct PageRefusal(Refusal);

impl From<Refusal> for PageRefusal {
    fn from(r: Refusal) -> Self {
        Self(r)
    }
}

impl IntoResponse for PageRefusal {
    fn into_response(self) -> Response {
        let title = self.0.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (title) }
            p.error { (self.0.message) }
            p { a href="/" { "Back to the files" } }
        };
        (self.0.status, layout(title, body)).into_response()
    }
}

type PageResult = Result<Markup, PageRefusal>;

fn query(q: Result<Query<PageQuery>, QueryRejection>) -> Result<PageQuery, PageRefusal> {
    Ok(page_query(q)?)
}

/// `GET /`: the files, with size, holders and availability.
pub async fn files(
    State(web): State<Web>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let page = ops::files(&web.catalog, &q).await?;
    let body = html! {
        h1 { "Files" }
        @if page.files.is_empty() {
            p.empty { "No files on this page. Peers register files when they share them." }
        } @else {
            div.scroll { table #files {
                thead { tr {
                    th { "Name" } th.num { "Size" } th.num { "Chunks" } th.num { "Holders" }
                    th { "Available" } th.num title="The fewest live holders any chunk has" { "Rarest" }
                } }
                tbody { @for f in &page.files {
                    @let m = &f.view.manifest;
                    tr data-file=(m.name()) {
                        td { a href={ "/files/" (enc(m.name().as_str())) } { (m.name()) } }
                        td.num { (byte_size(m.size())) }
                        td.num { (m.chunk_count()) }
                        td.num { (f.view.holder_count) }
                        td { (meter(f.available, m.chunk_count())) }
                        td.num.rare[f.rarest <= 1] { (f.rarest) }
                    }
                } }
            } }
        }
        (pager("/", &q, page.next.map(String::from)))
    };
    Ok(layout("Files", body))
}

/// `GET /files/NAME`: the availability strip and the holders.
pub async fn file(
    State(web): State<Web>,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let (found, page) = ops::file(&web.catalog, &name, &q).await?;
    let m = &found.manifest;
    let cells = strip::cells(&found.chunk_holders);
    let bucketed = cells.len() < found.chunk_holders.len();
    let lowest = cells.iter().map(|c| c.holders).min().unwrap_or(0);
    let href = format!("/files/{}", enc(m.name().as_str()));
    let body = html! {
        h1 { (m.name()) }
        dl.facts {
            dt { "Size" } dd { (byte_size(m.size())) }
            dt { "Chunks" } dd { (m.chunk_count()) " × " (byte_size(m.layout().chunk_size().get().into())) }
            dt { "Live holders" } dd { (found.holder_count) }
            dt { "Digest" } dd.digest { (m.digest()) }
        }
        h2 { "Availability" }
        p.note {
            @if bucketed {
                (m.chunk_count()) " chunks in " (cells.len()) " cells: each cell shows the fewest live holders of its chunks. "
            } @else {
                "One cell per chunk, coloured by its live holders. "
            }
            "The rarest (" (lowest) " holders) are outlined."
        }
        div #availability .strip data-chunks=(m.chunk_count()) {
            @for c in &cells {
                span class={ "chunk h" (c.holders.min(4)) @if c.rarest { " rarest" } }
                    data-holders=(c.holders) data-first=(c.first) data-last=(c.last)
                    title={ "chunk " (c.first) @if c.last > c.first { "–" (c.last) } ": " (c.holders) " holders" } {}
            }
        }
        p.legend {
            span.chunk.h0 {} " none " span.chunk.h1 {} " 1 " span.chunk.h2 {} " 2 "
            span.chunk.h3 {} " 3 " span.chunk.h4 {} " 4 or more"
        }
        h2 { "Holders (" (page.holder_count) ")" }
        @if page.holders.is_empty() {
            p.empty { "Nobody holds it right now." }
        } @else {
            div.scroll { table #holders {
                thead { tr { th { "Address" } th { "Peer" } th.num { "Chunks" } th { "Share" } } }
                tbody { @for h in &page.holders {
                    tr data-peer=(h.addr) {
                        td { (h.addr) }
                        td.id { (h.peer.to_hex()) @if !h.confirmed { " (restored)" } }
                        td.num { (h.chunks.len()) }
                        td { (meter(h.chunks.len(), m.chunk_count())) }
                    }
                } }
            } }
        }
        (pager(&href, &q, page.next.map(|p| p.to_hex())))
    };
    Ok(layout(m.name().as_str(), body))
}

/// `GET /peers`: live peers, their last heartbeat and what they hold.
pub async fn peers(
    State(web): State<Web>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let page = ops::peers(&web.catalog, &q).await?;
    let body = html! {
        h1 { "Peers" }
        @if page.peers.is_empty() {
            p.empty { "No live peers on this page." }
        } @else {
            div.scroll { table #peers {
                thead { tr { th { "Address" } th { "Peer" } th.num { "Last heartbeat" } th { "Holds" } } }
                tbody { @for p in &page.peers { (peer_row(p)) } }
            } }
        }
        (pager("/peers", &q, page.next.map(|p| p.to_hex())))
    };
    Ok(layout("Peers", body))
}

fn peer_row(p: &PeerView) -> Markup {
    html! {
        tr data-peer=(p.addr) {
            td { (p.addr) }
            td.id { (p.peer.to_hex()) @if !p.confirmed { " (restored)" } }
            td.num { (p.since_heartbeat.as_secs()) " s ago" }
            td { ul.held {
                @for f in &p.files {
                    li { a href={ "/files/" (enc(f.name.as_str())) } { (f.name) } " " (percent(f.chunks, f.chunk_count)) }
                }
                @if p.file_count as usize > p.files.len() {
                    li.more { "and " (p.file_count as usize - p.files.len()) " more" }
                }
            } }
        }
    }
}

/// `GET /stats`: the catalog's sizes and the request rates by RPC.
pub async fn stats(State(web): State<Web>) -> PageResult {
    let sizes = ops::stats(&web.catalog).await?;
    let rates = web.rates.now();
    Ok(layout("Requests", stats_body(&sizes, &rates)))
}

fn stats_body(sizes: &Stats, rates: &RpcRates) -> Markup {
    html! {
        h1 { "Requests" }
        dl.facts {
            dt { "Peers" } dd { (sizes.peers) }
            dt { "Files" } dd { (sizes.files) }
            dt { "Holdings" } dd { (sizes.holdings) }
        }
        p.note {
            @if rates.window.as_secs() >= 1 {
                "Rates over the last " (rates.window.as_secs()) " s of this page's samples."
            } @else {
                "Rates appear from the next refresh on (they need two samples)."
            }
        }
        div.scroll { table #rpcs {
            thead { tr { th { "RPC" } th.num { "Calls" } th.num { "Failed" } th.num { "Per second" } } }
            tbody { @for r in &rates.rpcs {
                tr data-rpc=(r.method) {
                    td { (r.method) }
                    td.num { (r.calls.total) }
                    td.num { (r.calls.failed) }
                    td.num { @match r.per_sec { Some(x) => (format!("{x:.1}")), None => "–" } }
                }
            } }
        } }
    }
}

/// The page around `body`.
fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hive tracker" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header { nav {
                    strong { "hive tracker" }
                    a href="/" { "Files" } a href="/peers" { "Peers" } a href="/stats" { "Requests" }
                } }
                main data-refresh=(REFRESH_SECS) { (body) }
            }
        }
    }
}

/// Links to the first and the next page, keeping the page size.
fn pager(path: &str, q: &PageQuery, next: Option<String>) -> Markup {
    let size = q
        .page_size
        .map(|s| format!("&page_size={s}"))
        .unwrap_or_default();
    let first = q.page_token.as_deref().is_some_and(|t| !t.is_empty());
    html! {
        nav.pager {
            @if first { a.first href={ (path) "?" (size.trim_start_matches('&')) } { "First page" } }
            @if let Some(next) = next {
                a.next href={ (path) "?page_token=" (enc(&next)) (size) } { "Next page →" }
            }
        }
    }
}

/// A bar and the percentage `part` of `whole` is.
fn meter(part: u32, whole: u32) -> Markup {
    html! {
        meter min="0" max=(whole.max(1)) value=(part) {}
        " " (percent(part, whole))
    }
}

fn percent(part: u32, whole: u32) -> String {
    match whole {
        0 => "100 %".into(),
        _ => format!("{} %", u64::from(part) * 100 / u64::from(whole)),
    }
}

/// `s` for a path segment or query value.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_names_read_well() {
        assert_eq!(percent(1, 3), "33 %");
        assert_eq!(percent(0, 0), "100 %");
        assert_eq!(enc("a b/ü"), "a%20b%2F%C3%BC");
    }
}
