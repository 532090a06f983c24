//! `netem-delay`: a fixed one-way delay for `scripts/netem-swarm.sh`, on a
//! kernel built without the `netem` qdisc.
//!
//! The harness sends every packet that enters a namespace's link to
//! NFQUEUE (`iptables -t mangle -A PREROUTING -i eth0 -j NFQUEUE`); this
//! program, run inside that namespace, learns each queued packet's id from
//! nfnetlink_queue and gives the kernel its ACCEPT verdict `--delay-ms`
//! later. Only metadata crosses to user space (copy mode META): the packet
//! stays in the kernel, and GSO packets stay whole. As every packet waits
//! the same time they leave in the order they came, so one batch verdict
//! ("accept every id up to N") releases all that are due at once.
//!
//! The delay is taken on the receiving side on purpose: a packet held on
//! its sender's way out would still count against the sending socket (TCP
//! small queues), and would cap each connection far below the link rate.
//!
//! Prints `ready` on stdout once the queue is bound, so the rule can be
//! added after it (without a listener the kernel drops queued packets, so a
//! delayer that dies stops the traffic rather than silently removing the
//! delay), then every 5 s how late it released packets (see `Stats`).
//! Runs until killed.

use std::{
    collections::VecDeque,
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use rustix::{
    event::{PollFd, PollFlags, Timespec, poll},
    io::Errno,
    net::{
        AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, bind, netlink, recv, sendto,
        socket_with, sockopt,
    },
};

/// Holds every packet of an NFQUEUE queue for a fixed time, then accepts it.
#[derive(Parser, Debug)]
#[command(name = "netem-delay")]
struct Args {
    /// The NFQUEUE queue number (`--queue-num` of the iptables rule).
    #[arg(long, default_value_t = 0)]
    queue: u16,

    /// How long each packet is held, in milliseconds (fractions allowed).
    #[arg(long)]
    delay_ms: f64,

    /// Most packets the kernel keeps queued; past it, packets are dropped
    /// as a full router queue would.
    #[arg(long, default_value_t = 1 << 16)]
    max_len: u32,
}

// linux/netfilter/nfnetlink.h, nfnetlink_queue.h, netlink.h
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQA_CFG_F_GSO: u32 = 1 << 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const AF_INET: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.delay_ms >= 0.0 && args.delay_ms < 10_000.0) {
        bail!("--delay-ms must be between 0 and 10000");
    }
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::NETFILTER),
    )
    .context("netlink socket")?;
    bind(&fd, &netlink::SocketAddrNetlink::new(0, 0)).context("bind netlink socket")?;
    // Bursts of notices must not overflow the socket; forcing the size
    // needs CAP_NET_ADMIN, which the harness has (it runs as root).
    let _ = sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20);

    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    let mut seq = 0;
    let mut config = |attrs: &[(u16, Vec<u8>)]| -> anyhow::Result<()> {
        seq += 1;
        let msg = message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            args.queue,
            attrs,
        );
        sendto(&fd, &msg, SendFlags::empty(), &kernel).context("send queue config")?;
        wait_ack(&fd, seq)
    };
    let mut cmd = vec![NFQNL_CFG_CMD_BIND, 0];
    cmd.extend_from_slice(&AF_INET.to_be_bytes());
    config(&[(NFQA_CFG_CMD, cmd)]).context("bind the queue (is another program bound to it?)")?;
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    config(&[
        (NFQA_CFG_PARAMS, params),
        (NFQA_CFG_QUEUE_MAXLEN, args.max_len.to_be_bytes().to_vec()),
        (NFQA_CFG_MASK, NFQA_CFG_F_GSO.to_be_bytes().to_vec()),
        (NFQA_CFG_FLAGS, NFQA_CFG_F_GSO.to_be_bytes().to_vec()),
    ])
    .context("configure the queue")?;
    println!("ready");
    std::io::stdout().flush()?;

    let mut stats = Stats::default();
    let mut next_report = Instant::now() + REPORT_EVERY;
    // (when due, packet id), oldest first.
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        // Until the oldest packet is due, or the next report.
        let wake = held
            .front()
            .map_or(next_report, |&(due, _)| due.min(next_report));
        let wait = wake.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        loop {
            match recv(&fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    let due = Instant::now() + delay;
                    for id in packet_ids(&buf[..n])? {
                        held.push_back((due, id));
                    }
                }
                Err(Errno::AGAIN) => break,
                // Notices were lost; their packets are still queued, and
                // the next batch verdict (every id up to N) releases them.
                Err(Errno::NOBUFS) | Err(Errno::INTR) => continue,
                Err(e) => return Err(e).context("recv"),
            }
        }
        let now = Instant::now();
        let mut last = None;
        while let Some(&(due, id)) = held.front() {
            if due > now {
                break;
            }
            stats.released(now - due);
            last = Some(id);
            held.pop_front();
        }
        if now >= next_report {
            stats.report()?;
            next_report = now + REPORT_EVERY;
        }
        if let Some(id) = last {
            let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
            verdict.extend_from_slice(&id.to_be_bytes());
            let msg = message(
                NFQNL_MSG_VERDICT_BATCH,
                NLM_F_REQUEST,
                0,
                args.queue,
                &[(NFQA_VERDICT_HDR, verdict)],
            );
            sendto(&fd, &msg, SendFlags::empty(), &kernel).context("send verdict")?;
        }
    }
}

