fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["etcd/kv.proto", "etcd/rpc.proto", "keel/raft.proto"];
    // Relative to this package, so that cargo checks the files of whichever checkout builds (a target dir
    // shared by two checkouts shares this build script's output too).
    for p in protos {
        println!("cargo:rerun-if-changed=../../proto/{p}");
    }
    // At run time, not `env!` at the build script's compile time: a build script binary compiled for one
    // checkout is reused by another that shares the target dir.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let paths = protos.map(|p| root.join(p));
    tonic_prost_build::configure().build_client(true).build_server(true).compile_protos(&paths, &[root])?;
    Ok(())
}
