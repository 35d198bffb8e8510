//! Tracing set-up: text or JSON lines on stdout, filtered by `RUST_LOG` (default `info`);
//! the RPC span's fields; OpenTelemetry traces over OTLP ([`traces`]).

pub mod traces;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// The span of one RPC, made by the server for every request (health and reflection too).
/// It declares every field the gateway records later ([`record_request_id`],
/// [`record_tenant_id`], [`record_trace_id`]): tracing drops a value recorded into a field the span did not
/// declare, so a field recorded anywhere must be declared here.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc.method = %request.uri().path(),
        request.id = tracing::field::Empty,
        tenant.id = tracing::field::Empty,
        trace.id = tracing::field::Empty,
    )
}

/// Records the request id into the current RPC's span, so every line logged for the
/// request carries `request.id`, the `request_id` of its audit events; and into the RPC's
/// OpenTelemetry span, if it is traced.
pub fn record_request_id(request_id: &str) {
    tracing::Span::current().record("request.id", request_id);
    traces::set_rpc_attribute("request.id", || request_id.to_owned());
}

/// Records the tenant a request acts for into the current RPC's span (and OpenTelemetry span).
pub fn record_tenant_id(tenant_id: uuid::Uuid) {
    tracing::Span::current().record("tenant.id", tracing::field::display(tenant_id));
    traces::set_rpc_attribute("tenant.id", || tenant_id.to_string());
}

/// Records the OpenTelemetry trace id of a traced RPC into its span, so every line logged
/// for the request carries `trace.id`.
pub fn record_trace_id(trace_id: &str) {
    tracing::Span::current().record("trace.id", trace_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rpc_span_declares_every_field_the_gateway_records() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let request = http::Request::builder().uri("/tenantd.v1.UserService/GetUser").body(()).expect("request");
            let span = rpc_span(&request);
            for field in ["rpc.method", "request.id", "tenant.id", "trace.id"] {
                assert!(span.has_field(field), "the rpc span lacks {field}");
            }
            // Control: a field it does not declare is not there (and a record would be dropped).
            assert!(!span.has_field("request_id"));
        });
    }
}
