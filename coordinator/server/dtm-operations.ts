/**
 * What DTM's prepare, submit, abort, registerBranch and prepareWorkflow do, whichever API they
 * came by: the HTTP routes (dtm-routes.ts) and the gRPC service (grpc-server.ts) both call these,
 * after validating with the same schemas, so each type's dispatch lives here once.
 */
import { randomBytes } from 'node:crypto';
import type { TransRequest } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import type { RegisterBranchRequest } from '../../schemas/register-branch.js';
import type { WorkflowReply } from '../../schemas/workflow.js';
import type { MsgEngine } from '../engine/msg.js';
import type { PhaseTwoEngine } from '../engine/phase-two.js';
import type { SagaEngine } from '../engine/saga.js';
import type { WorkflowEngine } from '../engine/workflow.js';

export interface DtmEngines {
  msg: MsgEngine;
  saga: SagaEngine;
  tcc: PhaseTwoEngine;
  xa: PhaseTwoEngine;
  workflow: WorkflowEngine;
}

export interface DtmOperations {
  prepare(req: TransRequest): Promise<void>;
  submit(req: TransRequest): Promise<void>;
  abort(req: TransRequest): Promise<void>;
  registerBranch(req: RegisterBranchRequest): Promise<void>;
  prepareWorkflow(req: TransRequest): Promise<WorkflowReply>;
}

/** A new unique gid (22 URL-safe characters); no transaction is made. */
export const newGid = (): string => randomBytes(16).toString('base64url');

/** Types not served by an operation get a clear 400, not a half-made transaction. */
function served(req: TransRequest, types: string[], what: string): void {
  if (!types.includes(req.trans_type)) {
    throw new ConcordError('UNSUPPORTED', `${what} serves trans_type ${types.join(' or ')}, not "${req.trans_type}"`, {
      field: 'trans_type',
    });
  }
}

export function dtmOperations({ msg, saga, tcc, xa, workflow }: DtmEngines): DtmOperations {
  const phaseTwo = { tcc, xa };
  return {
    async prepare(req) {
      served(req, ['msg', 'tcc', 'xa'], 'prepare');
      const type = req.trans_type;
      await (type === 'tcc' || type === 'xa' ? phaseTwo[type].prepare(req) : msg.prepare(req));
    },
    async submit(req) {
      served(req, ['msg', 'saga', 'tcc', 'xa', 'workflow'], 'submit');
      const type = req.trans_type;
      if (type === 'workflow') await workflow.submit(req);
      else await (type === 'saga' ? saga : type === 'tcc' || type === 'xa' ? phaseTwo[type] : msg).submit(req);
    },
    async abort(req) {
      served(req, ['msg', 'tcc', 'xa'], 'abort');
      const type = req.trans_type;
      await (type === 'tcc' || type === 'xa' ? phaseTwo[type].abort(req) : msg.abort(req));
    },
    async registerBranch(req) {
      await (req.trans_type === 'workflow' ? workflow.registerBranch(req) : phaseTwo[req.trans_type].registerBranch(req));
    },
    async prepareWorkflow(req) {
      served(req, ['workflow'], 'prepareWorkflow');
      return workflow.prepare(req);
    },
  };
}
