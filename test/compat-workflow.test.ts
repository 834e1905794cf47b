/**
 * Until workflows are served, DTM's own Go workflow client (github.com/dtm-labs/client/workflow
 * v1.17.3, unchanged) gets an error it can return from POST /prepareWorkflow, not a reply it
 * crashes on (a 404 left it with no transaction: a nil pointer panic). The driver runs this mode
 * outside its panic guard, so a crash shows as exit code 2 without a result line.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoClient, runClient } from './compat/setup.js';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query } from './helpers/poll.js';

describe('DTM Go workflow client before workflows are served', () => {
  let bin: string;
  let coordinator: RunningCoordinator;

  beforeAll(async () => {
    const [built, store] = await Promise.all([buildGoClient(), freshDatabase()]);
    bin = built;
    coordinator = await startCoordinator({ store, env: fastCoordinator });
  }, 300_000); // a cold Go build takes 1-2 min
  afterAll(async () => {
    expect(await coordinator?.stop()).toBe(0);
  });

  it('returns the coordinator’s refusal as an error, and nothing is stored', async () => {
    const gid = `compat-wf-${randomUUID()}`;
    const r = await runClient([bin], ['-dtm', coordinator.dtm, '-busi', 'http://127.0.0.1:9', '-mode', 'workflow', '-gid', gid]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.error).toContain('trans_type workflow is not supported');
    expect(r.error).not.toContain('nil pointer');
    expect((await query(coordinator.dtm, gid)).transaction).toBeNull();
  });

  it('answers /prepareWorkflow with a 400 naming trans_type and a failed transaction for DTM', async () => {
    const res = await post(`${coordinator.dtm}/prepareWorkflow`, { gid: 'wf-1', trans_type: 'workflow', custom_data: '{}' });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({
      code: 'UNSUPPORTED',
      field: 'trans_type',
      transaction: { gid: 'wf-1', status: 'failed' },
      progresses: [],
    });
  });
});
