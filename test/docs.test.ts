/** Generated docs stay in step with their sources, and every error code is documented. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { renderConfigurationDoc, renderErrorsDoc, renderOpenApi } from '../scripts/generate-docs.js';
import { errorCodes } from '../schemas/errors.js';
import { loadConfig } from '../schemas/config.js';

const read = (path: string) => readFile(new URL(`../${path}`, import.meta.url), 'utf8');

describe('generated documentation', () => {
  it('documents every error code with its status', async () => {
    const page = await read('docs/errors.md');
    for (const [code, { status }] of Object.entries(errorCodes)) expect(page).toContain(`| \`${code}\` | ${status} |`);
    expect(page).toBe(renderErrorsDoc());
  });

  it('has docs/configuration.md and docs/openapi.json up to date (npm run generate)', async () => {
    expect(await read('docs/configuration.md')).toBe(renderConfigurationDoc());
    expect(await read('docs/openapi.json')).toBe(await renderOpenApi());
  });
});

describe('configuration', () => {
  it('applies defaults, then environment, then flags, and freezes the result', () => {
    const config = loadConfig({ env: { CONCORD_PORT: '4000', CONCORD_RETRY_INTERVAL: '2' }, overrides: { port: '5000' } });
    expect(config).toMatchObject({ port: 5000, retryInterval: 2, store: './concord-data', requestTimeout: 3 });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('names the bad key, its flag and its variable', () => {
    expect(() => loadConfig({ env: { CONCORD_PORT: 'ninety' } })).toThrow(/port \(--port, CONCORD_PORT\)/);
    expect(() => loadConfig({ env: { CONCORD_REQUEST_TIMEOUT: '-1' } })).toThrow(
      /requestTimeout \(--request-timeout, CONCORD_REQUEST_TIMEOUT\)/,
    );
  });
});
