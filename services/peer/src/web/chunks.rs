//! A file's chunk map: for each chunk, held, in flight or missing, and
//! where it came from. Whether a chunk is held is the holdings' to say;
//! where it came from, the origins' ([`crate::fetch::origins`]).

use std::collections::HashMap;

use hive::FileName;
use serde::Serialize;

use crate::{
    error::PeerError,
    fetch::origins::{ChunkEvent, Origin},
    holdings::{Holdings, Kind},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    Held,
    Inflight,
    Missing,
}

/// One chunk, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub chunk: u32,
    pub state: CellState,
    /// Where it came from, or who is asked for it; empty if nobody.
    pub from: String,
    /// What a page shows for it.
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkMap {
    pub name: String,
    pub chunk_count: u32,
    pub held: u32,
    pub chunks: Vec<Cell>,
}

/// The chunk map of `name`, if this peer holds any of it (`None`: it holds
/// nothing of it, not even a manifest).
pub fn chunk_map(
    holdings: &Holdings,
    origins: &HashMap<u32, Origin>,
    name: &FileName,
) -> Option<ChunkMap> {
    let (manifest, have, kind) = holdings.holding(name)?;
    let before = match kind {
        Kind::Complete => "held: shared from disk, or fetched before this daemon started",
        Kind::Partial => "held: fetched before this daemon started",
    };
    let chunks = manifest
        .layout()
        .chunks()
        .map(|c| {
            let origin = origins.get(&c.get());
            let state = match origin {
                _ if have.contains(c) => CellState::Held,
                Some(Origin::InFlight(_)) => CellState::Inflight,
                _ => CellState::Missing,
            };
            cell(c.get(), state, origin, before)
        })
        .collect();
    Some(ChunkMap {
        name: name.to_string(),
        chunk_count: manifest.chunk_count(),
        held: have.len(),
        chunks,
    })
}

/// A chunk's cell, as a page shows it; `before` says what a held chunk
/// without an origin is.
fn cell(chunk: u32, state: CellState, origin: Option<&Origin>, before: &str) -> Cell {
    let from = match origin {
        Some(Origin::From(h)) => h.to_string(),
        Some(Origin::InFlight(who)) => who.join(", "),
        None => String::new(),
    };
    let title = match (state, origin) {
        (CellState::Held, Some(Origin::From(h))) => format!("chunk {chunk}: from {h}"),
        (CellState::Held, _) => format!("chunk {chunk}: {before}"),
        (CellState::Inflight, _) => format!("chunk {chunk}: asked of {from}"),
        (CellState::Missing, _) => format!("chunk {chunk}: missing"),
    };
    Cell {
        chunk,
        state,
        from,
        title,
    }
}

/// A published change as a cell: verified is held, a dropped request
/// leaves the chunk missing.
pub fn event_cell(e: &ChunkEvent) -> Cell {
    let state = match &e.origin {
        Some(Origin::From(_)) => CellState::Held,
        Some(Origin::InFlight(_)) => CellState::Inflight,
        None => CellState::Missing,
    };
    cell(e.chunk, state, e.origin.as_ref(), "held")
}

/// No such file here: NOT_FOUND, naming where to look.
pub fn not_held(name: &FileName) -> PeerError {
    PeerError::NotFound(format!(
        "this peer holds nothing of {name:?} yet; GET /api/v1/transfers lists the transfers"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn cells_say_where_a_chunk_came_from() {
        let from = Origin::From(Arc::from("10.0.0.1:7"));
        let held = cell(2, CellState::Held, Some(&from), "old");
        assert_eq!(held.from, "10.0.0.1:7");
        assert_eq!(held.title, "chunk 2: from 10.0.0.1:7");
        assert_eq!(cell(3, CellState::Held, None, "old").title, "chunk 3: old");
        let asked = Origin::InFlight(vec![Arc::from("a:1"), Arc::from("b:2")]);
        let c = cell(4, CellState::Inflight, Some(&asked), "old");
        assert_eq!(
            (c.from.as_str(), c.title.as_str()),
            ("a:1, b:2", "chunk 4: asked of a:1, b:2")
        );
        assert_eq!(
            cell(5, CellState::Missing, None, "old").state,
            CellState::Missing
        );
    }
}
