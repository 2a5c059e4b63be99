//! TODO(offsets_log)
