//! end-to-end suite
