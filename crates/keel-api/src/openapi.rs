//! The `/openapi/v3` documents kubectl fetches before `apply`. (Being written.)
