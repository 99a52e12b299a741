//! regfs: an OCI registry, or an OCI image layout, as a filesystem.
//!
//! # Layout
//!
//! - `cli`       command-line definition and the wiring of each command; all user output
//! - `reference` parsing of sources, repository names and tags (pure)
//! - `digest`    the `Digest` type and the streaming verifier
//! - `oci`       the OCI vocabulary: media types, annotations, descriptors (pure)
//! - `auth`      `WWW-Authenticate` challenges, docker credentials, bearer tokens
//! - `registry`  the distribution protocol over reqwest: listings, manifests, blob streams
//! - `cache`     the content-addressed on-disk cache: verify, then rename; eviction
//! - `tree`      nodes, inode numbers, manifests and tar layers seen as folders (pure)
//! - `stage`     the staging area, which folders are tags, the commit planner and pusher
//! - `fs`        filesystem operations as async functions, testable without a mount;
//!   a coordinator over metadata, namespace, blobs and overlay
//! - `fuse`      the thin fuser adapter: decode, spawn `fs`, reply
//!
//! # Dependency rule
//!
//! A module names (by `crate::` paths) only the modules its arrow lists,
//! and the arrows make no cycle. `cli` is the wiring edge: it builds the
//! registry client, opens the cache and the staging area, and mounts.
//!
//! - `cli -> {fuse, fs, stage, registry, cache, reference, oci, digest}`
//! - `fuse -> {fs}`
//! - `fs -> {tree, stage, registry, cache, reference, oci, digest}`
//! - `stage -> {tree, registry, cache, reference, oci, digest}`
//! - `tree -> {oci, digest}`
//! - `registry -> {auth, reference, oci, digest}`
//! - `cache -> {reference, digest}`
//! - `auth -> {}`
//! - `reference -> {}`
//! - `oci -> {digest}`
//! - `digest -> {}`
//!
//! Only `fuse` names fuser, only `registry` and `auth` name reqwest, only
//! `registry` names hyper and rustls, only `cli` prints. `deps_test` reads
//! the arrows above and checks all of it.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod cache;
pub mod cli;
pub mod digest;
pub mod fs;
pub mod fuse;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod stage;
pub mod tree;

#[cfg(test)]
mod deps_test;
