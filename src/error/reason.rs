//! The closed set of error reasons: each with its gRPC code and its message for people.
//!
//! This table is the one place where a code is decided. The README's error table is
//! checked against it by `tests/api/docs.rs`, and every reason's text is the
//! `google.rpc.ErrorInfo.reason` clients branch on, so a reason is never renamed.

use tonic::Code;

macro_rules! reasons {
    ($( $variant:ident = $text:literal, $code:ident, $message:literal; )*) => {
        /// Why a request failed: the `google.rpc.ErrorInfo.reason` of every error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            // The message as a code span: messages may hold `<token>`, which rustdoc would
            // take for HTML. Double backticks and spaces, as some messages hold backticks.
            $( #[doc = concat!("`` ", $message, " ``")] $variant, )*
        }

        impl Reason {
            /// Every reason, in the order of the table.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The stable SCREAMING_SNAKE text clients branch on.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $text,)* }
            }

            /// The gRPC code of every error with this reason.
            pub fn code(self) -> Code {
                match self { $(Reason::$variant => Code::$code,)* }
            }

            /// The message for people (INVALID_ARGUMENT and ALREADY_EXISTS messages name
            /// their fields instead).
            pub fn message(self) -> &'static str {
                match self { $(Reason::$variant => $message,)* }
            }
        }
    };
}

