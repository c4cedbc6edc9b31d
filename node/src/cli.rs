//! The `meridian` client CLI.
