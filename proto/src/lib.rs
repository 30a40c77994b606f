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

impl v1::FilingStatus {
    /// The status's name as clients and configurations write it: without the
    /// `FILING_STATUS_` prefix, e.g. `DELIVERED`.
    pub fn short_name(self) -> &'static str {
        self.as_str_name().trim_start_matches("FILING_STATUS_")
    }

    /// The status a short name (`DELIVERED`) names.
    pub fn from_short_name(name: &str) -> Option<Self> {
        Self::from_str_name(&format!("FILING_STATUS_{name}"))
    }
}

/// Encoded `FileDescriptorSet` of every ecointegra .proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ecointegra_descriptor.bin"));
