//! flowpath benchmarks and traffic generator.
