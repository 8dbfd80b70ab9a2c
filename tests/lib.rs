//! Integration, UI and end-to-end tests of obs. The test catalog is `catalogs/library.toml`,
//! named by `[package.metadata.obs]` in this package's `Cargo.toml`.

#[path = "support/peers.rs"]
pub mod peers;
