/** The workflow's decisions, from its row alone: no store, no HTTP. */
import { describe, expect, it } from 'vitest';
import { decideWorkflow, firstResumeIn } from '../coordinator/engine/workflow-decide.js';

const custom = (name: string, input: string | null) =>
  JSON.stringify({ name, data: input === null ? null : Buffer.from(input).toString('base64') });

describe('decideWorkflow', () => {
  it('resumes a prepared workflow through its callback, op = its name, body = its input', () => {
    const d = decideWorkflow({
      status: 'prepared',
      protocol: 'http',
      query_prepared: 'http://svc/resume',
      custom_data: custom('transfer', '{"amount":30}'),
    });
    expect(d).toEqual({ kind: 'resume', url: 'http://svc/resume', name: 'transfer', payload: '{"amount":30}' });
  });

  it('sends no body for a workflow without input (Go’s nil []byte is null)', () => {
    const d = decideWorkflow({
      status: 'prepared',
      protocol: 'http',
      query_prepared: 'http://svc/resume',
      custom_data: custom('transfer', null),
    });
    expect(d).toMatchObject({ kind: 'resume', payload: '' });
  });

  it("over gRPC, wraps the input in DTM's workflow.WorkflowData (field 1, bytes), as its gRPC workflow service takes it", () => {
    const input = Buffer.alloc(200, 7); // a two-byte length
    const d = decideWorkflow({
      status: 'prepared',
      protocol: 'grpc',
      query_prepared: 'svc:9/workflow.Workflow/Execute',
      custom_data: custom('t', input.toString('latin1')),
    });
    expect(d).toMatchObject({ kind: 'resume', payload: Buffer.concat([Buffer.from([0x0a, 0xc8, 0x01]), input]) });
    const empty = decideWorkflow({
      status: 'prepared',
      protocol: 'grpc',
      query_prepared: 'svc:9/workflow.Workflow/Execute',
      custom_data: custom('t', null),
    });
    expect(empty).toMatchObject({ kind: 'resume', payload: Buffer.alloc(0) });
  });

  it('leaves finished workflows alone', () => {
    for (const status of ['succeed', 'failed'] as const) {
      expect(decideWorkflow({ status, protocol: 'http', query_prepared: 'http://svc/resume', custom_data: custom('t', '') })).toEqual({
        kind: 'finished',
      });
    }
  });

  it('waits when nothing can resume the workflow: no callback, or custom_data without a name', () => {
    expect(decideWorkflow({ status: 'prepared', protocol: 'http', query_prepared: '', custom_data: custom('t', '') })).toMatchObject({
      kind: 'wait',
    });
    expect(decideWorkflow({ status: 'prepared', protocol: 'http', query_prepared: 'http://svc/r', custom_data: '{}' })).toMatchObject({
      kind: 'wait',
    });
  });
});

describe('firstResumeIn (DTM’s first cron interval)', () => {
  it('is retry_interval when given', () => expect(firstResumeIn({ retry_interval: 4, timeout_to_fail: 2 }, 10)).toBe(4));
  it('is timeout_to_fail when shorter than the configured interval', () => expect(firstResumeIn({ timeout_to_fail: 3 }, 10)).toBe(3));
  it('is the configured interval otherwise', () => {
    expect(firstResumeIn({ timeout_to_fail: 30 }, 10)).toBe(10);
    expect(firstResumeIn({}, 10)).toBe(10);
  });
});
