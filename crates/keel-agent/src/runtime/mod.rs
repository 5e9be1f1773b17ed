//! The container runtime: containerd.

pub mod containerd;

pub use containerd::{Containerd, ExecIo, ExecOutput, ImageInfo, Registry, RuntimeError};
