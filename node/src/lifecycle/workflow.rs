//! Clerk actions on a filing this institution holds: receive, observe, reject,
//! forward, answer, archive. Each checks the filing's state, changes it, queues
//! what must travel (a notice, a new transfer) and the sector tracking event,
//! all in one transaction, once per client-supplied action id.

use crate::audit::Actor;
use crate::error::{Error, Result, Violation};
use crate::lifecycle::Desk;
use crate::lifecycle::validate::{self, MAX_HOPS, MAX_NOTE_CHARS};
use crate::store::blobs::{Received, ToKeep};
use crate::store::{self, DocumentRow, FilingRow, NewFiling, Step};
use ecointegra_proto::v1::{
    Direction, Filing, FilingStatus, MessageType, Notice, SgdCargo, TransferKind,
};
use prost::Message;
use rusqlite::Connection;

pub enum Action {
    Receive {
        registry_number: String,
        office: String,
        /// The cargo of this institution's SGD, when it acted (PIDE).
        cargo: Option<SgdCargo>,
    },
    Observe {
        reason: String,
        cargo: Option<SgdCargo>,
    },
    Reject {
        reason: String,
    },
    Forward {
        destination: String,
        note: String,
    },
    Answer {
        note: String,
        documents: Vec<(DocumentRow, Received)>,
    },
    Archive {
        note: String,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Receive { .. } => "receive",
            Action::Observe { .. } => "observe",
            Action::Reject { .. } => "reject",
            Action::Forward { .. } => "forward",
            Action::Answer { .. } => "answer",
            Action::Archive { .. } => "archive",
        }
    }

    /// The states this action may start from.
    pub fn allowed_from(&self) -> &'static [FilingStatus] {
        use FilingStatus::*;
        match self {
            Action::Receive { .. } => &[Delivered],
            Action::Observe { .. } | Action::Reject { .. } => &[Delivered, Received],
            Action::Forward { .. } | Action::Answer { .. } => &[Received],
            Action::Archive { .. } => &[Received, Observed, Rejected, Forwarded, Answered],
        }
    }

    fn result(&self) -> FilingStatus {
        match self {
            Action::Receive { .. } => FilingStatus::Received,
            Action::Observe { .. } => FilingStatus::Observed,
            Action::Reject { .. } => FilingStatus::Rejected,
            Action::Forward { .. } => FilingStatus::Forwarded,
            Action::Answer { .. } => FilingStatus::Answered,
            Action::Archive { .. } => FilingStatus::Archived,
        }
    }
}

/// Status name as clients see it, e.g. `DELIVERED`.
pub fn status_name(status: FilingStatus) -> &'static str {
    status.short_name()
}

