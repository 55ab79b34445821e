//! The four commands. Each turns arguments into a plan, checks it, then runs it against a host.
