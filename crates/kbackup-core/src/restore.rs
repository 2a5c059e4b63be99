//! TODO(restore)
