//! `OperationsService`: are documents flowing, and what to do when they are
//! not. The queue report ([`crate::telemetry::queues`]), and dead-letter
//! handling (list, inspect, replay, discard).

use super::Services;
use crate::error::{Error, Result};
use ecointegra_proto::v1::operations_service_server::{OperationsService, OperationsServiceServer};
use ecointegra_proto::v1::{
    DeadLetterDetail, DeadLetterEntry, DiscardDeadLetterRequest, GetDeadLetterRequest,
    GetQueuesRequest, GetQueuesResponse, ListAuditLogRequest, ListAuditLogResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, ReplayDeadLettersRequest,
    ReplayDeadLettersResponse, ResendTransferRequest, ResendTransferResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub fn server(services: Arc<Services>) -> OperationsServiceServer<OperationsApi> {
    OperationsServiceServer::new(OperationsApi { services })
}

pub struct OperationsApi {
    services: Arc<Services>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::task("an operations task failed"))?
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn get_queues(
        &self,
        _: Request<GetQueuesRequest>,
    ) -> Result<Response<GetQueuesResponse>, Status> {
        let watch = self.services.watch.clone();
        Ok(Response::new(
            blocking(move || crate::telemetry::queues::queues(&watch)).await?,
        ))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000),
        };
        let dead_letters = self
            .services
            .watch
            .store
            .run(move |s| s.dead_letters(request.include_closed, limit))
            .await?;
        Ok(Response::new(ListDeadLettersResponse { dead_letters }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetterDetail>, Status> {
        let id = request.into_inner().id;
        let detail = self
            .services
            .watch
            .store
            .run(move |s| s.dead_letter_detail(id))
            .await?;
        Ok(Response::new(detail))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let request = request.into_inner();
        let ids = match (request.all_open, request.ids.is_empty()) {
            (true, true) => {
                self.services
                    .watch
                    .store
                    .run(|s| s.open_dead_letter_ids())
                    .await?
            }
            (false, false) => request.ids,
            (true, false) => {
                return Err(Error::invalid("ids", "must be empty when all_open is set").into());
            }
            (false, true) => {
                return Err(Error::invalid(
                    "ids",
                    "name at least one dead letter, or set all_open",
                )
                .into());
            }
        };
        let mut outcomes = Vec::with_capacity(ids.len());
        // In order, each acknowledged before the next: chunks stay before
        // their manifest.
        for id in ids {
            outcomes.push(
                crate::consume::dead_letters::replay_for(&self.services.consumers, &actor, id)
                    .await?,
            );
        }
        Ok(Response::new(ReplayDeadLettersResponse { outcomes }))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<DiscardDeadLetterRequest>,
    ) -> Result<Response<DeadLetterEntry>, Status> {
        // Who: the caller as authenticated; `by` is only a note.
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        let (entry, changed) = crate::consume::dead_letters::discard_for(
            &self.services.watch.store,
            &actor,
            r.id,
            &r.by,
            &r.reason,
        )
        .await?;
        if changed {
            self.services.watch.metrics.dead_letter_discarded();
            tracing::info!(
                dead_letter = entry.id,
                by = %entry.discarded_by,
                reason = %entry.discard_reason,
                "Dead letter discarded."
            );
        }
        Ok(Response::new(entry))
    }

    async fn resend_transfer(
        &self,
        request: Request<ResendTransferRequest>,
    ) -> Result<Response<ResendTransferResponse>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let transfer_id = request.into_inner().transfer_id;
        let target = transfer_id.clone();
        let resent = if crate::ids::is_transfer_id(&transfer_id) {
            self.services
                .watch
                .store
                .run(move |s| s.resend_transfer(&transfer_id))
                .await
        } else {
            Err(Error::invalid("transfer_id", "is not a transfer id"))
        };
        let store = &self.services.watch.store;
        store
            .audit(&actor, "resend transfer", &target, &resent)
            .await;
        let (tracking_code, destination) = resent?;
        self.services.desk.relay_wake.notify_one();
        tracing::info!(%tracking_code, %destination, "Transfer re-sent by an operator.");
        Ok(Response::new(ResendTransferResponse {
            tracking_code,
            destination,
        }))
    }

    async fn list_audit_log(
        &self,
        request: Request<ListAuditLogRequest>,
    ) -> Result<Response<ListAuditLogResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 1000,
            n => n.min(10_000),
        };
        let entries = self
            .services
            .watch
            .store
            .run(move |s| s.audit_log(r.since_ms, r.after_id, limit))
            .await?;
        Ok(Response::new(ListAuditLogResponse {
            entries: entries.iter().map(crate::audit::Entry::to_proto).collect(),
        }))
    }
}