reasons! {
    // INVALID_ARGUMENT: every one comes with google.rpc.BadRequest field violations.
    TenantRequired = "TENANT_REQUIRED", InvalidArgument, "the request names no tenant";
    TenantIdMalformed = "TENANT_ID_MALFORMED", InvalidArgument, "the tenant id is not a UUID";
    TenantSlugMalformed = "TENANT_SLUG_MALFORMED", InvalidArgument, "the tenant slug is malformed";
    TenantSelectorAmbiguous = "TENANT_SELECTOR_AMBIGUOUS", InvalidArgument, "the request names the tenant twice";
    RequestIdMalformed = "REQUEST_ID_MALFORMED", InvalidArgument, "the request id is not a UUID";
    RequestIdReused = "REQUEST_ID_REUSED", InvalidArgument, "the request id was used for another request";
    RequestBodyMalformed = "REQUEST_BODY_MALFORMED", InvalidArgument, "the request message could not be decoded";
    FieldRequired = "FIELD_REQUIRED", InvalidArgument, "a required field is missing";
    FieldMalformed = "FIELD_MALFORMED", InvalidArgument, "a field is malformed";
    FieldTooLong = "FIELD_TOO_LONG", InvalidArgument, "a field is too long";
    IdMalformed = "ID_MALFORMED", InvalidArgument, "an id is not a UUID in canonical form";
    EmailMalformed = "EMAIL_MALFORMED", InvalidArgument, "an email address is malformed";
    RoleInvalid = "ROLE_INVALID", InvalidArgument, "the role is not one of the known roles";
    StateInvalid = "STATE_INVALID", InvalidArgument, "the state is not one of the known states";
    IsolationTierInvalid = "ISOLATION_TIER_INVALID", InvalidArgument, "the isolation tier is not one of the known tiers";
    LabelsInvalid = "LABELS_INVALID", InvalidArgument, "the labels are invalid";
    DomainsInvalid = "DOMAINS_INVALID", InvalidArgument, "a domain is invalid";
    ChannelBindingsInvalid = "CHANNEL_BINDINGS_INVALID", InvalidArgument, "a channel binding is invalid";
    ScopesInvalid = "SCOPES_INVALID", InvalidArgument, "the scopes are invalid";
    ExpireTimeInvalid = "EXPIRE_TIME_INVALID", InvalidArgument, "the expiry time is invalid";
    TimestampInvalid = "TIMESTAMP_INVALID", InvalidArgument, "a timestamp is out of range";
    ContentTooLarge = "CONTENT_TOO_LARGE", InvalidArgument, "the content is too large";
    MetadataTooLarge = "METADATA_TOO_LARGE", InvalidArgument, "the metadata is too large";
    MetadataInvalid = "METADATA_INVALID", InvalidArgument, "request metadata is invalid";
    OwnerNotFound = "OWNER_NOT_FOUND", InvalidArgument, "the owner does not exist";
    PageSizeInvalid = "PAGE_SIZE_INVALID", InvalidArgument, "the page size is invalid";
    PageTokenInvalid = "PAGE_TOKEN_INVALID", InvalidArgument, "the page token is not from this list";
    UpdateMaskRequired = "UPDATE_MASK_REQUIRED", InvalidArgument, "the update mask is required";
    UpdateMaskInvalid = "UPDATE_MASK_INVALID", InvalidArgument, "the update mask names a field that cannot be updated";
    EventCursorInvalid = "EVENT_CURSOR_INVALID", InvalidArgument, "the cursor is not from this event stream";
    EventFilterInvalid = "EVENT_FILTER_INVALID", InvalidArgument, "an event filter is invalid";
    PlanNameMalformed = "PLAN_NAME_MALFORMED", InvalidArgument, "the plan name is malformed";
    LimitsInvalid = "LIMITS_INVALID", InvalidArgument, "a limit is invalid";
    PlanUnknown = "PLAN_UNKNOWN", InvalidArgument, "the named plan does not exist";
    ArchiveInvalid = "ARCHIVE_INVALID", InvalidArgument, "the archive is invalid: tampered with, truncated, or not a tenantd archive";

    // UNAUTHENTICATED: no valid credentials. The messages say which case, never anything
    // about a valid credential.
    CredentialsMissing = "CREDENTIALS_MISSING", Unauthenticated, "no credentials: send authorization: Bearer <token>";
    CredentialsMalformed = "CREDENTIALS_MALFORMED", Unauthenticated, "the authorization header is not `Bearer <token>`";
    CredentialsAmbiguous = "CREDENTIALS_AMBIGUOUS", Unauthenticated, "more than one authorization header";
    CredentialsInvalid = "CREDENTIALS_INVALID", Unauthenticated, "the token is not a valid credential";
    ApiKeyMalformed = "API_KEY_MALFORMED", Unauthenticated, "the API key is malformed";
    ApiKeyChecksumMismatch = "API_KEY_CHECKSUM_MISMATCH", Unauthenticated, "the API key is mistyped (its checksum does not match)";
    ApiKeyInvalid = "API_KEY_INVALID", Unauthenticated, "the API key is not known";
    ApiKeyRevoked = "API_KEY_REVOKED", Unauthenticated, "the API key is revoked";
    ApiKeyExpired = "API_KEY_EXPIRED", Unauthenticated, "the API key has expired";
    OperatorKeyMalformed = "OPERATOR_KEY_MALFORMED", Unauthenticated, "the operator key is malformed";
    OperatorKeyChecksumMismatch = "OPERATOR_KEY_CHECKSUM_MISMATCH", Unauthenticated, "the operator key is mistyped (its checksum does not match)";
    OperatorKeyInvalid = "OPERATOR_KEY_INVALID", Unauthenticated, "the operator key is not known";
    OperatorKeyRevoked = "OPERATOR_KEY_REVOKED", Unauthenticated, "the operator key is revoked";

    // PERMISSION_DENIED: valid credentials that do not allow the call.
    ApiKeyScopeInsufficient = "API_KEY_SCOPE_INSUFFICIENT", PermissionDenied, "the API key lacks the scope this call needs";
    TenantMismatch = "TENANT_MISMATCH", PermissionDenied, "the tenant metadata names a different tenant than the API key";
    ApiKeyNotAllowed = "API_KEY_NOT_ALLOWED", PermissionDenied, "the control plane accepts only platform credentials (operator keys, the bootstrap token)";
    OperatorRoleInsufficient = "OPERATOR_ROLE_INSUFFICIENT", PermissionDenied, "the operator's role does not allow this call";

    // NOT_FOUND: also for another tenant's resource.
    TenantNotFound = "TENANT_NOT_FOUND", NotFound, "tenant not found";
    UserNotFound = "USER_NOT_FOUND", NotFound, "user not found";
    DocumentNotFound = "DOCUMENT_NOT_FOUND", NotFound, "document not found";
    ApiKeyNotFound = "API_KEY_NOT_FOUND", NotFound, "api key not found";
    SettingNotFound = "SETTING_NOT_FOUND", NotFound, "setting not found";
    OperatorNotFound = "OPERATOR_NOT_FOUND", NotFound, "operator not found";
    PlanNotFound = "PLAN_NOT_FOUND", NotFound, "plan not found";
    OperationNotFound = "OPERATION_NOT_FOUND", NotFound, "operation not found";
    ArchiveNotFound = "ARCHIVE_NOT_FOUND", NotFound, "no archive of that export: the operation is not a succeeded export, or its archive expired";
    PurgeReceiptNotFound = "PURGE_RECEIPT_NOT_FOUND", NotFound, "the tenant has no purge receipt: it was never purged";

    // ALREADY_EXISTS: ErrorInfo metadata `field` names the field whose value is taken.
    TenantAlreadyExists = "TENANT_ALREADY_EXISTS", AlreadyExists, "the tenant already exists";
    TenantSlugAlreadyExists = "TENANT_SLUG_ALREADY_EXISTS", AlreadyExists, "the slug is taken";
    TenantDomainAlreadyExists = "TENANT_DOMAIN_ALREADY_EXISTS", AlreadyExists, "the domain is taken";
    TenantChannelBindingAlreadyExists = "TENANT_CHANNEL_BINDING_ALREADY_EXISTS", AlreadyExists, "the channel binding is taken";
    UserAlreadyExists = "USER_ALREADY_EXISTS", AlreadyExists, "the user already exists";
    UserEmailAlreadyExists = "USER_EMAIL_ALREADY_EXISTS", AlreadyExists, "the email is taken";
    DocumentAlreadyExists = "DOCUMENT_ALREADY_EXISTS", AlreadyExists, "the document already exists";
    ApiKeyAlreadyExists = "API_KEY_ALREADY_EXISTS", AlreadyExists, "the API key already exists";
    AuditEventAlreadyExists = "AUDIT_EVENT_ALREADY_EXISTS", AlreadyExists, "the audit event already exists";
    RequestIdAlreadyExists = "REQUEST_ID_ALREADY_EXISTS", AlreadyExists, "the request id is already recorded";
    SettingAlreadyExists = "SETTING_ALREADY_EXISTS", AlreadyExists, "the setting already exists";
    SettingKeyAlreadyExists = "SETTING_KEY_ALREADY_EXISTS", AlreadyExists, "the key is taken";
    OperatorAlreadyExists = "OPERATOR_ALREADY_EXISTS", AlreadyExists, "the operator already exists";
    PlanAlreadyExists = "PLAN_ALREADY_EXISTS", AlreadyExists, "the plan already exists";
    OperationAlreadyExists = "OPERATION_ALREADY_EXISTS", AlreadyExists, "the operation already exists";
    PlanNameAlreadyExists = "PLAN_NAME_ALREADY_EXISTS", AlreadyExists, "the plan name is taken";

    // FAILED_PRECONDITION: the system is not in a state that allows the call.
    TenantSuspended = "TENANT_SUSPENDED", FailedPrecondition, "the tenant is suspended";
    TenantDeleted = "TENANT_DELETED", FailedPrecondition, "the tenant is deleted";
    TenantNotDeleted = "TENANT_NOT_DELETED", FailedPrecondition, "the tenant is not deleted: only a deleted tenant can be purged";
    TenantPurging = "TENANT_PURGING", FailedPrecondition, "the tenant is being purged";
    TenantPurged = "TENANT_PURGED", FailedPrecondition, "the tenant is purged: only an import can restore it";
    UserHasDocuments = "USER_HAS_DOCUMENTS", FailedPrecondition, "the user owns documents; delete them or give them another owner first";
    TenantAlreadyInTier = "TENANT_ALREADY_IN_TIER", FailedPrecondition, "the tenant is already in that isolation tier";
    OperationNotDone = "OPERATION_NOT_DONE", FailedPrecondition, "the operation has not finished; cancel it or wait for it first";
    TenantOperationInProgress = "TENANT_OPERATION_IN_PROGRESS", FailedPrecondition, "another operation on this tenant has not finished; wait for it or cancel it";
    EventRetentionExceeded = "EVENT_RETENTION_EXCEEDED", FailedPrecondition, "the cursor or start time is older than the event retention window; start from a time within it";
    ArchiveNotReady = "ARCHIVE_NOT_READY", FailedPrecondition, "the export has not finished; wait for its operation";

    // RESOURCE_EXHAUSTED: the caller used more than its share. A slow watcher's ErrorInfo
    // metadata `resume_cursor` says where to continue; a quota's google.rpc.QuotaFailure
    // names the quota; RATE_LIMITED's names the limit, and google.rpc.RetryInfo says when to retry.
    WatcherTooSlow = "WATCHER_TOO_SLOW", ResourceExhausted, "the watcher fell too far behind; resume from the cursor in the error details";
    QuotaExceeded = "QUOTA_EXCEEDED", ResourceExhausted, "the tenant's plan allows no more of this resource; delete some or change the plan (google.rpc.QuotaFailure names the quota)";
    RateLimited = "RATE_LIMITED", ResourceExhausted, "the request rate limit is exceeded; retry after the delay in the error details";

    // ABORTED: a concurrency check failed.
    EtagMismatch = "ETAG_MISMATCH", Aborted, "the resource changed since it was read; read it again and retry";
    TenantMoveVerificationFailed = "TENANT_MOVE_VERIFICATION_FAILED", Aborted, "the moved copy did not match the tenant's data; the tenant stays where it was, start the move again";
    OperationAttemptsExhausted = "OPERATION_ATTEMPTS_EXHAUSTED", Aborted, "the operation was interrupted too many times; its work was undone, start it again";
    PurgeVerificationFailed = "PURGE_VERIFICATION_FAILED", Aborted, "the purge kept finding rows of the tenant after deleting them; the tenant stays PURGING, start the purge again";

    // CANCELLED: the error of an operation that was cancelled.
    OperationCancelled = "OPERATION_CANCELLED", Cancelled, "the operation was cancelled before it finished; nothing it did remains";

    // DEADLINE_EXCEEDED: the call's own deadline (`grpc-timeout`) passed.
    WatchDeadlineExceeded = "WATCH_DEADLINE_EXCEEDED", DeadlineExceeded, "the call's deadline passed; resume from the cursor in the error details";

    // UNAVAILABLE: a dependency is down; retry later.
    DatabaseUnavailable = "DATABASE_UNAVAILABLE", Unavailable, "the database is unavailable; retry later";
    DatabasePoolExhausted = "DATABASE_POOL_EXHAUSTED", Unavailable, "every database connection is busy; retry later";
    DatabaseNotMigrated = "DATABASE_NOT_MIGRATED", Unavailable, "the database is not migrated: run tenantd migrate";
    RedisUnavailable = "REDIS_UNAVAILABLE", Unavailable, "Redis is unavailable; retry later";
    TenantProvisioning = "TENANT_PROVISIONING", Unavailable, "the tenant's schema is still being provisioned; retry later";
    TenantSchemaBehind = "TENANT_SCHEMA_BEHIND", Unavailable, "the tenant's schema is behind its migrations: run tenantd migrate";
    SchemaTierUnavailable = "SCHEMA_TIER_UNAVAILABLE", Unavailable, "schema tenants need a provisioning database URL (TENANTD_PROVISIONING_DATABASE_URL), which this server was not given";
    WatchInterrupted = "WATCH_INTERRUPTED", Unavailable, "the watch was interrupted (server shutdown or database outage); resume from the cursor in the error details";

    // INTERNAL: a bug; details are in the server log only.
    Internal = "INTERNAL", Internal, "internal error";

    // Appended after the table above (append-only across branches); grouped by code there.
    // DEADLINE_EXCEEDED: an ImportTenant upload sent no message within the RPC timeout.
    UploadStalled = "UPLOAD_STALLED", DeadlineExceeded, "the upload sent nothing within the server's RPC timeout; nothing of it was kept, send it again";
    // INVALID_ARGUMENT: an archive's signature (decision 0022) is missing where this server
    // requires one, names a key id it does not have, does not match, or cannot be checked
    // (a signed archive on a server without keys); the field violation `archive.signature` says which.
    ArchiveSignatureInvalid = "ARCHIVE_SIGNATURE_INVALID", InvalidArgument, "the archive's signature is missing, from an unknown key, or does not match its manifest";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_text_is_unique_and_screaming_snake() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(seen.insert(text), "{text} appears twice");
            assert!(text.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_'), "{text}");
            let camel: String = text.split('_').map(|word| word[..1].to_owned() + &word[1..].to_lowercase()).collect();
            assert_eq!(camel, format!("{reason:?}"), "the variant is named after its text");
        }
    }
}
