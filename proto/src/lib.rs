//! Protocol buffers of ecointegra.
//!
//! # Layout
//! - `ecointegra/v1/envelope.proto`: the signed envelope every Kafka record carries.
//! - `ecointegra/v1/transfer.proto`: transfer, chunk, manifest and receipt payloads.
//! - `ecointegra/v1/filing.proto`: the gRPC `FilingService`.
//! - `ecointegra/v1/operations.proto`: the gRPC `OperationsService` (queues, dead letters).
//!
//! Generated with tonic-prost-build and protox; [`FILE_DESCRIPTOR_SET`] feeds
//! gRPC server reflection.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ecointegra.v1");
}

/// Encoded `FileDescriptorSet` of every ecointegra .proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ecointegra_descriptor.bin"));
