//! The one constructor of Redis keys. A tenant's key has the form
//! `t:{<tenant-uuid>}:<rest>`: the braces make the tenant id a Redis Cluster hash tag, so
//! one tenant's keys share a slot. The few keys that belong to no tenant (operator records)
//! have the form `p:<rest>`; nothing else starts with `p:`.

use uuid::Uuid;

/// The pub/sub channel on which replicas announce that something about a tenant changed
/// (the message is the tenant id). A channel is not a key and lives in no slot.
pub const INVALIDATION_CHANNEL: &str = "tenantd:invalidate";

/// A Redis key. The only way to make one is [`RedisKey::for_tenant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKey(String);

impl RedisKey {
    /// The key `t:{<tenant>}:<part>[:<part>...]`.
    pub fn for_tenant(tenant_id: Uuid, parts: &[&str]) -> Self {
        let mut key = format!("t:{{{tenant_id}}}");
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        Self(key)
    }

    /// The platform key `p:<part>[:<part>...]`, for what belongs to no tenant.
    pub fn for_platform(parts: &[&str]) -> Self {
        Self(format!("p:{}", parts.join(":")))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_tenant_as_a_cluster_hash_tag() {
        let tenant = Uuid::nil();
        assert_eq!(RedisKey::for_tenant(tenant, &["state"]).as_str(), "t:{00000000-0000-0000-0000-000000000000}:state");
        assert_eq!(RedisKey::for_platform(&["operator", "x"]).as_str(), "p:operator:x");
    }
}
