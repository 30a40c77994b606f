//! `ecointegra queues` and `ecointegra dlq`: the operators' side of the
//! command line, over the node's `OperationsService`.

use crate::cli::describe_status;
use ecointegra_proto::v1::operations_service_client::OperationsServiceClient;
use ecointegra_proto::v1::{
    DeadLetterEntry, DeadLetterState, DiscardDeadLetterRequest, GetDeadLetterRequest,
    GetQueuesRequest, GetQueuesResponse, ListAuditLogRequest, ListDeadLettersRequest,
    ReplayDeadLettersRequest, ResendTransferRequest,
};
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct QueuesArgs {
    /// The node's gRPC address, e.g. 127.0.0.1:50051.
    #[arg(long)]
    node: String,
    /// Refresh every this many seconds until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "2", value_name = "SECONDS")]
    watch: Option<u64>,
}

#[derive(clap::Args)]
pub(crate) struct ResendArgs {
    /// The node's gRPC address, e.g. 127.0.0.1:50051.
    #[arg(long)]
    node: String,
    /// The transfer, as `ecointegra queues` names it among the filings in trouble.
    transfer_id: String,
}

#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// The node's gRPC address, e.g. 127.0.0.1:50051.
    #[arg(long)]
    node: String,
    /// Only entries since then: a date (2026-12-01, UTC), a Unix time in
    /// milliseconds, or a span back from now (90s, 30m, 12h, 7d).
    #[arg(long)]
    since: Option<String>,
}

