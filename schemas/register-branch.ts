/** The body of registerBranch (and DTM's older registerTccBranch): a TCC, XA or workflow branch, told apart by trans_type. */
import { z } from 'zod';
import { tccRegistrationSchema } from './tcc.js';
import { workflowRegistrationSchema } from './workflow.js';
import { xaRegistrationSchema } from './xa.js';

export const registerBranchSchema = z.discriminatedUnion(
  'trans_type',
  [tccRegistrationSchema, xaRegistrationSchema, workflowRegistrationSchema],
  {
    error: 'registerBranch serves trans_type tcc, xa or workflow',
  },
);
export type RegisterBranchRequest = z.infer<typeof registerBranchSchema>;
