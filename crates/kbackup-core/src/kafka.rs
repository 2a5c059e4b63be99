//! TODO(kafka)
