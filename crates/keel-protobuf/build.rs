//! Compiles the Kubernetes 1.33 `.proto` files into a descriptor set (`$OUT_DIR/kubernetes.fds`).
//!
//! The files are not kept in keel: they ship in the source of the `k8s-rs-pb` package, which this crate
//! names as a never-built dependency (see Cargo.toml). `cargo metadata` says where cargo unpacked it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The Kubernetes minor whose API keel serves, as the directory name inside `k8s-rs-pb/src`.
const KUBERNETES_VERSION: &str = "v1_33";
/// The package that carries the `.proto` files.
const PROTO_PACKAGE: &str = "k8s-rs-pb";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let root = proto_root();
    let mut files = Vec::new();
    collect_protos(&root, &root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .proto files under {}", root.display());
    let mut compiler = protox::Compiler::new([&root]).unwrap_or_else(|e| panic!("protox: {e:?}"));
    compiler.include_imports(true);
    compiler.open_files(&files).unwrap_or_else(|e| panic!("compiling the Kubernetes .proto files: {e:?}"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("kubernetes.fds"), compiler.encode_file_descriptor_set()).expect("writing kubernetes.fds");
}

/// `<k8s-rs-pb source>/src/v1_33`, located with `cargo metadata`.
fn proto_root() -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata output");
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == PROTO_PACKAGE)
        .unwrap_or_else(|| panic!("cargo metadata does not list {PROTO_PACKAGE}"));
    let manifest_path = package["manifest_path"].as_str().expect("manifest_path");
    let root = Path::new(manifest_path).parent().expect("package directory").join("src").join(KUBERNETES_VERSION);
    assert!(root.is_dir(), "{} is not a directory", root.display());
    root
}

/// Every `generated.proto` under `dir`, as paths relative to `root` (the import root of the files).
fn collect_protos(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_protos(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}
