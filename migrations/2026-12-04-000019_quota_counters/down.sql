-- Why: reverts 2026-12-04-000019_quota_counters (counters that were not kept while no cap
-- applied are then wrong for a build that trusts every counter: recount before going back).
ALTER TABLE tenant_quota_usage DROP COLUMN counted_at;
