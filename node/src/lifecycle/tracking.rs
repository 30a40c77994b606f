//! Tracking without a central database.
//!
//! Every status change is a signed [`TrackingEvent`] on `<prefix>.tracking`.
//! Every node consumes the whole topic into its own store, so any
//! institution's node answers `Track` with the full timeline across every
//! institution the filing passed through. A wrong verification code gets the
//! same NOT_FOUND as an unknown code, and failed look-ups are rate-limited per
//! client.

use crate::error::{Error, Result};
use crate::lifecycle::Desk;
use ecointegra_broker::envelope::{self, Rejection};
use ecointegra_proto::v1::{
    Envelope, FilingStatus, MessageType, TimelineEntry, TrackRequest, TrackResponse, TrackingEvent,
};
use std::net::IpAddr;

pub use crate::ids::BROADCAST;

/// The event an envelope of the tracking topic carries (the envelope already
/// verified as one for [`BROADCAST`]), if its sender may have sent it.
pub fn event_of(envelope: &Envelope) -> Result<TrackingEvent, Rejection> {
    if MessageType::try_from(envelope.message_type) != Ok(MessageType::TrackingEvent) {
        return Err(Rejection::new(
            "type",
            format!(
                "message type {} does not belong on the tracking topic",
                envelope.message_type
            ),
        )
        .about(envelope));
    }
    let event: TrackingEvent = envelope::payload(envelope)?;
    if event.institution != envelope.sender
        || !event.event_id.starts_with(&format!("{}/", envelope.sender))
    {
        return Err(Rejection::new(
            "tracking",
            format!(
                "{} signed an event that claims to come from {}",
                envelope.sender, event.institution
            ),
        )
        .about(envelope));
    }
    Ok(event)
}

/// Failed look-ups per client within the current minute.
pub use crate::clients::Limiter;

