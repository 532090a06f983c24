//! The web side's operations: each one catalog call (or a bounded few),
//! paged, with every size capped here so no answer grows with the swarm.
//! The pages and the JSON both call these, and the catalog calls are the
//! ones the gRPC service makes.

use futures_util::future::join_all;
use hive::{FileName, wire};

use super::{PageQuery, Refusal};
use crate::{
    auth::PeerId,
    catalog::SharedCatalog,
    error::ServiceError,
    registry::{FileView, HolderPage, Located, PeerPage, RegistryError},
    state::Stats,
};

/// Files on one page: each also costs a Locate, for its availability.
pub const FILES_PAGE: Limit = Limit {
    default: 50,
    max: 200,
};
/// A file's holders on one page.
pub const HOLDERS_PAGE: Limit = Limit {
    default: 50,
    max: 500,
};
/// Peers on one page.
pub const PEERS_PAGE: Limit = Limit {
    default: 50,
    max: 200,
};
/// Files listed with each peer (its file count says how many it holds).
pub const FILES_PER_PEER: usize = 10;

/// A page size's default and cap.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub default: usize,
    pub max: usize,
}

impl Limit {
    /// The size asked for, within the cap; 0 or none is the default.
    pub fn size(self, asked: Option<usize>) -> usize {
        match asked {
            None | Some(0) => self.default,
            Some(n) => n.min(self.max),
        }
    }
}

/// One file as the list shows it: ListFiles' summary, and from its Locate
/// how many chunks some live holder has and the rarest chunk's count.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub view: FileView,
    /// Chunks at least one live holder has.
    pub available: u32,
    /// The fewest live holders any chunk has (capped at 255, as Locate).
    pub rarest: u8,
}

pub struct FilesPage {
    pub files: Vec<FileRow>,
    pub next: Option<FileName>,
}

/// A page of the catalog's files, in name order (ListFiles).
pub async fn files(catalog: &SharedCatalog, q: &PageQuery) -> Result<FilesPage, Refusal> {
    let after = match q.page_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(wire::file_name("page_token", t.to_owned()).map_err(ServiceError::from)?),
    };
    let page = catalog
        .list(after.as_ref(), FILES_PAGE.size(q.page_size))
        .await?;
    let located = join_all(
        page.files
            .iter()
            .map(|f| catalog.locate(f.manifest.name(), 1)),
    )
    .await;
    let mut files = Vec::new();
    for (view, found) in page.files.into_iter().zip(located) {
        let counts = match found {
            Ok(found) => found.chunk_holders,
            // Forgotten since it was listed: left out.
            Err(ServiceError::Registry(RegistryError::UnknownFile(_))) => continue,
            Err(e) => return Err(e.into()),
        };
        files.push(FileRow {
            view,
            available: counts.iter().filter(|&&c| c > 0).count() as u32,
            rarest: counts.iter().copied().min().unwrap_or(0),
        });
    }
    Ok(FilesPage {
        files,
        next: page.next,
    })
}

/// One file: its Locate (manifest, per-chunk counts) and a page of its
/// live holders in id order.
pub async fn file(
    catalog: &SharedCatalog,
    name: &str,
    q: &PageQuery,
) -> Result<(Located, HolderPage), Refusal> {
    let name = wire::file_name("name", name.to_owned()).map_err(ServiceError::from)?;
    let after = peer_token(q)?;
    let found = catalog.locate(&name, 1).await?;
    let holders = catalog
        .holders(&name, after, HOLDERS_PAGE.size(q.page_size))
        .await?;
    Ok((found, holders))
}

/// A page of live peers in id order, each with its first files.
pub async fn peers(catalog: &SharedCatalog, q: &PageQuery) -> Result<PeerPage, Refusal> {
    let after = peer_token(q)?;
    Ok(catalog
        .peers(after, PEERS_PAGE.size(q.page_size), FILES_PER_PEER)
        .await?)
}

/// The catalog's sizes.
pub async fn stats(catalog: &SharedCatalog) -> Result<Stats, Refusal> {
    Ok(catalog.stats().await?)
}

/// A peer-id page token: the id to continue after.
fn peer_token(q: &PageQuery) -> Result<Option<PeerId>, Refusal> {
    match q.page_token.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => PeerId::parse(t)
            .map(Some)
            .map_err(|_| Refusal::bad_request("page_token: not a peer id from a previous page")),
    }
}
