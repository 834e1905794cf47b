/**
 * The import directions of docs/boundaries.md, checked by dependency-cruiser with the project's
 * .dependency-cruiser.cjs: the tree keeps them, and each rule refuses the import it is there for.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = new URL('../', import.meta.url).pathname.replace(/\/dist\/$/, '/');
const config = join(root, '.dependency-cruiser.cjs');
const depcruise = join(root, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');
const folders = ['coordinator', 'relay', 'sdk', 'schemas', 'bench', 'test', 'examples', 'scripts'];

/** The rules `paths` of `cwd` break, as "rule: from -> to". */
async function violationsIn(cwd: string, paths: string[]): Promise<string[]> {
  const args = [depcruise, ...paths, '--config', config, '--output-type', 'json'];
  const { stdout } = await promisify(execFile)(process.execPath, args, { cwd, maxBuffer: 64 * 1024 * 1024 });
  const result = JSON.parse(stdout) as { summary: { violations: { rule: { name: string }; from: string; to: string }[] } };
  return result.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`);
}

describe('boundaries', () => {
  it('the tree keeps the allowed import directions', async () => {
    expect(await violationsIn(root, folders)).toEqual([]);
  });

  it('each rule refuses the imports it is there for', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'concord-boundaries-'));
    try {
      const files: Record<string, string> = {
        'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true } }),
        'package.json': JSON.stringify({ type: 'module' }),
        'schemas/saga.ts': 'export const a = 1;\n',
        'coordinator/store/rows.ts': "import { a } from '../../schemas/saga.js';\nexport const b = a;\n",
        'coordinator/engine/pass.ts': "import { c } from '../server/routes.js';\nexport const d = c;\n",
        'coordinator/server/routes.ts': "import { b } from '../store/rows.js';\nexport const c = b;\n",
        'coordinator/scheduler.ts': "import { b } from './store/rows.js';\nexport const e = b;\n",
        'relay/replies.ts':
          "import { a } from '../schemas/saga.js';\nimport { d } from '../coordinator/engine/pass.js';\nexport const f = a + d;\n",
        'sdk/client.ts': "import { f } from '../relay/replies.js';\nimport { g } from '../test/helper.js';\nexport const h = f + g;\n",
        'test/helper.ts': 'export const g = 1;\n',
        'schemas/one.ts': "import { j } from './two.js';\nexport const i = 1 + j;\n",
        'schemas/two.ts': "import { i } from './one.js';\nexport const j = () => i;\n",
      };
      for (const [path, text] of Object.entries(files)) {
        await mkdir(dirname(join(dir, path)), { recursive: true });
        await writeFile(join(dir, path), text);
      }
      const violations = await violationsIn(dir, ['coordinator', 'relay', 'sdk', 'schemas', 'test']);
      expect(violations.sort()).toEqual(
        [
          'api-through-engine: coordinator/server/routes.ts -> coordinator/store/rows.ts',
          'engine-below-api: coordinator/engine/pass.ts -> coordinator/server/routes.ts',
          'jobs-through-engine: coordinator/scheduler.ts -> coordinator/store/rows.ts',
          'no-cycles: schemas/one.ts -> schemas/two.ts',
          'product-without-tools: sdk/client.ts -> test/helper.ts',
          'relay-knows-no-transaction-types: relay/replies.ts -> schemas/saga.ts',
          'relay-on-schemas: relay/replies.ts -> coordinator/engine/pass.ts',
          'sdk-on-schemas: sdk/client.ts -> relay/replies.ts',
          'sdk-on-schemas: sdk/client.ts -> test/helper.ts',
        ].sort(),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
