//! `tenantd.v1.SettingService`: the settings of the context's tenant, through the kit.

use tonic::{Request, Response, Status};

use super::resource::{self, Fields, identified};
use super::{json_to_value, required, timestamp, value_to_json};
use crate::domain::settings::{Setting, SettingPatch, Settings, Source, effective, parse_key, parse_value};
use crate::domain::{UpdateMask, etag, parse_text};
use crate::error::{Reason, Violations};
use crate::proto::effective_setting::Source as ProtoSource;
use crate::proto::setting_service_server::SettingService;
use crate::proto::{self, ListSettingsResponse, Setting as Message};
use crate::tenancy::{TenantContext, TenantDb};

identified!(Message);

/// The data-plane adapter for settings: the kit's resource, and the database the
/// effective read (plan defaults beneath the tenant's settings) goes through.
pub struct SettingApi(pub Settings, pub TenantDb);

const FIELDS: Fields<Message, SettingPatch> =
    Fields { name: "setting", updatable: SettingPatch::UPDATABLE_FIELDS, patch };

fn patch(message: Message, mask: &UpdateMask, checks: &mut Violations) -> SettingPatch {
    let value = |value| parse_value("setting.value", value_to_json(Reason::FieldMalformed, "setting.value", value)?);
    SettingPatch {
        key: mask.check("key", checks, || parse_key("setting.key", &message.key)),
        value: mask.check("value", checks, || value(required("setting.value", message.value)?)),
        description: mask.check("description", checks, || parse_text("setting.description", &message.description, 500)),
    }
}

fn to_proto(setting: Setting) -> Message {
    Message {
        id: setting.id.to_string(),
        key: setting.key,
        value: Some(json_to_value(setting.value)),
        description: setting.description,
        create_time: Some(timestamp(setting.create_time)),
        update_time: Some(timestamp(setting.update_time)),
        etag: etag(setting.revision),
    }
}

#[tonic::async_trait]
impl SettingService for SettingApi {
    async fn create_setting(&self, request: Request<proto::CreateSettingRequest>) -> Result<Response<Message>, Status> {
        resource::create(&self.0, request, FIELDS, |request| (request.setting, request.request_id), to_proto).await
    }

    async fn get_setting(&self, request: Request<proto::GetSettingRequest>) -> Result<Response<Message>, Status> {
        resource::get(&self.0, request, |request| request.id, to_proto).await
    }

    async fn list_settings(
        &self,
        request: Request<proto::ListSettingsRequest>,
    ) -> Result<Response<ListSettingsResponse>, Status> {
        resource::list(
            &self.0,
            request,
            |request| (request.page_size, request.page_token),
            |items, next_page_token| ListSettingsResponse {
                settings: items.into_iter().map(to_proto).collect(),
                next_page_token,
            },
        )
        .await
    }

    async fn update_setting(&self, request: Request<proto::UpdateSettingRequest>) -> Result<Response<Message>, Status> {
        resource::update(&self.0, request, FIELDS, |request| (request.setting, request.update_mask), to_proto).await
    }

    async fn delete_setting(&self, request: Request<proto::DeleteSettingRequest>) -> Result<Response<()>, Status> {
        resource::delete(&self.0, request, |request| (request.id, request.etag)).await
    }

    async fn get_effective_settings(
        &self,
        request: Request<proto::GetEffectiveSettingsRequest>,
    ) -> Result<Response<proto::EffectiveSettings>, Status> {
        let context = TenantContext::from_request(&request)?;
        let effective = effective(&self.1, &context).await?;
        let settings = effective
            .settings
            .into_iter()
            .map(|(key, value, source)| proto::EffectiveSetting {
                key,
                value: Some(json_to_value(value)),
                source: match source {
                    Source::PlanDefault => ProtoSource::PlanDefault,
                    Source::TenantOverride => ProtoSource::TenantOverride,
                } as i32,
            })
            .collect();
        Ok(Response::new(proto::EffectiveSettings { plan: effective.plan.unwrap_or_default(), settings }))
    }
}
