/**
 * prepack of the coordinator package (coordinator/package.json), once tsc has compiled it into
 * coordinator/dist: adds what tsc does not emit, taken from the root build (`npm run build`): the
 * admin UI with its vendored modules, the embedded store's data directory template (the one of the
 * PGlite version the package pins), and the migrations.
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
await cp(join(root, 'schemas/db/migrations'), join(out, 'schemas/db/migrations'), { recursive: true });
