//! flowpath control plane.
