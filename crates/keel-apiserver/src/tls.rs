//! The cluster CA, serving certificates and HTTPS listener. (Being written.)
