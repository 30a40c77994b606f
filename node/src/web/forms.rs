//! Form input: URL-encoded fields, and multipart uploads streamed document by
//! document into the same receiver gRPC uploads use, never held in memory.

use crate::error::{Error, Result};
use crate::submit::DocPart;
use axum::extract::Multipart;
use ecointegra_proto::v1::DocumentHeader;
use serde::Deserialize;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// A form's text fields.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Fields(HashMap<String, String>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The field's value, or "" when absent.
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// The most a text field of a multipart form may hold.
const MAX_TEXT_FIELD: usize = 64 * 1024;
/// The most text fields a multipart form may have.
const MAX_TEXT_FIELDS: usize = 64;

/// Reads a multipart form whose text fields come before its files (as a
/// browser sends a form whose file input is last). Returns the text fields,
/// and the documents as a stream read on demand: a failed or abandoned
/// upload stops where it is, and the receiver discards what it wrote.
pub async fn upload(mut multipart: Multipart) -> Result<(Fields, ReceiverStream<Result<DocPart>>)> {
    let (fields_tx, fields_rx) = oneshot::channel::<Result<Fields>>();
    let (tx, rx) = mpsc::channel::<Result<DocPart>>(4);
    tokio::spawn(async move {
        let mut fields = HashMap::new();
        let mut fields_tx = Some(fields_tx);
        // Errors go to whoever waits: the text fields' reader, else the
        // documents' stream.
        let fail = |fields_tx: &mut Option<oneshot::Sender<Result<Fields>>>, error: Error| {
            let tx = tx.clone();
            let pending = fields_tx.take();
            async move {
                match pending {
                    Some(f) => {
                        let _ = f.send(Err(error));
                    }
                    None => {
                        let _ = tx.send(Err(error)).await;
                    }
                }
            }
        };
        loop {
            let mut field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => {
                    fail(&mut fields_tx, Error::invalid("form", e.body_text())).await;
                    return;
                }
            };
            let name = field.name().unwrap_or_default().to_owned();
            let Some(file_name) = field.file_name().map(str::to_owned) else {
                if fields_tx.is_none() {
                    let error = Error::invalid(name, "form fields must come before the documents");
                    fail(&mut fields_tx, error).await;
                    return;
                }
                if fields.len() >= MAX_TEXT_FIELDS {
                    fail(
                        &mut fields_tx,
                        Error::invalid("form", "has too many fields"),
                    )
                    .await;
                    return;
                }
                let mut value = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(bytes)) if value.len() + bytes.len() <= MAX_TEXT_FIELD => {
                            value.extend_from_slice(&bytes)
                        }
                        Ok(Some(_)) => {
                            let error = Error::invalid(name, "is too long");
                            fail(&mut fields_tx, error).await;
                            return;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            fail(&mut fields_tx, Error::invalid(name, e.body_text())).await;
                            return;
                        }
                    }
                }
                fields.insert(name, String::from_utf8_lossy(&value).into_owned());
                continue;
            };
            if let Some(f) = fields_tx.take() {
                let _ = f.send(Ok(Fields(std::mem::take(&mut fields))));
            }
            // A file input left empty still sends a part, without a name.
            if file_name.is_empty() {
                while let Ok(Some(_)) = field.chunk().await {}
                continue;
            }
            let header = DocumentHeader {
                name: file_name,
                media_type: field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                declared_size: 0,
            };
            if tx.send(Ok(DocPart::Unsized(header))).await.is_err() {
                return;
            }
            loop {
                match field.chunk().await {
                    Ok(Some(bytes)) => {
                        if tx.send(Ok(DocPart::Chunk(bytes))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Error::invalid("documents", e.body_text())))
                            .await;
                        return;
                    }
                }
            }
        }
        if let Some(f) = fields_tx.take() {
            let _ = f.send(Ok(Fields(fields)));
        }
    });
    let fields = fields_rx
        .await
        .map_err(|_| Error::invalid("form", "the form ended early"))??;
    Ok((fields, ReceiverStream::new(rx)))
}

pub use crate::ids::url_encode;

#[cfg(test)]
mod tests {
    use super::url_encode;

    #[test]
    fn encodes_all_but_unreserved_characters() {
        assert_eq!(
            url_encode("/mesa?a=1&b=ñ ~x_y-z.pdf"),
            "%2Fmesa%3Fa%3D1%26b%3D%C3%B1%20~x_y-z.pdf"
        );
    }
}
