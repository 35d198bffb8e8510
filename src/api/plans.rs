//! `tenantd.v1.PlanService`: the control plane's plans.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::{json_to_value, required, timestamp, update_mask, value_to_json};
use crate::domain::plans::{
    LimitName, LimitSet, Limits, NewPlan, Plan, PlanPatch, Plans, Quotas, RateLimit, UPDATABLE_FIELDS, check_limits,
    check_plan_limits, check_settings, parse_name,
};
use crate::domain::{page, parse_display_name, parse_etag};
use crate::error::{Reason, Result, Violations};
use crate::proto::plan_service_server::PlanService;
use crate::proto::{self};
use crate::tenancy::RequestContext;

/// The plans adapter.
pub struct PlanApi {
    plans: Plans,
}

impl PlanApi {
    /// Serves `plans`.
    pub fn new(plans: Plans) -> Self {
        Self { plans }
    }
}

/// Limits from their message (`None`: none set), validated.
pub(super) fn limits_from_proto(field: &str, limits: Option<proto::PlanLimits>) -> Result<Limits> {
    let Some(limits) = limits else {
        return Ok(Limits::default());
    };
    let rate = |rate: Option<proto::RequestRate>| {
        rate.map(|rate| RateLimit { per_second: rate.per_second, burst: rate.burst })
    };
    let mut checks = Violations::new();
    let mut unlimited = LimitSet::default();
    for (index, name) in limits.unlimited.iter().enumerate() {
        match LimitName::parse(name) {
            Some(name) => unlimited = unlimited.with(name),
            None => checks.add(Reason::LimitsInvalid, format!("{field}.unlimited[{index}]"), "not a limit's name"),
        }
    }
    checks.finish(|| Some(()))?;
    let limits = Limits {
        tenant_rate: rate(limits.tenant_rate),
        api_key_rate: rate(limits.api_key_rate),
        quotas: Quotas {
            users: limits.max_users,
            documents: limits.max_documents,
            document_bytes: limits.max_document_bytes,
            api_keys: limits.max_api_keys,
        },
        unlimited,
    };
    check_limits(field, &limits)?;
    Ok(limits)
}

/// A plan's limits from their message, validated (nothing may be lifted in a plan).
fn plan_limits_from_proto(field: &str, limits: Option<proto::PlanLimits>) -> Result<Limits> {
    let limits = limits_from_proto(field, limits)?;
    check_plan_limits(field, &limits)?;
    Ok(limits)
}

/// The message of limits.
pub(super) fn limits_to_proto(limits: Limits) -> proto::PlanLimits {
    let rate = |rate: Option<RateLimit>| {
        rate.map(|rate| proto::RequestRate { per_second: rate.per_second, burst: rate.burst })
    };
    proto::PlanLimits {
        tenant_rate: rate(limits.tenant_rate),
        api_key_rate: rate(limits.api_key_rate),
        max_users: limits.quotas.users,
        max_documents: limits.quotas.documents,
        max_document_bytes: limits.quotas.document_bytes,
        max_api_keys: limits.quotas.api_keys,
        unlimited: limits.unlimited.names().map(|name| name.as_str().to_owned()).collect(),
    }
}

fn settings_from_proto(
    field: &str,
    settings: BTreeMap<String, prost_types::Value>,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut checks = Violations::new();
    let converted: BTreeMap<String, serde_json::Value> = settings
        .into_iter()
        .filter_map(|(key, value)| {
            let value = checks.check(value_to_json(Reason::FieldMalformed, &format!("{field}[{key:?}]"), value))?;
            Some((key, value))
        })
        .collect();
    checks.finish(|| Some(()))?;
    check_settings(field, &converted)?;
    Ok(converted)
}

fn to_proto(plan: Plan) -> proto::Plan {
    proto::Plan {
        id: plan.id.to_string(),
        name: plan.name,
        display_name: plan.display_name,
        limits: Some(limits_to_proto(plan.limits)),
        settings: plan.settings.into_iter().map(|(key, value)| (key, json_to_value(value))).collect(),
        create_time: Some(timestamp(plan.create_time)),
        created_by: plan.created_by,
        update_time: Some(timestamp(plan.update_time)),
        updated_by: plan.updated_by,
        etag: plan.etag,
    }
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    async fn create_plan(&self, request: Request<proto::CreatePlanRequest>) -> Result<Response<proto::Plan>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let plan = required("plan", request.plan)?;
        let mut checks = Violations::new();
        let name = checks.check(parse_name("plan.name", &plan.name));
        let display_name = checks.check(parse_display_name("plan.display_name", &plan.display_name, true));
        let limits = checks.check(plan_limits_from_proto("plan.limits", plan.limits));
        let settings = checks.check(settings_from_proto("plan.settings", plan.settings));
        let new = checks.finish(|| {
            Some(NewPlan { name: name?, display_name: display_name?, limits: limits?, settings: settings? })
        })?;
        Ok(Response::new(to_proto(self.plans.create(context, new, &request.request_id).await?)))
    }

    async fn get_plan(&self, request: Request<proto::GetPlanRequest>) -> Result<Response<proto::Plan>, Status> {
        let name = parse_name("name", &request.into_inner().name)?;
        Ok(Response::new(to_proto(self.plans.get(&name).await?)))
    }

    async fn list_plans(
        &self,
        request: Request<proto::ListPlansRequest>,
    ) -> Result<Response<proto::ListPlansResponse>, Status> {
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let page = self.plans.list(page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListPlansResponse {
            plans: page.plans.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_plan(&self, request: Request<proto::UpdatePlanRequest>) -> Result<Response<proto::Plan>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let mask = update_mask(request.update_mask, UPDATABLE_FIELDS)?;
        let plan = required("plan", request.plan)?;
        let mut checks = Violations::new();
        let name = checks.check(parse_name("plan.name", &plan.name));
        let expected_revision = checks.check(parse_etag(&plan.etag));
        let mut patch = PlanPatch::default();
        if mask.contains("display_name") {
            patch.display_name = checks.check(parse_display_name("plan.display_name", &plan.display_name, true));
        }
        if mask.contains("limits") {
            patch.limits = checks.check(plan_limits_from_proto("plan.limits", plan.limits));
        }
        if mask.contains("settings") {
            patch.settings = checks.check(settings_from_proto("plan.settings", plan.settings));
        }
        let (name, expected_revision) = checks.finish(|| Some((name?, expected_revision?)))?;
        Ok(Response::new(to_proto(self.plans.update(context, &name, expected_revision, patch).await?)))
    }
}
