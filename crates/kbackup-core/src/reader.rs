//! TODO(reader)
