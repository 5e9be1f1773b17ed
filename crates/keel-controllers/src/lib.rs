//! keel's control loops. (Being written.)

pub mod rollout;
