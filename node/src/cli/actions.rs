//! `ecointegra filing receive|observe|reject|forward|answer|archive|due|chain`
//! and `ecointegra track`: the clerk and citizen sides of the command line.

use crate::cli::{
    ActionTarget, FilingCommand, connect, describe_status, print_filing, status_name,
};
use anyhow::bail;
use ecointegra_proto::v1::tracking_service_client::TrackingServiceClient;
use ecointegra_proto::v1::{
    AnswerFilingRequest, AnswerHeader, ArchiveFilingRequest, Filing, ForwardFilingRequest,
    GetReceiptRequest, ListDueRequest, ObserveFilingRequest, ReceiveFilingRequest,
    RejectFilingRequest, TrackRequest, answer_filing_request::Part, submit_filing_request,
};
use tokio_stream::StreamExt;

fn action_id(target: &ActionTarget) -> String {
    match &target.action_id {
        Some(id) => id.clone(),
        None => {
            let id = ecointegra_node::ids::random_code(16);
            eprintln!("action id: {id} (repeat with --action-id {id} to retry safely)");
            id
        }
    }
}

pub(crate) async fn run(command: FilingCommand) -> anyhow::Result<()> {
    let filing: Filing = match command {
        FilingCommand::Receive {
            target,
            registry_number,
            office,
        } => {
            let request = ReceiveFilingRequest {
                action_id: action_id(&target),
                tracking_code: target.tracking_code,
                registry_number,
                office,
            };
            connect(&target.node)
                .await?
                .receive_filing(request)
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Observe { target, reason } => {
            let request = ObserveFilingRequest {
                action_id: action_id(&target),
                tracking_code: target.tracking_code,
                reason,
            };
            connect(&target.node)
                .await?
                .observe_filing(request)
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Reject { target, reason } => {
            let request = RejectFilingRequest {
                action_id: action_id(&target),
                tracking_code: target.tracking_code,
                reason,
            };
            connect(&target.node)
                .await?
                .reject_filing(request)
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Forward { target, to, note } => {
            let request = ForwardFilingRequest {
                action_id: action_id(&target),
                tracking_code: target.tracking_code,
                destination: to,
                note,
            };
            connect(&target.node)
                .await?
                .forward_filing(request)
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Archive { target, note } => {
            let request = ArchiveFilingRequest {
                action_id: action_id(&target),
                tracking_code: target.tracking_code,
                note,
            };
            connect(&target.node)
                .await?
                .archive_filing(request)
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Answer {
            target,
            note,
            files,
        } => {
            for file in &files {
                if !file.is_file() {
                    bail!("{} is not a readable file", file.display());
                }
            }
            let header = AnswerHeader {
                action_id: action_id(&target),
                tracking_code: target.tracking_code.clone(),
                note,
            };
            // Reuse the submission's streaming of files, re-wrapped as answer parts.
            let documents =
                ecointegra_node::grpc::client::submission_stream(Default::default(), files)
                    .skip(1)
                    .map(|p| {
                        let part = match p.part {
                            Some(submit_filing_request::Part::Document(d)) => Part::Document(d),
                            Some(submit_filing_request::Part::Chunk(c)) => Part::Chunk(c),
                            _ => Part::Chunk(Default::default()),
                        };
                        AnswerFilingRequest { part: Some(part) }
                    });
            let first = tokio_stream::once(AnswerFilingRequest {
                part: Some(Part::Header(header)),
            });
            connect(&target.node)
                .await?
                .answer_filing(first.chain(documents))
                .await
                .map_err(describe_status)?
                .into_inner()
        }
        FilingCommand::Due { node, within } => {
            let due = connect(&node)
                .await?
                .list_due(ListDueRequest {
                    within_days: within,
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            if due.filings.is_empty() {
                println!("Nothing is due within {within} days.");
            }
            for d in &due.filings {
                let f = d.filing.clone().unwrap_or_default();
                let when = match d.business_days_left {
                    n if n < 0 => format!("OVERDUE by {} business days", -n),
                    0 => "due today".to_owned(),
                    n => format!("{n} business days left"),
                };
                println!(
                    "{:<24} {:<10} due {} ({when})  {}",
                    f.tracking_code,
                    status_name(f.status),
                    f.due_date,
                    f.subject
                );
            }
            return Ok(());
        }
        FilingCommand::Chain {
            node,
            tracking_code,
        } => {
            let chain = connect(&node)
                .await?
                .get_receipt_chain(GetReceiptRequest { tracking_code })
                .await
                .map_err(describe_status)?
                .into_inner();
            for bytes in &chain.receipts {
                use prost::Message;
                let envelope = ecointegra_proto::v1::Envelope::decode(bytes.as_slice())?;
                let receipt = ecointegra_proto::v1::Receipt::decode(envelope.payload.as_ref())?;
                println!(
                    "hop {}: {} → {}  registry {}  at {}  previous {}",
                    receipt.hop,
                    receipt.origin,
                    receipt.receiving_institution,
                    receipt.registry_number,
                    ecointegra_node::ids::format_utc(receipt.received_at_ms),
                    if receipt.previous_receipt_sha256.is_empty() {
                        "-".to_owned()
                    } else {
                        hex::encode(&receipt.previous_receipt_sha256)[..16].to_owned()
                    }
                );
            }
            println!(
                "chain verified: {}",
                if chain.verified { "yes" } else { "NO" }
            );
            return Ok(());
        }
        _ => unreachable!("handled in cli::filing"),
    };
    print_filing(&filing);
    Ok(())
}

pub(crate) async fn track(
    node: &str,
    tracking_code: &str,
    verification: &str,
) -> anyhow::Result<()> {
    let mut client = TrackingServiceClient::new(crate::cli::channel(node).await?);
    let answer = client
        .track(TrackRequest {
            tracking_code: tracking_code.to_owned(),
            verification_code: verification.to_owned(),
        })
        .await
        .map_err(describe_status)?
        .into_inner();
    println!("Trámite {}", answer.tracking_code);
    println!(
        "  estado actual:  {} ({})",
        ecointegra_node::lifecycle::tracking::status_label(answer.status),
        status_name(answer.status)
    );
    println!("  lo tiene:       {}", answer.current_holder);
    if !answer.due_date.is_empty() {
        println!("  plazo:          {}", answer.due_date);
    }
    println!("  historial:");
    for e in &answer.timeline {
        let with = if e.counterpart.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.counterpart)
        };
        println!(
            "    {}  {:<8} {:<11}{with}{}",
            ecointegra_node::ids::format_utc(e.timestamp_ms),
            e.institution,
            ecointegra_node::lifecycle::tracking::status_label(e.status),
            if e.due_date.is_empty() {
                String::new()
            } else {
                format!("  plazo {}", e.due_date)
            }
        );
    }
    for d in &answer.answer_documents {
        println!(
            "  respuesta: {} ({} bytes, sha256 {})",
            d.name, d.size, d.sha256
        );
    }
    Ok(())
}