const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How late packets were released against their due time: a packet's delay
/// is `--delay-ms` plus this (and the moment it took to be read). Printed
/// every few seconds as `stats packets=N late_p50_us=… late_p99_us=…
/// late_max_us=…` (totals since the start), so a harness can tell whether
/// the delayer kept up.
#[derive(Default)]
struct Stats {
    packets: u64,
    max: Duration,
    /// Packets by lateness, in 100 µs steps; the last bucket takes the rest.
    buckets: Vec<u64>,
}

impl Stats {
    fn released(&mut self, late: Duration) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; 1000];
        }
        let i = ((late.as_micros() / 100) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.packets += 1;
        self.max = self.max.max(late);
    }

    /// The lateness (µs, to the bucket's upper edge) below which `q` of the packets fall.
    fn quantile(&self, q: f64) -> u64 {
        let want = (q * self.packets as f64).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return (i as u64 + 1) * 100;
            }
        }
        0
    }

    fn report(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "stats packets={} late_p50_us={} late_p99_us={} late_max_us={}",
            self.packets,
            self.quantile(0.5),
            self.quantile(0.99),
            self.max.as_micros()
        )?;
        out.flush()
    }
}

/// One nfnetlink_queue message: netlink header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN];
    msg.extend_from_slice(&[0, 0]); // AF_UNSPEC, NFNETLINK_V0
    msg.extend_from_slice(&queue.to_be_bytes());
    for (kind, payload) in attrs {
        msg.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(msg.len().next_multiple_of(4), 0);
    }
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg
}

/// The netlink messages in one datagram: (type, body after the header).
fn messages(mut data: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
        let body = &data[NLMSG_HDRLEN..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((kind, seq, body))
    })
}

/// The packet ids of the queue notices in one datagram.
fn packet_ids(data: &[u8]) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for (kind, _, body) in messages(data) {
        if kind == NLMSG_ERROR {
            let errno = i32::from_ne_bytes(body[0..4].try_into()?);
            bail!("netlink error {errno}");
        }
        if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET || body.len() < NFGEN_HDRLEN {
            continue;
        }
        let mut attrs = &body[NFGEN_HDRLEN..];
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes(attrs[0..2].try_into()?) as usize;
            let kind = u16::from_ne_bytes(attrs[2..4].try_into()?) & 0x3fff;
            if len < 4 || len > attrs.len() {
                break;
            }
            if kind == NFQA_PACKET_HDR && len >= 8 {
                ids.push(u32::from_be_bytes(attrs[4..8].try_into()?));
            }
            attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
        }
    }
    Ok(ids)
}

/// Waits for the kernel's answer to request `seq`: an ack, or its error.
fn wait_ack(fd: &impl rustix::fd::AsFd, seq: u32) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, _) = recv(fd, &mut buf[..], RecvFlags::empty()).context("recv ack")?;
        for (kind, got, body) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR && got == seq && body.len() >= 4 {
                let errno = i32::from_ne_bytes(body[0..4].try_into()?);
                if errno == 0 {
                    return Ok(());
                }
                bail!(
                    "netlink error {}",
                    std::io::Error::from_raw_os_error(-errno)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_come_from_the_released_packets() {
        let mut stats = Stats::default();
        for _ in 0..98 {
            stats.released(Duration::from_micros(50));
        }
        stats.released(Duration::from_micros(2_050));
        stats.released(Duration::from_secs(1));
        assert_eq!(stats.packets, 100);
        assert_eq!(stats.quantile(0.5), 100);
        assert_eq!(stats.quantile(0.99), 2_100);
        assert_eq!(stats.quantile(1.0), 100_000);
        assert_eq!(stats.max, Duration::from_secs(1));
    }

    /// A queue notice as the kernel sends it: an attribute before the
    /// packet header (a mark), the header's id big-endian, then the hook.
    fn notice(id: u32) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes()); // hw_protocol
        hdr.push(0); // hook
        let mut msg = message(
            NFQNL_MSG_PACKET,
            0,
            0,
            0,
            &[(3, 9u32.to_be_bytes().to_vec()), (NFQA_PACKET_HDR, hdr)],
        );
        msg[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        msg
    }

    #[test]
    fn every_notice_of_a_datagram_gives_its_packet_id() {
        let mut datagram = notice(7);
        datagram.extend(notice(0x0102_0304));
        assert_eq!(packet_ids(&datagram).unwrap(), vec![7, 0x0102_0304]);
    }

    #[test]
    fn a_message_is_as_long_as_its_header_says_and_attributes_are_padded() {
        let msg = message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST,
            5,
            1,
            &[(NFQA_CFG_CMD, vec![1, 0, 0, 2]), (9, vec![1])],
        );
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(msg.len() % 4, 0);
        // nfgenmsg: the queue number, big-endian.
        assert_eq!(&msg[18..20], &1u16.to_be_bytes());
        let parsed: Vec<_> = messages(&msg).collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1, 5);
    }

    #[test]
    fn a_netlink_error_is_an_error() {
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg.extend_from_slice(&(-1i32).to_ne_bytes());
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(packet_ids(&msg).is_err());
    }
}
