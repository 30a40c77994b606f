//! `TrackingService`: a citizen's look-up of a filing's timeline.

use ecointegra_proto::v1::tracking_service_server::TrackingService;
use ecointegra_proto::v1::{TrackRequest, TrackResponse};
use tonic::{Request, Response, Status};

pub struct TrackingApi {
    pub desk: crate::lifecycle::Desk,
}

#[tonic::async_trait]
impl TrackingService for TrackingApi {
    async fn track(
        &self,
        request: Request<TrackRequest>,
    ) -> Result<Response<TrackResponse>, Status> {
        let client = request.remote_addr().map(|a| a.ip());
        Ok(Response::new(
            crate::lifecycle::tracking::track(&self.desk, client, request.into_inner()).await?,
        ))
    }
}
