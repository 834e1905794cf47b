/**
 * Serves the admin UI (docs/admin-ui.md) at /admin/: static files that `npm run build` put in
 * dist/coordinator/admin-ui (scripts/copy-admin-ui.ts), read once at start. The files are open, as
 * they hold no data; every call the page makes asks for an operator token.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { ConcordError } from '../../schemas/errors.js';

const types: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

export const adminUiFolder = fileURLToPath(new URL('../admin-ui/', import.meta.url));

async function loadFiles(folder: string): Promise<Map<string, { type: string; body: Buffer }>> {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    const type = types[extname(entry.name)];
    if (!entry.isFile() || !type) continue;
    const path = join(entry.parentPath, entry.name);
    files.set(relative(folder, path).split(sep).join('/'), { type, body: await readFile(path) });
  }
  return files;
}

export async function adminUi(app: FastifyInstance): Promise<void> {
  // A fixed map of the shipped files: no path from the URL ever reaches the file system.
  const files = await loadFiles(adminUiFolder).catch(() => new Map<string, { type: string; body: Buffer }>());
  // The page's one inline script, its import map, is allowed by its hash; any other inline script is not.
  const inline = [...(files.get('index.html')?.body.toString() ?? '').matchAll(/<script[^>]*>([\s\S]*?)<\/script>/g)]
    .map((m) => m[1] ?? '')
    .filter((text) => text.trim() !== '')
    .map((text) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`);
  const policy = `default-src 'self'; script-src 'self' ${inline.join(' ')}; frame-ancestors 'none'`;
  const open = { config: { access: 'open' as const }, schema: { hide: true } };
  app.get('/admin', open, async (_request, reply) => reply.redirect('admin/'));
  app.get<{ Params: { '*': string } }>('/admin/*', open, async (request, reply) => {
    const file = files.get(request.params['*'] || 'index.html');
    if (!file) throw new ConcordError('ROUTE_NOT_FOUND', `no admin UI file ${request.params['*']}`);
    // The page keeps the operator token in sessionStorage: no framing, no foreign scripts.
    return reply
      .header('content-security-policy', policy)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-cache')
      .type(file.type)
      .send(file.body);
  });
}