/// Looks a filing up for a citizen. `client` is who asks, for rate limiting.
pub async fn track(
    desk: &Desk,
    client: Option<IpAddr>,
    request: TrackRequest,
) -> Result<TrackResponse> {
    let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let limit = desk.config.tracking.max_failures_per_minute;
    if desk.limiter.blocked(client, limit) {
        return Err(Error::ResourceExhausted(
            "too many failed look-ups from this client; try again in a minute".into(),
        ));
    }
    let code = request.tracking_code.trim().to_uppercase();
    let lookup = code.clone();
    let (timeline, answer) = desk
        .store
        .run(move |s| Ok((s.timeline(&lookup)?, s.answer_for(&lookup)?)))
        .await?;
    let timeline = on_chain(&code, timeline);
    let expected = timeline
        .iter()
        .find(|e| is_registration(&code, e) && !e.verifier.is_empty())
        .map(|e| e.verifier.clone());
    // One Argon2id evaluation whether or not the filing exists, so both
    // answers cost the same.
    let (filing, typed) = (code.clone(), request.verification_code);
    let matches = crate::verification::off_runtime(move || {
        crate::verification::verifies(expected.as_deref(), &filing, &typed)
    })
    .await;
    if !matches {
        desk.limiter.fail(client);
        return Err(Error::NotFound(
            "a filing with that tracking code and verification code".into(),
        ));
    }
    let last = timeline.last().cloned().unwrap_or_default();
    let due_date = timeline
        .iter()
        .rev()
        .find(|e| !e.due_date.is_empty())
        .map(|e| e.due_date.clone())
        .unwrap_or_default();
    Ok(TrackResponse {
        tracking_code: code,
        status: last.status,
        current_holder: last.holder.clone(),
        due_date,
        // Who acted at an institution is for its own people, not citizens.
        timeline: timeline
            .iter()
            .map(|e| TimelineEntry {
                actor: String::new(),
                ..entry(e)
            })
            .collect(),
        answer_documents: answer
            .map(|a| {
                a.documents
                    .iter()
                    .map(crate::store::DocumentRow::to_proto)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Is `event` the registration of `tracking_code` by the institution the
/// code belongs to: the one event whose verifier counts?
pub fn is_registration(tracking_code: &str, event: &TrackingEvent) -> bool {
    event.status == FilingStatus::Registered as i32
        && crate::lifecycle::custody::owner_of(tracking_code).as_deref()
            == Some(event.institution.as_str())
}

/// The events of a filing's timeline that come from its custody chain: the
/// institution its code belongs to, and every institution an event of the
/// chain named as holder or counterpart (the filing was sent to it). Events
/// of anyone else, whatever they claim, are kept but not shown: an
/// institution with no part in a filing cannot change what a citizen sees of
/// it. Computed on reading, so the order in which the events arrived does
/// not matter.
pub fn on_chain(tracking_code: &str, events: Vec<TrackingEvent>) -> Vec<TrackingEvent> {
    let Some(owner) = crate::lifecycle::custody::owner_of(tracking_code) else {
        return Vec::new();
    };
    let mut chain = std::collections::BTreeSet::from([owner]);
    loop {
        let before = chain.len();
        let named: Vec<String> = events
            .iter()
            .filter(|e| chain.contains(&e.institution))
            .flat_map(|e| [e.holder.clone(), e.counterpart.clone()])
            .filter(|n| !n.is_empty())
            .collect();
        chain.extend(named);
        if chain.len() == before {
            break;
        }
    }
    events
        .into_iter()
        .filter(|e| chain.contains(&e.institution))
        .collect()
}

pub(crate) fn entry(event: &TrackingEvent) -> TimelineEntry {
    TimelineEntry {
        institution: event.institution.clone(),
        status: event.status,
        timestamp_ms: event.timestamp_ms,
        hop: event.hop,
        actor_role: event.actor_role.clone(),
        holder: event.holder.clone(),
        due_date: event.due_date.clone(),
        transfer_kind: event.transfer_kind,
        counterpart: event.counterpart.clone(),
        actor: event.actor.clone(),
        cuo: event.cuo.clone(),
    }
}

/// Status names for people, in Spanish, as the timeline prints them.
pub fn status_label(status: i32) -> &'static str {
    match FilingStatus::try_from(status) {
        Ok(FilingStatus::Registered) => "registrado",
        Ok(FilingStatus::Sent) => "enviado",
        Ok(FilingStatus::Delivered) => "entregado",
        Ok(FilingStatus::Received) => "recibido",
        Ok(FilingStatus::Observed) => "observado",
        Ok(FilingStatus::Rejected) => "rechazado",
        Ok(FilingStatus::Forwarded) => "derivado",
        Ok(FilingStatus::Answered) => "atendido",
        Ok(FilingStatus::Archived) => "archivado",
        _ => "desconocido",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "SENAMHI-2026-0123ABCD";

    fn event(institution: &str, status: FilingStatus, counterpart: &str) -> TrackingEvent {
        TrackingEvent {
            tracking_code: CODE.into(),
            institution: institution.into(),
            status: status as i32,
            holder: institution.into(),
            counterpart: counterpart.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_custody_chain_shapes_the_timeline_whatever_the_order() {
        let hostile = event("iiap", FilingStatus::Archived, "");
        let delivered = event("oefa", FilingStatus::Delivered, "senamhi");
        let forwarded = event("oefa", FilingStatus::Forwarded, "minam");
        let at_minam = event("minam", FilingStatus::Delivered, "oefa");
        let registered = event("senamhi", FilingStatus::Registered, "oefa");
        // Arrived out of order: minam's and oefa's steps before senamhi's.
        let shown = on_chain(
            CODE,
            vec![
                at_minam.clone(),
                hostile,
                delivered.clone(),
                registered.clone(),
                forwarded.clone(),
            ],
        );
        assert_eq!(shown, vec![at_minam, delivered, registered, forwarded]);
    }

    #[test]
    fn only_the_owners_registration_carries_the_verifier() {
        assert!(is_registration(
            CODE,
            &event("senamhi", FilingStatus::Registered, "")
        ));
        assert!(!is_registration(
            CODE,
            &event("oefa", FilingStatus::Registered, "")
        ));
        assert!(!is_registration(
            CODE,
            &event("senamhi", FilingStatus::Sent, "")
        ));
    }
}
