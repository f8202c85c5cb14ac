//! `GET /api/openapi.json`: the OpenAPI document, derived by `utoipa` from the
//! handlers' `#[utoipa::path]` annotations and the request types, so it cannot drift
//! from the routes.

use super::handlers as h;
use super::sse;
use utoipa::OpenApi;

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Worknode HTTP API", description = "`wn serve`: the board of a Worknode segment over HTTP. JSON in the shapes of `wn --json`; errors as `{\"error\": {code, message, hint, exit}}` with the CLI's codes."),
    paths(
        h::list_tasks, h::create_task, h::get_task, h::update_task, h::delete_task,
        h::claim_task, h::claim_next, h::complete, h::fail, h::progress,
        h::list_agents, h::agent_tasks, h::query,
        h::list_documents, h::put_document, h::get_document,
        h::send, h::inbox, h::ack,
        h::analytics_progress, h::analytics_pipeline,
        h::post_event, sse::get_events, h::metrics,
    ),
    components(schemas(h::ErrorBody, h::ErrorObject)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme (`Authorization: Bearer TOKEN`).
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        api.components.get_or_insert_with(Default::default).add_security_scheme("token", scheme);
    }
}

/// The document as JSON.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
