//! Diesel table definitions. Crate-private: tenant tables are reached only through the
//! repositories, which take a [`crate::tenancy::TenantTx`].

diesel::table! {
    /// The global tenant registry (no RLS).
    tenants (id) {
        id -> Uuid,
        slug -> Nullable<Text>,
        display_name -> Nullable<Text>,
        state -> Text,
        labels -> Jsonb,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        revision -> Int8,
        isolation_tier -> Text,
        schema_version -> Nullable<Text>,
        plan -> Nullable<Text>,
        limit_overrides -> Jsonb,
        purge_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Plans: named sets of limits and setting defaults (global, no RLS).
    plans (id) {
        id -> Uuid,
        name -> Text,
        display_name -> Text,
        limits -> Jsonb,
        settings -> Jsonb,
        create_time -> Timestamptz,
        created_by -> Text,
        update_time -> Timestamptz,
        updated_by -> Text,
        revision -> Int8,
    }
}

diesel::table! {
    /// Quota counters, one per tenant and counted resource (RLS).
    tenant_quota_usage (tenant_id, quota) {
        tenant_id -> Uuid,
        quota -> Text,
        used -> Int8,
    }
}

diesel::table! {
    /// A tenant's users (RLS enabled and forced).
    users (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        email -> Text,
        display_name -> Text,
        role -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    /// Diesel's record of applied migrations; readable by the app role for readiness.
    __diesel_schema_migrations (version) {
        version -> VarChar,
        run_on -> Timestamp,
    }
}

diesel::table! {
    /// Domains identifying tenants (registry; global).
    tenant_domains (domain) {
        domain -> Text,
        tenant_id -> Uuid,
    }
}

diesel::table! {
    /// External channel identities of tenants (registry; global).
    tenant_channel_bindings (channel_type, external_id) {
        channel_type -> Text,
        external_id -> Text,
        tenant_id -> Uuid,
    }
}

diesel::table! {
    /// Tenant API keys (RLS).
    api_keys (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        display_name -> Text,
        secret_sha256 -> Bytea,
        scopes -> Array<Text>,
        create_time -> Timestamptz,
        expire_time -> Nullable<Timestamptz>,
        revoke_time -> Nullable<Timestamptz>,
        last_used_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Documents (RLS).
    documents (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        title -> Text,
        content -> Bytea,
        content_sha256 -> Bytea,
        metadata -> Jsonb,
        owner_user_id -> Uuid,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    /// Tenant settings (RLS).
    tenant_settings (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        key -> Text,
        value -> Jsonb,
        description -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    /// Audit events (RLS; append-only for the app role).
    audit_events (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        create_time -> Timestamptz,
        actor_type -> Text,
        actor_id -> Text,
        action -> Text,
        resource_type -> Text,
        resource_id -> Text,
        request_id -> Text,
        details -> Jsonb,
        transaction_id -> Int8,
    }
}

diesel::table! {
    /// Idempotency records of tenant-scoped creates (RLS).
    idempotency_records (tenant_id, request_id) {
        tenant_id -> Uuid,
        request_id -> Uuid,
        method -> Text,
        request_sha256 -> Bytea,
        response -> Jsonb,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    /// Idempotency records of CreateTenant (global).
    platform_idempotency_records (request_id) {
        request_id -> Uuid,
        method -> Text,
        request_sha256 -> Bytea,
        response -> Jsonb,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    /// Named platform credentials (global, no RLS).
    operators (id) {
        id -> Uuid,
        display_name -> Text,
        role -> Text,
        secret_sha256 -> Bytea,
        create_time -> Timestamptz,
        created_by -> Text,
        revoke_time -> Nullable<Timestamptz>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    /// Which tenants each transaction wrote events for (a registry table, no RLS; filled
    /// by a trigger on audit_events).
    event_transactions (tenant_id, transaction_id) {
        tenant_id -> Uuid,
        transaction_id -> Int8,
    }
}

diesel::table! {
    /// The first transaction id `event_transactions` covers (one row).
    event_index_start (singleton) {
        singleton -> Bool,
        transaction_id -> Int8,
    }
}

diesel::allow_tables_to_appear_in_same_query!(tenants, plans, users, tenant_domains, tenant_channel_bindings);

diesel::table! {
    /// Long-running operations (platform; no RLS): claimed by one worker at a time with a lease.
    operations (id) {
        id -> Uuid,
        kind -> Text,
        subject_tenant_id -> Nullable<Uuid>,
        request -> Jsonb,
        state -> Text,
        phase -> Text,
        progress -> Jsonb,
        cancel_requested -> Bool,
        result -> Nullable<Jsonb>,
        lease_owner -> Nullable<Uuid>,
        lease_expire_time -> Nullable<Timestamptz>,
        attempts -> Int4,
        created_by -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        done_time -> Nullable<Timestamptz>,
    }
}
