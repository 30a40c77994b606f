//! Helpers for clients of the node's gRPC API (the command line, scripts,
//! tests): a submission streamed from files in bounded pieces.

use ecointegra_proto::v1::submit_filing_request::Part;
use ecointegra_proto::v1::{DocumentHeader, FilingHeader, SubmitFilingRequest};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// A guess from the file name, for the common document types.
pub fn media_type_of(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("xml") => "application/xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("zip") => "application/zip",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        _ => "application/octet-stream",
    }
}

/// Streams a header and files as submission parts, reading each file in
/// bounded pieces.
pub fn submission_stream(
    header: FilingHeader,
    files: Vec<PathBuf>,
) -> impl tokio_stream::Stream<Item = SubmitFilingRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let part = |p| SubmitFilingRequest { part: Some(p) };
        if tx.send(part(Part::Header(header))).await.is_err() {
            return;
        }
        for path in files {
            let Ok(mut file) = tokio::fs::File::open(&path).await else {
                return;
            };
            let Ok(meta) = file.metadata().await else {
                return;
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let header = DocumentHeader {
                name,
                media_type: media_type_of(&path).to_owned(),
                declared_size: meta.len(),
            };
            if tx.send(part(Part::Document(header))).await.is_err() {
                return;
            }
            loop {
                let mut buffer = vec![0u8; 256 * 1024];
                match file.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buffer.truncate(n);
                        if tx.send(part(Part::Chunk(buffer.into()))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
