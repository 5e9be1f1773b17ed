//! keel's scheduler (work in progress).
