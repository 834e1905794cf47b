/**
 * prepack of the coordinator package (coordinator/package.json), once tsc has compiled it into
 * coordinator/dist: adds what tsc does not emit, taken from the root build (`npm run build`) and the
 * sources: the admin UI with its vendored modules, the embedded store's data directory template (the
 * one of the PGlite version the package pins), and every file of schemas/ that is not TypeScript
 * (the migrations, and whatever else the coordinator reads at run time).
 */
import { cp } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminUiFolder } from '../coordinator/server/admin-ui.js';
import { templatePath } from '../coordinator/store/pglite-store.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const out = join(root, 'coordinator/dist');
await cp(adminUiFolder, join(out, 'coordinator/admin-ui'), { recursive: true });
await cp(templatePath, join(out, 'coordinator/store', basename(templatePath)));
await cp(join(root, 'schemas'), join(out, 'schemas'), { recursive: true, filter: (path) => !path.endsWith('.ts') });
