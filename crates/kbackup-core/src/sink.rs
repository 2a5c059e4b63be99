//! TODO(sink)
