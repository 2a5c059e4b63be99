//! TODO(segment)
