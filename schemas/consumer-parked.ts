/**
 * The consumer SDK's report of its parked messages to the coordinator, and the coordinator's
 * answer: the redrives operators asked for (docs/consumers.md#parked-messages-in-the-admin-ui).
 * A report is the consumer's whole parked store (up to `parkedReportLimit` messages, oldest
 * first) as of `listedAt`: sending it again changes nothing, so the SDK simply sends it again.
 */
import { z } from 'zod';

/**
 * What a consumer's parked message is, as the coordinator knows it: parked; redrive (an operator
 * asked for one, the consumer has not taken it yet); redriven (gone from the consumer's parked
 * store after a redrive asked here); cleared (gone without one: redriven in the service itself).
 */
export const parkedMessageStates = ['parked', 'redrive', 'redriven', 'cleared'] as const;
export type ParkedMessageState = (typeof parkedMessageStates)[number];

/** Messages per report: one consumer with more has an incident the first ones describe. */
export const parkedReportLimit = 500;
/** Characters of a parked message's error the coordinator keeps. */
export const parkedErrorChars = 2000;
export const consumerNameMaxLength = 200;
export const parkedIdMaxLength = 512;

/**
 * A time from the consumer's database clock: ISO 8601, within years Postgres and every clock agree
 * on, handed on in UTC. ISO 8601 allows offsets up to ±23:59, Postgres only up to ±15:59: a valid
 * time with a larger offset must not reach the store as written.
 */
const instant = z.iso
  .datetime({ offset: true })
  .refine((v) => {
    const t = Date.parse(v);
    return t >= Date.UTC(1970, 0, 1) && t < Date.UTC(10_000, 0, 1);
  }, 'a time between 1970 and 9999')
  .transform((v) => new Date(v).toISOString());

export const parkedReportSchema = z
  .object({
    consumer: z.string().min(1).max(consumerNameMaxLength).describe('The consumer name (consume option consumerName).'),
    listedAt: instant.describe("When the consumer read its parked store, by its database's clock (as the failures' times)."),
    complete: z
      .boolean()
      .describe('False when the consumer has more parked messages than it sent: the missing ones are not taken as redriven.'),
    parked: z
      .array(
        z
          .object({
            messageId: z.string().min(1).max(parkedIdMaxLength),
            source: z.string().max(1024).describe('kafka:<topic>/<partition>/<offset> or rabbitmq:<queue>.'),
            error: z.string().max(parkedErrorChars),
            attempts: z.number().int().min(0).max(2_147_483_647),
            firstFailure: instant,
            lastFailure: instant,
          })
          .strict(),
      )
      .max(parkedReportLimit)
      .refine((list) => new Set(list.map((p) => p.messageId)).size === list.length, 'each messageId at most once'),
  })
  .strict();
export type ParkedReport = z.infer<typeof parkedReportSchema>;

export const parkedReportReplySchema = z.object({
  redrive: z.array(z.string()).describe('Message ids an operator asked to redrive: the consumer runs them again and reports.'),
});
export type ParkedReportReply = z.infer<typeof parkedReportReplySchema>;

/** A parked consumer message as the admin API lists it. */
export const parkedMessageViewSchema = z.object({
  consumer: z.string(),
  messageId: z.string(),
  source: z.string(),
  error: z.string(),
  attempts: z.number(),
  firstFailure: z.string(),
  lastFailure: z.string(),
  state: z.enum(parkedMessageStates),
  redriveBy: z.string().nullable().describe('The operator who asked for the last redrive.'),
  redriveAt: z.string().nullable(),
  resolvedAt: z.string().nullable().describe('When the consumer reported it gone (redriven, or cleared in the service).'),
  reportedAt: z.string(),
});
export type ParkedMessageView = z.infer<typeof parkedMessageViewSchema>;
