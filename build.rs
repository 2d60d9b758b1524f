//! Compiles `proto/` (our subset of Envoy's v3 API) with protox, a pure-Rust
//! protobuf compiler, so no system `protoc` is needed. Writes two things to
//! OUT_DIR: the Rust types (prost + tonic) and the encoded descriptor set that
//! the config loader decodes YAML/JSON against at run time.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    collect_protos(root, &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    let fds = protox::compile(&relative, [root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("legate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("legate_protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
