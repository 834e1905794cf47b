/**
 * Build step: copies the admin UI (coordinator/admin-ui: HTML, CSS, browser ES modules) and the
 * ES module builds of Preact and htm, vendored from node_modules, into dist/coordinator/admin-ui.
 * The browser loads them as they are: no bundler, so the shipped UI is the source you read.
 */
import { cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminUiFolder } from '../coordinator/server/admin-ui.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
// htm exports no package.json to resolve: the build runs where `npm ci` put node_modules.
const packageDir = (name: string) => join(root, 'node_modules', name);

await cp(join(root, 'coordinator/admin-ui'), adminUiFolder, { recursive: true });
const vendor = join(adminUiFolder, 'vendor');
await mkdir(vendor, { recursive: true });
const files: [string, string, string][] = [
  ['preact', 'dist/preact.mjs', 'preact.mjs'],
  ['preact', 'hooks/dist/hooks.mjs', 'hooks.mjs'],
  ['preact', 'LICENSE', 'preact.LICENSE.txt'],
  ['htm', 'dist/htm.mjs', 'htm.mjs'],
  ['htm', 'LICENSE', 'htm.LICENSE.txt'],
];
for (const [name, from, to] of files) await cp(join(packageDir(name), from), join(vendor, to));
