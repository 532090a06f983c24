//! `bench-tool`: small helpers for hive's benchmark scripts.
//! - `hash FILE`: registering speed — hive's manifest hashing of a file
//!   (what a peer does to share it), against plain one-core BLAKE3 of the
//!   same bytes, interleaved.
//! - `summarize TSV`: the Markdown summary of interleaved timings.
//! - `free-ports N`: N free loopback TCP ports, for servers that cannot
//!   listen on port 0 and say where (nginx).

use std::{fs::File, io::Read, path::PathBuf, time::Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hive::{FileName, Manifest};
use hive_bench::stats::{Ratio, Samples, Timing, spread, summarize};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "bench-tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time hive's hashing of a file (Manifest::from_file, every core)
    /// against one-core BLAKE3, interleaved; print a table, or with --json
    /// the file's digest and the figures.
    Hash {
        file: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Skip the one-core BLAKE3 comparison.
        #[arg(long)]
        hive_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Summarize a TSV of timings (`name  round  seconds  bytes`).
    Summarize {
        tsv: PathBuf,
        /// A same-round ratio to show, `A:B` (how many times faster A was
        /// than B), or `A:B>=T` to judge it against a target.
        #[arg(long = "ratio", value_parser = Ratio::parse)]
        ratios: Vec<Ratio>,
    },
    /// Print N free loopback TCP ports, one a line.
    FreePorts { n: usize },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Hash {
            file,
            runs,
            hive_only,
            json,
        } => hash(&file, runs, hive_only, json),
        Command::Summarize { tsv, ratios } => {
            let text =
                std::fs::read_to_string(&tsv).with_context(|| format!("{}", tsv.display()))?;
            let timings: Vec<Timing> = text.lines().filter_map(Timing::parse).collect();
            print!("{}", summarize(&timings, &ratios));
            Ok(())
        }
        Command::FreePorts { n } => {
            // Bind them all at once so they differ, then let them go.
            let listeners = (0..n)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            for l in &listeners {
                println!("{}", l.local_addr()?.port());
            }
            Ok(())
        }
    }
}

fn hash(path: &PathBuf, runs: u32, hive_only: bool, json: bool) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let size = file.metadata()?.len();
    let name = FileName::new("bench")?;
    let (mut hive_rates, mut one_core_rates) = (Vec::new(), Vec::new());
    let mut digest = None;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let m = Manifest::from_file(&file, size, name.clone(), None)?;
        hive_rates.push(size as f64 / t0.elapsed().as_secs_f64() / 1e6);
        digest = Some(m.digest());
        if !hive_only {
            let t0 = Instant::now();
            let d = one_core_blake3(path)?;
            one_core_rates.push(size as f64 / t0.elapsed().as_secs_f64() / 1e6);
            anyhow::ensure!(Some(d) == digest.map(|d| *d.as_bytes()), "digests differ");
        }
    }
    let digest = digest.context("no run")?;
    let (h, o) = (Samples::new(hive_rates), Samples::new(one_core_rates));
    if json {
        println!(
            "{}",
            json!({
                "digest": digest.to_hex(), "bytes": size, "runs": h.len(),
                "hive_mb_s": h.median(), "hive_mb_s_min": h.min(), "hive_mb_s_max": h.max(),
                "one_core_mb_s": o.median(),
            })
        );
        return Ok(());
    }
    println!("blake3 {digest}  {} ({size} bytes)\n", path.display());
    println!(
        "| hashing, {} runs interleaved | MB/s, median [min–max] |",
        h.len()
    );
    println!("|---|---|");
    println!(
        "| hive (Manifest::from_file, every core) | {} |",
        spread(&h, 0)
    );
    if !o.is_empty() {
        println!("| BLAKE3 on one core (read + update) | {} |", spread(&o, 0));
        println!(
            "\nhive / one core: {:.2}×; target ≥ 2,000 MB/s: {}",
            h.median() / o.median(),
            if h.median() >= 2000.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    Ok(())
}

/// Plain BLAKE3 of a file on the calling thread, in 1 MiB reads.
fn one_core_blake3(path: &PathBuf) -> anyhow::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buf[..n]);
    }
}
