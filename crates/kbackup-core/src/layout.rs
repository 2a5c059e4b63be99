//! TODO(layout)
