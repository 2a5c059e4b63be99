//! TODO(translate)
