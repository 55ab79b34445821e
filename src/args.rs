//! Getopt::Long-compatible argument parsing (placeholder; being written).
