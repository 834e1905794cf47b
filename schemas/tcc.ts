/** TCC's wire format: the body of POST registerBranch (and its legacy alias registerTccBranch). */
import { z } from 'zod';
import { gidSchema } from './dtm.js';

/** A branch id as DTM's clients make them; nested TCC ids append two digits per level (01, 0101…). */
export const branchIdSchema = z
  .string()
  .min(1)
  .max(40)
  .regex(/^[0-9A-Za-z_-]+$/, 'branch_id must be letters, digits, "_" or "-"');

/**
 * DTM's clients send every value as a string and add keys of their own (status, try, subType,
 * op): those are ignored.
 */
export const tccRegistrationSchema = z.looseObject({
  gid: gidSchema,
  trans_type: z.literal('tcc'),
  branch_id: branchIdSchema,
  data: z.string().max(1_000_000).optional(),
  // Empty: nothing to call in that phase, which succeeds (DTM treats an empty URL so; its
  // examples register Try-only branches with confirm and cancel "").
  confirm: z.string().max(1024),
  cancel: z.string().max(1024),
});
export type TccRegistration = z.infer<typeof tccRegistrationSchema>;

/**
 * The query a Try is called with, as far as a nested TCC needs it: the coordinator's API (`dtm`,
 * which DTM's clients add for this), the gid, and the branch id that its sub-branches extend.
 */
export const tccTryQuerySchema = z.looseObject({
  dtm: z.url({ error: 'dtm must be the URL of the coordinator API' }),
  gid: gidSchema,
  trans_type: z.literal('tcc', { error: 'a nested TCC continues a trans_type tcc' }),
  branch_id: z
    .string()
    .min(1)
    .max(38, 'branch_id leaves no room for a sub-branch')
    .regex(/^[0-9A-Za-z_-]+$/, 'branch_id must be letters, digits, "_" or "-"'),
});
