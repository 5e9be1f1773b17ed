//! The container runtime: containerd.

pub mod containerd;

pub use containerd::{Containerd, ImageInfo, RuntimeError};
