-- Why: quota counters are kept only while a cap applies (decision 0016, "Counting only what
-- is capped"), so a tenant without a cap pays nothing per create. A counter is trusted only if
-- it was recounted from the rows after the tenant's limits last changed (plus a grace for
-- replicas still holding the old limits): `counted_at` is when it was last recounted.
-- Existing counters start untrusted ('-infinity'), so the first capped create recounts them.
ALTER TABLE tenant_quota_usage ADD COLUMN counted_at timestamptz NOT NULL DEFAULT '-infinity';
