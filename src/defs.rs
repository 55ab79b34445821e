//! xCAT stanza definitions files and the table view of them (placeholder; being written).
