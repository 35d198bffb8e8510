DROP TABLE tenant_channel_bindings;
DROP TABLE tenant_domains;
