//! Zero-copy packet views (placeholder until the wire layer lands).
