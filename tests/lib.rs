//! Integration, UI and end-to-end tests of obs; the test catalog is `metrics.toml` here.
