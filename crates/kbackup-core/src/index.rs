//! TODO(index)
