//! Compiles `proto/` into the gRPC stubs with the pure-Rust `protox` (no system
//! `protoc`) and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "hive/types/v1/types.proto",
    "hive/tracker/v1/tracker.proto",
    "hive/peer/v1/peer.proto",
    "hive/control/v1/control.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // No `connect()` constructors: they need tonic's transport, which the
    // core does without. Callers build a channel and call `XClient::new`.
    tonic_prost_build::configure()
        .build_transport(false)
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
