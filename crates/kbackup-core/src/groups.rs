//! TODO(groups)
