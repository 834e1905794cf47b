/**
 * How Concord reads an outbox table it did not create: a mapping from the table's own columns to
 * what a message needs. The table is never altered; `checkMapping` (relay/outbox) compares the
 * mapping with the real table before anything is read.
 */
import { z } from 'zod';

const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_$]*$/, 'a plain SQL identifier (letters, digits, _ and $)')
  .describe('A column name.');

export const payloadEncodings = ['text', 'json', 'bytea', 'base64'] as const;

const mappingShape = z.strictObject({
  table: z
    .string()
    .regex(/^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$/, 'a table name, optionally schema-qualified (public.outbox)')
    .describe('The outbox table, optionally schema-qualified.'),
  name: z
    .string()
    .min(1)
    .max(200)
    .optional()
    .describe('Names this drain (its cursor, its parked rows and its lock); defaults to the table name.'),
  idColumn: identifier.default('id').describe('Unique, increasing id (bigserial or identity); rows are published in its order.'),
  destinationColumn: identifier
    .optional()
    .describe("Column holding each row's destination (a URL, or a name put into destinationTemplate)."),
  destination: z.string().min(1).optional().describe('One fixed destination URL for every row, instead of destinationColumn.'),
  destinationTemplate: z
    .string()
    .includes('{destination}')
    .optional()
    .describe('Turns a destination column value that is not a URL into one, e.g. kafka://default/{destination}.'),
  keyColumn: identifier.optional().describe('Message key (Kafka partitioning, per-key order); none means no key.'),
  payloadColumn: identifier.describe('The message body.'),
  payloadEncoding: z.enum(payloadEncodings).default('text').describe('How the payload column holds the body.'),
  headersColumn: identifier.optional().describe('A JSON object (json, jsonb or text) of extra message headers.'),
  createdAtColumn: identifier.optional().describe('When the row was written; used for the age of the oldest pending row.'),
  published: z
    .enum(['flag', 'delete', 'none'])
    .describe(
      'How published rows are recognised: flag (publishedColumn set: boolean true, number 1, or a timestamp), delete (published rows are deleted), none (Concord keeps its own cursor).',
    ),
  publishedColumn: identifier.optional().describe('With published=flag: the boolean, integer or timestamp column Concord sets.'),
  messageId: z
    .string()
    .includes('{id}')
    .default('outbox:{table}:{id}')
    .describe('The message-id header of each row: the same on every delivery, so consumer inboxes drop duplicates.'),
  notifyChannel: identifier.optional().describe('A LISTEN channel a trigger notifies on insert; without it the drain polls.'),
  read: z
    .enum(['table', 'logical'])
    .default('table')
    .describe(
      "How the drain finds new rows: table (reads the table, polling or woken by notifyChannel) or logical (Postgres with wal_level=logical: streams the table's inserts in commit order from a replication slot, no polling; the role needs REPLICATION).",
    ),
  partitions: z
    .number()
    .int()
    .min(1)
    .max(256)
    .default(1)
    .describe(
      'Splits the table by a hash of the key (of the id for keyless rows) into this many parts, each drained on its own (own lock), so several coordinators share one busy table; per-key order is kept. Not with published=none.',
    ),
  lagThreshold: z
    .number()
    .positive()
    .optional()
    .describe("Seconds: the coordinator's readiness (/api/health) fails while the oldest pending row is older (needs createdAtColumn)."),
});

type MappingShape = z.infer<typeof mappingShape>;

function refineMapping(m: MappingShape, ctx: z.RefinementCtx): void {
  if ((m.destination === undefined) === (m.destinationColumn === undefined))
    ctx.addIssue({ code: 'custom', path: ['destinationColumn'], message: 'give exactly one of destinationColumn and destination' });
  if (m.published === 'flag' && !m.publishedColumn)
    ctx.addIssue({ code: 'custom', path: ['publishedColumn'], message: 'published=flag needs publishedColumn' });
  if (m.published !== 'flag' && m.publishedColumn)
    ctx.addIssue({
      code: 'custom',
      path: ['publishedColumn'],
      message: `publishedColumn is only used with published=flag, not ${m.published}`,
    });
  if (m.partitions > 1 && m.published === 'none')
    ctx.addIssue({ code: 'custom', path: ['partitions'], message: 'partitions need published=flag or delete (a cursor is one per table)' });
  if (m.read === 'logical' && m.partitions > 1)
    ctx.addIssue({
      code: 'custom',
      path: ['partitions'],
      message: 'read=logical streams the table from one replication slot: partitions must be 1',
    });
  if (m.read === 'logical' && m.notifyChannel)
    ctx.addIssue({
      code: 'custom',
      path: ['notifyChannel'],
      message: 'read=logical needs no notifyChannel (the slot streams every insert)',
    });
  if (m.lagThreshold !== undefined && !m.createdAtColumn)
    ctx.addIssue({
      code: 'custom',
      path: ['lagThreshold'],
      message: 'lagThreshold needs createdAtColumn (the age of the oldest pending row)',
    });
}

export const outboxMappingSchema = mappingShape.superRefine(refineMapping);

/** One entry of the coordinator's `outboxes`: a mapping and the database holding its table. */
export const outboxDrainConfigSchema = mappingShape
  .extend({
    database: z
      .string()
      .regex(/^(postgres(ql)?|mysql|mariadb):\/\//, 'a postgres://, mysql:// or mariadb:// URL')
      .describe('The database holding the outbox table (Postgres, MySQL or MariaDB).'),
  })
  .superRefine(refineMapping);

export type OutboxMappingInput = z.input<typeof outboxMappingSchema>;
export type OutboxMapping = z.output<typeof outboxMappingSchema>;
export type OutboxDrainConfig = z.output<typeof outboxDrainConfigSchema>;
