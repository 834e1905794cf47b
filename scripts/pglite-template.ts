/**
 * Build step: makes the embedded store's data directory template (see coordinator/store/pglite-store.ts)
 * with PGlite's initdb and Concord's settings, packed as a .tgz beside the compiled store. Skipped
 * when the template for the installed PGlite version exists.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { execFileSync } from 'node:child_process';
import { applySettings, templatePath } from '../coordinator/store/pglite-store.js';

if (!existsSync(templatePath)) {
  const dir = await mkdtemp(join(tmpdir(), 'concord-pglite-template-'));
  try {
    const client = await PGlite.create(dir);
    await applySettings(client);
    await client.close();
    execFileSync('tar', ['-czf', templatePath, '-C', dir, ...(await readdir(dir))]);
    console.log(`wrote ${templatePath}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
