/**
 * DTM's workflow wire formats: the custom_data a workflow is prepared with, a step's progress
 * record (registerBranch with trans_type workflow), the outcome the client submits (req_extra),
 * and the reply of prepareWorkflow, which DTM's Go client reads as protobuf JSON
 * (DtmProgressesReply: `transaction` and `progresses`, bin_data base64).
 */
import { z } from 'zod';
import { gidSchema } from './dtm.js';

/** custom_data of a workflow: the registered name, and its input as base64 (Go's []byte in JSON; null when none). */
export const workflowCustomDataSchema = z.object({
  name: z.string().min(1, 'custom_data.name must name the workflow').max(200),
  data: z
    .string()
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'custom_data.data must be base64')
    .nullish(),
});
export type WorkflowCustomData = z.infer<typeof workflowCustomDataSchema>;

/** A step's outcome: action, commit or rollback of a branch (and DTM's xa "business"), with its result or error text. */
export const workflowRegistrationSchema = z.looseObject({
  gid: gidSchema,
  trans_type: z.literal('workflow'),
  branch_id: z
    .string()
    .min(1)
    .max(40)
    .regex(/^[0-9A-Za-z_-]+$/, 'branch_id must be letters, digits, "_" or "-"'),
  op: z
    .string()
    .min(1)
    .max(45)
    .regex(/^[0-9A-Za-z_-]+$/, 'op must be letters, digits, "_" or "-"'),
  status: z.enum(['succeed', 'failed'], { error: 'status must be "succeed" or "failed"' }),
  data: z.string().max(1_000_000).optional(),
});
export type WorkflowRegistration = z.infer<typeof workflowRegistrationSchema>;

/** req_extra of submit for a workflow: how it ended, why, and its result (base64). */
export const workflowOutcomeSchema = z.object({
  status: z.enum(['succeed', 'failed'], { error: 'req_extra.status must be "succeed" or "failed"' }),
  rollback_reason: z.string().max(1024).optional(),
  result: z.string().max(1_000_000).optional(),
});
export type WorkflowOutcome = z.infer<typeof workflowOutcomeSchema>;

export const workflowProgressSchema = z.object({
  branch_id: z.string(),
  op: z.string(),
  status: z.enum(['succeed', 'failed']),
  bin_data: z.string().describe('Base64 of the recorded result (or error text).'),
});
export type WorkflowProgress = z.infer<typeof workflowProgressSchema>;

/** The reply of prepareWorkflow; errors have the same shape (a failed transaction), so DTM's client returns them. */
export const workflowReplySchema = z.object({
  transaction: z.object({
    gid: z.string(),
    status: z.string(),
    rollback_reason: z.string(),
    result: z.string().describe('Base64 of the result the workflow submitted.'),
  }),
  progresses: z.array(workflowProgressSchema),
});
export type WorkflowReply = z.infer<typeof workflowReplySchema>;

/** An error answered to prepareWorkflow: the common error fields plus a failed transaction DTM's client turns into an error. */
export const workflowRefusalSchema = workflowReplySchema.extend({
  code: z.string(),
  message: z.string(),
  field: z.string().optional(),
  dtm_result: z.literal('FAILURE'),
});
