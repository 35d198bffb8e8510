DROP TABLE platform_idempotency_records;
DROP TABLE idempotency_records;
