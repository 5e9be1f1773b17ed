fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["etcd/kv.proto", "etcd/rpc.proto", "keel/raft.proto"];
    // Relative to this package, so that cargo checks the files of whichever checkout builds (a target dir
    // shared by two checkouts shares this build script's output too).
    for p in protos {
        println!("cargo:rerun-if-changed=../../proto/{p}");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let paths = protos.map(|p| root.join(p));
    tonic_prost_build::configure().build_client(true).build_server(true).compile_protos(&paths, &[root])?;
    Ok(())
}
