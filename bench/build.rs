//! Compiles the benchmark's own small proto (a bulk stream and a unary ping)
//! with the pure-Rust `protox`, as hive's build does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .open_files(["hive/bench/v1/bench.proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(compiler.file_descriptor_set())?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