#[derive(clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List open dead letters (reason, claimed sender, time), newest first.
    List {
        #[arg(long)]
        node: String,
        /// Include replayed and discarded ones.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one dead letter: its reason, where it came from, and its bytes.
    Show {
        #[arg(long)]
        node: String,
        id: i64,
        /// Write the original record value to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Publish dead letters again, in order, once the cause is fixed. A dead
    /// letter is replayed at most once.
    Replay {
        #[arg(long)]
        node: String,
        /// Every open dead letter, oldest first.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
    },
    /// Mark a dead letter dealt with, recording why and who.
    Discard {
        #[arg(long)]
        node: String,
        id: i64,
        #[arg(long)]
        reason: String,
        /// A note on who decides, e.g. a person's name; defaults to $USER. The
        /// node records the caller's authenticated identity (its token's or
        /// certificate's name) with this note after it.
        #[arg(long)]
        by: Option<String>,
    },
}

/// A client of the node's operations service, authenticated (as an operator)
/// the way every command is: `ECOINTEGRA_TOKEN`.
async fn connect(node: &str) -> anyhow::Result<OperationsServiceClient<crate::cli::AuthChannel>> {
    Ok(OperationsServiceClient::new(
        crate::cli::channel(node).await?,
    ))
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        ecointegra_node::ids::format_utc(ms)
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match s {
        0 => "0".into(),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// The queue report as a table, as `ecointegra queues` prints it.
pub fn render_queues(report: &GetQueuesResponse) -> String {
    let mut out = format!(
        "{} at {} — Kafka {}\n\n",
        report.institution,
        when(report.generated_at_ms),
        if report.kafka_reachable {
            "reachable"
        } else {
            "NOT REACHABLE"
        }
    );
    out.push_str(&format!(
        "{:<12} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:<24} {:>7} {:>6}\n",
        "INSTITUTION",
        "LAG",
        "LAG AGE",
        "OUTBOX",
        "PENDING",
        "OLDEST",
        "DLQ OPEN",
        "LAST MIN",
        "LAST DELIVERY",
        "KiB/MIN",
        "SCHEMA"
    ));
    for q in &report.institutions {
        let name = if q.local {
            format!("{} *", q.institution)
        } else {
            q.institution.clone()
        };
        let (lag, age) = if q.lag_known {
            (
                q.inbox_lag_records.to_string(),
                duration(q.inbox_lag_seconds),
            )
        } else {
            ("?".into(), "?".into())
        };
        out.push_str(&format!(
            "{:<12} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:<24} {:>7} {:>6}\n",
            name,
            lag,
            age,
            q.outbox_backlog,
            q.pending_receipts,
            duration(q.oldest_pending_receipt_seconds),
            if q.local {
                q.dead_letters_open.to_string()
            } else {
                "-".into()
            },
            q.deliveries_last_minute,
            when(q.last_delivery_at_ms),
            if q.local {
                (q.bytes_last_minute / 1024).to_string()
            } else {
                "-".into()
            },
            q.envelope_schema,
        ));
    }
    out.push_str(
        "\n* this node. LAG: records of the institution's inbox its node has not applied; \
                  PENDING: our transfers awaiting its receipt; \
                  SCHEMA: the envelope schema written to it (local: the newest this node reads).\n",
    );
    for n in &report.notifications {
        let what = if n.target.is_empty() {
            n.channel.clone()
        } else {
            format!("{} {}", n.channel, n.target)
        };
        out.push_str(&format!(
            "\nNotifications ({what}): {} sent, {} pending ({} failing, oldest {}){}\n",
            n.sent,
            n.pending,
            n.failing,
            duration(n.oldest_pending_seconds),
            if n.last_error.is_empty() {
                String::new()
            } else {
                format!("; last error: {}", n.last_error)
            }
        ));
    }
    if report.troubled.is_empty() {
        out.push_str("\nNo filing in trouble.\n");
    } else {
        out.push_str("\nIn trouble:\n");
        for t in &report.troubled {
            let what = if t.tracking_code.is_empty() {
                &t.transfer_id
            } else {
                &t.tracking_code
            };
            out.push_str(&format!(
                "  {what} ({}, since {}): {}\n",
                t.counterpart,
                when(t.since_ms),
                t.reason
            ));
        }
    }
    out
}

pub(crate) async fn resend(args: ResendArgs) -> anyhow::Result<()> {
    let answer = connect(&args.node)
        .await?
        .resend_transfer(ResendTransferRequest {
            transfer_id: args.transfer_id.clone(),
        })
        .await
        .map_err(describe_status)?
        .into_inner();
    println!(
        "{} ({}) is being sent to {} again.",
        args.transfer_id, answer.tracking_code, answer.destination
    );
    Ok(())
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let now = ecointegra_broker::now_ms();
    let since_ms = match &args.since {
        Some(text) => parse_since(text, now).ok_or_else(|| {
            anyhow::anyhow!(
                "--since {text:?}: give a date (2026-12-01), milliseconds, or 90s/30m/12h/7d"
            )
        })?,
        None => 0,
    };
    let mut client = connect(&args.node).await?;
    let mut after_id = 0;
    println!(
        "{:<6} {:<20} {:<16} {:<8} {:<24} {:<20} {:<26} OUTCOME",
        "ID", "AT", "WHO", "ROLE", "FROM", "ACTION", "TARGET"
    );
    loop {
        let page = client
            .list_audit_log(ListAuditLogRequest {
                since_ms,
                limit: 1000,
                after_id,
            })
            .await
            .map_err(describe_status)?
            .into_inner()
            .entries;
        for e in &page {
            println!(
                "{:<6} {:<20} {:<16} {:<8} {:<24} {:<20} {:<26} {}",
                e.id,
                ecointegra_node::ids::format_utc(e.at_ms),
                e.actor,
                e.role,
                if e.address.is_empty() {
                    "-"
                } else {
                    &e.address
                },
                e.action,
                if e.target.is_empty() { "-" } else { &e.target },
                e.outcome
            );
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after_id = last.id,
            _ => return Ok(()),
        }
    }
}

/// `--since`: a date (UTC midnight), milliseconds, or a span back from `now`.
fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if let Some(day) = ecointegra_node::config::day::Day::parse(text) {
        return Some(day.0 * 86_400_000);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let unit = match text.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let count: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    Some(now_ms - count.checked_mul(unit)?)
}

pub(crate) async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.node).await?;
    loop {
        let report = client
            .get_queues(GetQueuesRequest {})
            .await
            .map_err(describe_status)?
            .into_inner();
        let table = render_queues(&report);
        match args.watch {
            None => {
                print!("{table}");
                return Ok(());
            }
            Some(seconds) => {
                // Clear the screen and redraw, like watch(1).
                print!("\x1b[2J\x1b[H{table}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(seconds.max(1))) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    }
}

fn state(entry: &DeadLetterEntry) -> &'static str {
    match DeadLetterState::try_from(entry.state) {
        Ok(DeadLetterState::Open) => "open",
        Ok(DeadLetterState::Replayed) => "replayed",
        Ok(DeadLetterState::Discarded) => "discarded",
        _ => "?",
    }
}

pub(crate) async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { node, all, limit } => {
            let list = connect(&node)
                .await?
                .list_dead_letters(ListDeadLettersRequest {
                    include_closed: all,
                    limit,
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            if list.dead_letters.is_empty() {
                println!("No dead letters{}.", if all { "" } else { " open" });
            }
            for d in &list.dead_letters {
                println!(
                    "{:>6}  {:<9} {:<24} {:<12} {:<16} {}",
                    d.id,
                    state(d),
                    when(d.dead_at_ms),
                    if d.claimed_sender.is_empty() {
                        "?"
                    } else {
                        &d.claimed_sender
                    },
                    d.reason_code,
                    d.reason
                );
            }
        }
        DlqCommand::Show { node, id, out } => {
            let detail = connect(&node)
                .await?
                .get_dead_letter(GetDeadLetterRequest { id })
                .await
                .map_err(describe_status)?
                .into_inner();
            let d = detail.entry.unwrap_or_default();
            println!("dead letter:    {} ({})", d.id, state(&d));
            println!("reason:         {} ({})", d.reason, d.reason_code);
            println!("claimed sender: {}", d.claimed_sender);
            println!("message id:     {}", d.message_id);
            println!("record key:     {}", d.record_key);
            println!("dead at:        {}", when(d.dead_at_ms));
            println!(
                "from:           {} partition {} offset {}",
                d.source_topic, d.source_partition, d.source_offset
            );
            println!(
                "on the DLQ:     {} partition {} offset {}",
                d.dlq_topic, d.dlq_partition, d.dlq_offset
            );
            println!("value:          {}", detail.envelope_summary);
            if d.replayed_at_ms > 0 {
                println!("replayed at:    {}", when(d.replayed_at_ms));
            }
            if d.discarded_at_ms > 0 {
                println!(
                    "discarded at:   {} by {}: {}",
                    when(d.discarded_at_ms),
                    d.discarded_by,
                    d.discard_reason
                );
            }
            if let Some(path) = out {
                tokio::fs::write(&path, &detail.original_value).await?;
                println!(
                    "{} bytes written to {}",
                    detail.original_value.len(),
                    path.display()
                );
            }
        }
        DlqCommand::Replay { node, all, ids } => {
            let answer = connect(&node)
                .await?
                .replay_dead_letters(ReplayDeadLettersRequest { ids, all_open: all })
                .await
                .map_err(describe_status)?
                .into_inner();
            if answer.outcomes.is_empty() {
                println!("Nothing to replay.");
            }
            for o in &answer.outcomes {
                if o.replayed {
                    println!(
                        "{}: replayed to {} partition {} offset {}",
                        o.id, o.topic, o.partition, o.offset
                    );
                } else {
                    println!(
                        "{}: already replayed at {}; nothing done",
                        o.id,
                        when(o.replayed_at_ms)
                    );
                }
            }
        }
        DlqCommand::Discard {
            node,
            id,
            reason,
            by,
        } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_default();
            let d = connect(&node)
                .await?
                .discard_dead_letter(DiscardDeadLetterRequest { id, reason, by })
                .await
                .map_err(describe_status)?
                .into_inner();
            println!(
                "{}: discarded at {} by {}: {}",
                d.id,
                when(d.discarded_at_ms),
                d.discarded_by,
                d.discard_reason
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod audit_tests {
    #[test]
    fn since_takes_dates_milliseconds_and_spans() {
        let now = 1_800_000_000_000;
        assert_eq!(super::parse_since("1970-01-02", now), Some(86_400_000));
        assert_eq!(super::parse_since("1234", now), Some(1234));
        assert_eq!(super::parse_since("30m", now), Some(now - 1_800_000));
        assert_eq!(super::parse_since("7d", now), Some(now - 7 * 86_400_000));
        for bad in ["", "yesterday", "2026-02-30", "-5m", "5w"] {
            assert_eq!(super::parse_since(bad, now), None, "{bad:?}");
        }
    }
}
