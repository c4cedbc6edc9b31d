//! Local mode, driven as a user would: real processes and the CLI.
