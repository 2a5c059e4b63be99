//! TODO(codec)
