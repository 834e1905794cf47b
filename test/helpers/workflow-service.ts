/**
 * A service process running the SDK's transfer workflow (TransOut, then TransIn, on the bank
 * service), for tests that kill it. MODE=crash runs workflow GID and SIGKILLs itself once step 1
 * is recorded; MODE=serve serves the resume callback on PORT until it is killed.
 *
 *   CONCORD_URL=… BANK_URL=… PORT=… GID=… MODE=crash|serve node dist/test/helpers/workflow-service.js
 */
import Fastify from 'fastify';
import { fastifyWorkflow, Workflows, type Workflow } from '../../sdk/index.js';

const { CONCORD_URL, BANK_URL, PORT, GID, MODE } = process.env;
if (!CONCORD_URL || !BANK_URL || !PORT) throw new Error('CONCORD_URL, BANK_URL and PORT are required');

const workflows = new Workflows({ coordinator: CONCORD_URL, callback: `http://127.0.0.1:${PORT}/workflow/resume`, retryInterval: 1 });
workflows.register('transfer', async (wf: Workflow, input: { amount: number }) => {
  await wf.callBranch(input, `${BANK_URL}/TransOut`, `${BANK_URL}/TransOutCancel`);
  if (MODE === 'crash') process.kill(process.pid, 'SIGKILL');
  await wf.callBranch(input, `${BANK_URL}/TransIn`, `${BANK_URL}/TransInCancel`);
});

if (MODE === 'crash') {
  await workflows.execute('transfer', GID ?? '', { amount: 30 });
} else {
  const app = Fastify();
  app.post('/workflow/resume', fastifyWorkflow(workflows));
  await app.listen({ port: Number(PORT), host: '127.0.0.1' });
  console.log('listening');
}