fn check_fields(desk: &Desk, tracking_code: &str, action_id: &str, action: &Action) -> Result<()> {
    let mut v = Vec::new();
    if tracking_code.trim().is_empty() {
        v.push(Violation::new("tracking_code", "is required"));
    }
    if action_id.trim().is_empty() || action_id.len() > 128 {
        v.push(Violation::new(
            "action_id",
            "is required, at most 128 characters",
        ));
    }
    let required = |v: &mut Vec<Violation>, field: &str, value: &str| {
        if value.trim().is_empty() {
            v.push(Violation::new(field, "is required"));
        } else if value.chars().count() > MAX_NOTE_CHARS {
            v.push(Violation::new(
                field,
                format!("must be at most {MAX_NOTE_CHARS} characters"),
            ));
        }
    };
    match action {
        Action::Receive {
            registry_number,
            office,
            ..
        } => {
            required(&mut v, "registry_number", registry_number);
            required(&mut v, "office", office);
        }
        Action::Observe { reason, .. } | Action::Reject { reason } => {
            required(&mut v, "reason", reason)
        }
        Action::Forward { destination, .. } => {
            if destination == desk.institution() {
                v.push(Violation::new("destination", "is this institution"));
            } else if desk.trust.directory().get(destination).is_none() {
                v.push(Violation::new(
                    "destination",
                    format!("{destination:?} is not an institution of the sector directory"),
                ));
            }
        }
        Action::Answer { documents, .. } if documents.is_empty() => v.push(Violation::new(
            "documents",
            "an answer carries at least one document",
        )),
        Action::Answer { .. } | Action::Archive { .. } => {}
    }
    if let Action::Forward { note, .. } | Action::Answer { note, .. } | Action::Archive { note } =
        action
        && note.chars().count() > MAX_NOTE_CHARS
    {
        v.push(Violation::new(
            "note",
            format!("must be at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(v))
    }
}

/// Performs `action` on the filing `tracking_code` holds here.
pub async fn act(
    desk: &Desk,
    tracking_code: String,
    action_id: String,
    action: Action,
    actor: &Actor,
) -> Result<Filing> {
    let what = format!("{} filing", action.name());
    let target = tracking_code.trim().to_uppercase();
    let result = act_unaudited(desk, tracking_code, action_id, action, actor).await;
    desk.store.audit(actor, &what, &target, &result).await;
    result
}

async fn act_unaudited(
    desk: &Desk,
    tracking_code: String,
    action_id: String,
    action: Action,
    actor: &Actor,
) -> Result<Filing> {
    check_fields(desk, &tracking_code, &action_id, &action)?;
    let code = tracking_code.trim().to_uppercase();
    let desk2 = desk.clone();
    let actor = actor.clone();
    let response = desk
        .store
        .run(move |s| {
            // Answer documents' files are moved into the store first, small
            // ones kept in the action's own transaction.
            let (action, docs, kept) = match action {
                Action::Answer { note, documents } => {
                    let (rows, kept) = ToKeep::store(&desk2.blobs, documents)?;
                    (
                        Action::Answer {
                            note,
                            documents: Vec::new(),
                        },
                        rows,
                        kept,
                    )
                }
                other => (other, Vec::new(), ToKeep::default()),
            };
            s.perform_action(&format!("{}/{action_id}", action.name()), |tx| {
                kept.keep(tx)?;
                let filing = apply(&desk2, s, tx, &code, &action, docs, &actor)?;
                Ok(filing.to_proto().encode_to_vec())
            })
        })
        .await?;
    desk.relay_wake.notify_one();
    Filing::decode(response.as_slice()).map_err(|e| Error::Io {
        context: "a stored action answer is unreadable".into(),
        source: std::io::Error::other(e),
    })
}

fn apply(
    desk: &Desk,
    s: &store::Store,
    tx: &Connection,
    code: &str,
    action: &Action,
    answer_documents: Vec<DocumentRow>,
    actor: &Actor,
) -> Result<FilingRow> {
    let me = desk.institution();
    let filing = store::held_filing(tx, code)?
        .ok_or_else(|| Error::NotFound(format!("filing {code} at {me}")))?;
    if !action.allowed_from().contains(&filing.status) {
        let allowed: Vec<&str> = action
            .allowed_from()
            .iter()
            .map(|s| status_name(*s))
            .collect();
        return Err(Error::FailedPrecondition(format!(
            "filing {code} is {}; {} needs it to be {}",
            status_name(filing.status),
            action.name(),
            allowed.join(" or ")
        )));
    }
    let result = action.result();
    let (note, holder, counterpart): (&str, String, String) = match action {
        Action::Receive { .. } => ("", me.to_owned(), String::new()),
        Action::Observe { reason, .. } => (reason, filing.origin.clone(), filing.origin.clone()),
        Action::Reject { reason } => (reason, me.to_owned(), filing.origin.clone()),
        Action::Forward { destination, note } => (note, destination.clone(), destination.clone()),
        Action::Answer { note, .. } => (note, filing.filed_at.clone(), filing.filed_at.clone()),
        Action::Archive { note } => (note, me.to_owned(), String::new()),
    };
    store::set_status(tx, filing.id, result, note)?;
    if let Action::Receive {
        registry_number,
        office,
        ..
    } = action
    {
        store::set_received(tx, filing.id, registry_number.trim(), office.trim())?;
    }
    let cargo = sgd_cargo(desk, &filing, action, actor);
    if let Some(cargo) = &cargo {
        store::sgd::store_cargo(tx, &filing.transfer_id, cargo)?;
    }
    let seq = s.emit(
        tx,
        Step {
            tracking_code: code,
            key: format!("{}/{}", filing.transfer_id, status_name(result)),
            status: result,
            hop: filing.hop,
            actor_role: actor.role.name(),
            actor: &actor.name,
            holder: &holder,
            verifier: Vec::new(),
            due_date: "",
            kind: filing.kind,
            counterpart: &counterpart,
            after_seq: 0,
            cuo: "",
        },
    )?;
    match action {
        Action::Observe { reason, .. } | Action::Reject { reason } => {
            tell_origin(desk, tx, &filing, (result, reason.trim()), seq, cargo)?;
        }
        Action::Receive { .. } if cargo.is_some() => {
            tell_origin(desk, tx, &filing, (result, ""), seq, cargo)?;
        }
        Action::Forward { destination, note } => {
            let next = follow_up(
                s,
                tx,
                &filing,
                desk.config.kafka.max_record_bytes,
                TransferKind::Forward,
                destination,
                note,
                filing.documents.clone(),
            )?;
            s.insert_outbound(tx, &next, actor, Vec::new())?;
        }
        Action::Answer { note, .. } => {
            let next = follow_up(
                s,
                tx,
                &filing,
                desk.config.kafka.max_record_bytes,
                TransferKind::Answer,
                &filing.filed_at,
                note,
                answer_documents,
            )?;
            if filing.filed_at == me {
                // Answered where it was filed: nothing travels.
                let here = NewFiling {
                    direction: Direction::Inbound,
                    status: FilingStatus::Delivered,
                    ..next
                };
                store::insert_filing(tx, me, s.utc_offset_minutes(), &here)?;
            } else {
                s.insert_outbound(tx, &next, actor, Vec::new())?;
            }
        }
        Action::Receive { .. } | Action::Archive { .. } => {}
    }
    Ok(store::query_filings(tx, "id = ?1", [filing.id])?
        .into_iter()
        .next()
        .expect("the filing was just read"))
}

/// Tells the filing's origin what this institution did with it (a notice,
/// encrypted for it: the reason and the cargo may name people).
fn tell_origin(
    desk: &Desk,
    tx: &Connection,
    filing: &FilingRow,
    (status, reason): (FilingStatus, &str),
    seq: u64,
    cargo: Option<SgdCargo>,
) -> Result<()> {
    let notice = Notice {
        transfer_id: filing.transfer_id.clone(),
        tracking_code: filing.tracking_code.clone(),
        status: status as i32,
        reason: reason.to_owned(),
        tracking_seq: seq,
        at_ms: ecointegra_broker::now_ms(),
        cargo,
    };
    let key = desk
        .trust
        .directory()
        .get(&filing.origin)
        .map(|i| i.encryption_key)
        .ok_or_else(|| {
            Error::FailedPrecondition(format!("{} is not in the directory", filing.origin))
        })?;
    let sealed = desk
        .trust
        .sealer
        .seal_encrypted(
            format!("{}/notice/{}", filing.transfer_id, status_name(status)),
            MessageType::Notice,
            &filing.origin,
            &key,
            &notice.encode_to_vec(),
        )
        .map_err(|e| Error::FailedPrecondition(format!("cannot encrypt the notice: {e}")))?;
    store::queue_envelope(
        tx,
        &desk.kafka.topics.inbox(&filing.origin),
        &filing.origin,
        &filing.transfer_id,
        &sealed.encode_to_vec(),
    )
}

/// The cargo a receive or an observation gives a filing whose origin's SGD
/// awaits one (it came over PIDE): the SGD's own when it acted, otherwise
/// made from what the clerk entered.
fn sgd_cargo(desk: &Desk, filing: &FilingRow, action: &Action, actor: &Actor) -> Option<SgdCargo> {
    filing.sgd.as_ref().filter(|s| !s.issued_at_destination)?;
    let offset = desk.config.deadlines.utc_offset_minutes;
    let now = ecointegra_broker::now_ms();
    let made = |flag: &str, registry_number: &str, unit: &str, observation: &str| SgdCargo {
        flag: flag.to_owned(),
        registry_number: registry_number.to_owned(),
        registry_year: crate::ids::year_of(now, offset).to_string(),
        registered_at: crate::ids::format_local(now, offset),
        unit: unit.to_owned(),
        user: actor.name.clone(),
        observation: observation.to_owned(),
        annexes_received: String::new(),
        pdf: Vec::new(),
    };
    match action {
        Action::Receive { cargo: Some(c), .. } | Action::Observe { cargo: Some(c), .. } => {
            Some(c.clone())
        }
        Action::Receive {
            registry_number,
            office,
            ..
        } => Some(made("R", registry_number.trim(), office.trim(), "")),
        Action::Observe { reason, .. } => Some(made(
            "O",
            &filing.internal_registry_number,
            &filing.office,
            reason.trim(),
        )),
        _ => None,
    }
}

/// A new transfer of a filing this node holds: a forward or an answer.
#[allow(clippy::too_many_arguments)]
fn follow_up(
    s: &store::Store,
    tx: &Connection,
    filing: &FilingRow,
    max_record_bytes: u32,
    kind: TransferKind,
    destination: &str,
    note: &str,
    documents: Vec<DocumentRow>,
) -> Result<NewFiling> {
    let chain = s.receipt_chain_in(tx, &filing.tracking_code)?;
    let (hop, previous) = crate::lifecycle::custody::next_link(&chain);
    if hop > MAX_HOPS {
        return Err(Error::FailedPrecondition(format!(
            "filing {} has travelled {MAX_HOPS} times already; it cannot travel again",
            filing.tracking_code
        )));
    }
    let prior_receipt_bytes = chain
        .iter()
        .filter(|r| r.hop < hop)
        .map(|r| r.envelope.len())
        .sum();
    let now = ecointegra_broker::now_ms();
    let next = NewFiling {
        tracking_code: filing.tracking_code.clone(),
        verification_code: String::new(),
        transfer_id: crate::ids::bound_transfer_id(s.institution(), &filing.tracking_code),
        direction: Direction::Outbound,
        status: FilingStatus::Registered,
        origin: s.institution().to_owned(),
        destination: destination.to_owned(),
        subject: filing.subject.clone(),
        sender_party: filing.sender_party.clone(),
        folio_count: filing.folio_count,
        registered_at_ms: now,
        delivered_at_ms: 0,
        origin_registry_number: String::new(),
        documents,
        kind,
        related_transfer_id: filing.transfer_id.clone(),
        note: note.trim().to_owned(),
        hop,
        filing_type: filing.filing_type.clone(),
        due_date: String::new(),
        filed_at: filing.filed_at.clone(),
        previous_receipt_sha256: previous,
        sgd: None,
    };
    validate::manifest_fits(&next, prior_receipt_bytes, max_record_bytes)
        .map_err(|v| Error::InvalidArgument(vec![v]))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use FilingStatus::*;

    fn every_action() -> Vec<Action> {
        let text = || String::from("x");
        vec![
            Action::Receive {
                registry_number: text(),
                office: text(),
                cargo: None,
            },
            Action::Observe {
                reason: text(),
                cargo: None,
            },
            Action::Reject { reason: text() },
            Action::Forward {
                destination: text(),
                note: text(),
            },
            Action::Answer {
                note: text(),
                documents: Vec::new(),
            },
            Action::Archive { note: text() },
        ]
    }

    /// The state machine a clerk works in: which action may follow which
    /// status, and where each leads. A filing is taken in before it is
    /// forwarded or answered, archived only once dealt with, and nothing
    /// follows an archive.
    #[test]
    fn the_state_machine() {
        let reachable = |from: FilingStatus| -> Vec<&'static str> {
            every_action()
                .iter()
                .filter(|a| a.allowed_from().contains(&from))
                .map(Action::name)
                .collect()
        };
        assert_eq!(reachable(Registered), Vec::<&str>::new());
        assert_eq!(reachable(Sent), Vec::<&str>::new());
        assert_eq!(reachable(Delivered), ["receive", "observe", "reject"]);
        assert_eq!(
            reachable(Received),
            ["observe", "reject", "forward", "answer", "archive"]
        );
        for done in [Observed, Rejected, Forwarded, Answered] {
            assert_eq!(reachable(done), ["archive"], "{done:?}");
        }
        assert_eq!(reachable(Archived), Vec::<&str>::new());
        let results: Vec<FilingStatus> = every_action().iter().map(Action::result).collect();
        assert_eq!(
            results,
            [Received, Observed, Rejected, Forwarded, Answered, Archived]
        );
        // No action leads back to where it may start from.
        for action in every_action() {
            assert!(
                !action.allowed_from().contains(&action.result()),
                "{}",
                action.name()
            );
        }
    }
}
