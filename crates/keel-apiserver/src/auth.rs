//! Bearer-token authentication. (Being written.)
