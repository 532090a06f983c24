//! The raw tonic baselines: a bulk file stream and a unary ping, served with
//! exactly hive's transport settings ([`hive_runtime::grpc::server`] on
//! [`hive_runtime::grpc::incoming`]) and hive's stream message size, and none of
//! hive's own work (no share index, no upload cap, no per-chunk requests).

use std::{fs::File, os::unix::fs::FileExt, pin::Pin, sync::Arc};

use bytes::Bytes;
use hive_runtime::grpc::STREAM_MESSAGE_BYTES;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::pb::{
    self,
    bulk_server::{Bulk, BulkServer},
    ping_server::{Ping, PingServer},
};

/// Bytes read from disk at a time: one `pread` in one blocking task, then
/// split into stream messages without copying (docs/PERFORMANCE.md: one blocking read
/// per 64 KiB costs 37%; read big pieces once).
const READ_BLOCK: usize = 1 << 20;
/// Messages buffered ahead of the network.
const AHEAD: usize = 4;

/// Streams ranges of one file.
pub struct BulkService {
    file: Option<Arc<File>>,
    size: u64,
}

impl BulkService {
    /// Serves `file`, or nothing (a ping-only server).
    pub fn new(file: Option<File>) -> std::io::Result<Self> {
        let size = match &file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        Ok(Self {
            file: file.map(Arc::new),
            size,
        })
    }
}

type DataStream = Pin<Box<dyn Stream<Item = Result<pb::Data, Status>> + Send>>;

#[tonic::async_trait]
impl Bulk for BulkService {
    type ReadStream = DataStream;

    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Ok(Response::new(pb::InfoResponse { size: self.size }))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<DataStream>, Status> {
        let pb::ReadRequest { offset, len } = request.into_inner();
        let file = self
            .file
            .clone()
            .ok_or_else(|| Status::failed_precondition("this server serves no file"))?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| Status::invalid_argument("the range is not within the file"))?;
        let (tx, rx) = mpsc::channel(AHEAD);
        tokio::spawn(produce(file, offset, end, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads `start..end` in blocks and feeds it to the stream as messages;
/// stops when the reader goes away.
async fn produce(
    file: Arc<File>,
    start: u64,
    end: u64,
    tx: mpsc::Sender<Result<pb::Data, Status>>,
) {
    let mut at = start;
    while at < end {
        let len = (end - at).min(READ_BLOCK as u64) as usize;
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
        })
        .await;
        let mut block = match read {
            Ok(Ok(block)) => block,
            Ok(Err(e)) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        at += len as u64;
        while !block.is_empty() {
            let data = block.split_to(block.len().min(STREAM_MESSAGE_BYTES));
            if tx.send(Ok(pb::Data { data })).await.is_err() {
                return;
            }
        }
    }
}

/// Answers every ping at once.
pub struct PingService;

#[tonic::async_trait]
impl Ping for PingService {
    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {}))
    }
}

/// Serves Bulk (over `file`, if any) and Ping on `listener` until Ctrl-C or
/// SIGTERM.
pub async fn serve(listener: TcpListener, file: Option<File>) -> anyhow::Result<()> {
    let bulk = BulkService::new(file)?;
    hive_runtime::grpc::server()
        .add_service(BulkServer::new(bulk))
        .add_service(PingServer::new(PingService))
        .serve_with_incoming_shutdown(
            hive_runtime::grpc::incoming(listener),
            hive_runtime::shutdown::signal(),
        )
        .await?;
    Ok(())
}
