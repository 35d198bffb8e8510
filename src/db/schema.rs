//! Diesel table definitions. Crate-private: tenant tables are reached only through the
//! repositories, which take a [`crate::tenancy::TenantTx`].

diesel::table! {
    /// The global tenant registry (no RLS).
    tenants (id) {
        id -> Uuid,
        slug -> Text,
        display_name -> Text,
        state -> Text,
        labels -> Jsonb,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        revision -> Int8,
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

diesel::joinable!(users -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, users);
