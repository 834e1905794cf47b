/**
 * Concord's own outbox tables, in the service's database beside the outbox it drains:
 * - concord_outbox: the native outbox the SDK's `outbox.publish` writes (`concord outbox sql` prints it);
 * - concord_outbox_cursor: with published=none, how far a drain has published;
 * - concord_outbox_parked: rows that can never be delivered as they are, with their error and a copy.
 */
export const nativeOutboxTable = 'concord_outbox';
export const outboxCursorTable = 'concord_outbox_cursor';
export const outboxParkedTable = 'concord_outbox_parked';
export const nativeOutboxChannel = 'concord_outbox';

/** The mapping that drains the native table (`concord outbox drain --native`): rows are deleted once published. */
export const nativeOutboxMapping = {
  table: nativeOutboxTable,
  destinationColumn: 'destination',
  keyColumn: 'key',
  payloadColumn: 'payload',
  headersColumn: 'headers',
  createdAtColumn: 'created_at',
  published: 'delete',
} as const;

export const nativeOutboxDdlPostgres = `CREATE TABLE IF NOT EXISTS concord_outbox (
  id bigserial PRIMARY KEY,
  destination text NOT NULL,
  key text,
  payload text NOT NULL,
  headers jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
`;

/** Optional: wakes the drain at once instead of at its next poll (one NOTIFY per writing transaction). */
export const nativeOutboxNotifyDdlPostgres = `CREATE OR REPLACE FUNCTION concord_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('concord_outbox', '');
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS concord_outbox_notify ON concord_outbox;
CREATE TRIGGER concord_outbox_notify AFTER INSERT ON concord_outbox FOR EACH STATEMENT EXECUTE FUNCTION concord_outbox_notify();
`;

export const outboxStateDdlPostgres = `CREATE TABLE IF NOT EXISTS concord_outbox_cursor (
  drain text PRIMARY KEY,
  last_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS concord_outbox_parked (
  drain text NOT NULL,
  row_id text NOT NULL,
  message_id text NOT NULL,
  row_data jsonb NOT NULL,
  error text NOT NULL,
  attempts int NOT NULL,
  parked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (drain, row_id)
);
`;
