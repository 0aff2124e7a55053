//! The ABI shared by the XDP program and userspace: the one Call-ID hash,
//! the worker-steering rule, and every map key/value type.
#![no_std]

pub mod callid_scan;
pub mod hash;
pub mod maps;

pub use hash::{call_id_hash, chunk_mask, trim_lws, worker_for_hash, CallIdHasher};
