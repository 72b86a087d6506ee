-- A quarantined record of a kind with sensitive fields may hold a secret anywhere in its raw
-- text (it may not even be JSON), so its whole raw value is sealed with the field key, like
-- the sensitive fields themselves. `raw_key_id` names the key it is sealed under; NULL means
-- `raw_value` is the raw text in clear (kinds without sensitive fields, and rows from before).
ALTER TABLE ferry_quarantine ADD COLUMN raw_key_id text;
