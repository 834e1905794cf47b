/**
 * The consumer's dead-letter table, in the consumer's own database beside the barrier table (whose
 * rows serve as the inbox: gid = message id, branch_id = consumer name, op = 'consume'). A row is
 * a message whose handler failed every attempt, or threw BranchFailure; it stays until redriven.
 */
export const parkedTable = 'concord_parked';

export const inboxDdlPostgres = `CREATE TABLE IF NOT EXISTS concord_parked (
  id bigserial PRIMARY KEY,
  consumer text NOT NULL,
  message_id text NOT NULL,
  source text NOT NULL,
  key text,
  value text NOT NULL,
  headers jsonb NOT NULL DEFAULT '{}',
  error text NOT NULL,
  attempts int NOT NULL,
  first_failure timestamptz NOT NULL,
  last_failure timestamptz NOT NULL,
  CONSTRAINT uniq_parked UNIQUE (consumer, message_id)
);
`;
