//! Compiles the .proto sources with protox (no `protoc` binary needed) and
//! writes the file descriptor set used by gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "ecointegra/v1/envelope.proto",
        "ecointegra/v1/transfer.proto",
        "ecointegra/v1/filing.proto",
        "ecointegra/v1/operations.proto",
        "ecointegra/v1/directory.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ecointegra_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Document bytes decode as slices of the buffer they arrive in (the
        // record read from Kafka, the decrypted payload, the gRPC frame), not
        // as copies of it.
        .bytes(".ecointegra.v1.Envelope.payload")
        .bytes(".ecointegra.v1.Chunk.data")
        .bytes(".ecointegra.v1.SubmitFilingRequest.chunk")
        .bytes(".ecointegra.v1.AnswerFilingRequest.chunk")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
