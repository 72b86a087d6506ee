-- The operator dashboard's audit log (issue 16 §1): one row per operator action taken through
-- `/admin` (a rollback today), whatever its result, so "who rolled back this user, and when?"
-- has an answer. `operator` names the credential (never the secret itself); `user_id` and
-- `migration_id` are what the operator asked for, kept even when nothing matched.
CREATE TABLE ferry_operator_audit (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    operator     text        NOT NULL,
    action       text        NOT NULL,
    user_id      uuid        NOT NULL,
    migration_id uuid,
    result       text        NOT NULL,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX ferry_operator_audit_by_user ON ferry_operator_audit (user_id, id);
