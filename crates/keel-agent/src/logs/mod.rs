//! Containers' logs: the CRI line format ([`cri`]), the logger containerd's shim runs for each container
//! ([`writer`], `keel container-log`), and reading a container's log for a request ([`reader`], with the
//! choices of [`select`]). Each attempt of a container writes `<log dir>/<ns>_<pod>_<uid>/<container>/
//! <attempt>.log` (rotated to `<attempt>.log.1` …); which attempt a request reads is decided here from
//! the pod's status, as the kubelet decides it.

pub mod cri;
pub mod reader;
pub mod select;
pub mod writer;
