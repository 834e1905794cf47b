/** XA's wire format: the body of POST registerBranch for trans_type xa. */
import { z } from 'zod';
import { gidSchema } from './dtm.js';
import { branchIdSchema, tccRegistrationSchema } from './tcc.js';

/**
 * DTM's clients register an XA branch once its local transaction is done, with one `url` that the
 * coordinator calls in phase two with op=commit or op=rollback (DTM's own branches register the
 * branch's action URL, whose handler serves both phases). No data: phase two needs only the ids.
 */
export const xaRegistrationSchema = z.looseObject({
  gid: gidSchema,
  trans_type: z.literal('xa'),
  branch_id: branchIdSchema,
  data: z.string().max(1_000_000).optional(),
  url: z.string().min(1).max(1024),
});
export type XaRegistration = z.infer<typeof xaRegistrationSchema>;

/** The body of POST registerBranch: a TCC or an XA branch, told apart by trans_type. */
export const branchRegistrationSchema = z.discriminatedUnion('trans_type', [tccRegistrationSchema, xaRegistrationSchema], {
  error: 'registerBranch serves trans_type tcc or xa',
});
export type BranchRegistration = z.infer<typeof branchRegistrationSchema>;
