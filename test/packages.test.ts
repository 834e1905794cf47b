/**
 * The published packages as a user gets them: `npm pack` of each workspace, installed from the
 * tarballs into scratch projects. An operator's project runs `npx concord start` on the embedded
 * store; a service's project, with `@concord/sdk` alone, sends a two-phase message to an HTTP branch.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { builtinModules } from 'node:module';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from './helpers/coordinator.js';

const root = new URL('../', import.meta.url).pathname;
const run = promisify(execFile);
/** npm as a user runs it: none of the variables `npm test` passes to its scripts. */
const userEnv = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^(npm_|CONCORD_)/i.test(key)));
const npm = (cwd: string, ...args: string[]) => run('npm', args, { cwd, env: userEnv, maxBuffer: 16 * 1024 * 1024 });
/** The registry is reachable, but its packages are in npm's cache already: no need to ask for every one. */
const install = (cwd: string, ...tarballs: string[]) => npm(cwd, 'install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs);

let scratch: string;
let operator: string;
let service: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'concord-packages-'));
  const packs = join(scratch, 'packs');
  [operator, service] = [join(scratch, 'operator'), join(scratch, 'service')];
  for (const dir of [packs, operator, service]) await mkdir(dir);
  // prepack compiles each package (and adds the coordinator's assets from the root build).
  await run('npm', ['pack', '--workspace', 'sdk', '--workspace', 'coordinator', '--pack-destination', packs], { cwd: root, env: userEnv });
  const tarballs = await readdir(packs);
  const tarball = (prefix: string) =>
    join(
      packs,
      tarballs.find((name) => name.startsWith(prefix))!,
    );
  for (const dir of [operator, service]) await writeFile(join(dir, 'package.json'), JSON.stringify({ private: true, type: 'module' }));
  await Promise.all([install(operator, tarball('concord-coordinator-')), install(service, tarball('concord-sdk-'))]);
}, 600_000);

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Static imports and re-exports (whole statements, as tsc emits them), import(), require() and createRequire(…)(): the specifier. */
const importStatements =
  /^(?:import|export)\s[^;]*?\bfrom\s*['"]([^'"]+)['"];|^import\s*['"]([^'"]+)['"];|\b(?:import|require|createRequire\([^)]*\))\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** Every package installed under `dir`, by name. */
async function installed(dir: string): Promise<Set<string>> {
  const { stdout } = await npm(dir, 'ls', '--all', '--parseable');
  return new Set(stdout.split('\n').map((path) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length)));
}

describe('packages', () => {
  it('installs @concord/sdk without the coordinator, its store, its server, its metrics or any broker client', async () => {
    const names = await installed(service);
    expect(names).toContain('@concord/sdk');
    for (const name of [
      '@concord/coordinator',
      '@electric-sql/pglite',
      'fastify',
      'prom-client',
      'kafkajs',
      'amqplib',
      'pg',
      'drizzle-orm',
    ]) {
      expect(names, name).not.toContain(name);
    }
    // Importing it needs none of them; a call that needs one names it.
    const script = [
      "import { ensureBarrierTable } from '@concord/sdk';",
      'const db = { execute: async () => ({ rows: [] }), transaction: (fn) => fn(db) };',
      'await ensureBarrierTable(db).catch((err) => console.log(err.message));',
    ].join('\n');
    const { stdout } = await run(process.execPath, ['--input-type=module', '--eval', script], { cwd: service, env: userEnv });
    expect(stdout.trim()).toBe('this needs drizzle-orm, an optional peer dependency of @concord/sdk: npm install drizzle-orm');
  });

  it("type-checks a TypeScript service against @concord/sdk's declarations", async () => {
    const compilerOptions = { module: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true, types: [] };
    await writeFile(join(service, 'tsconfig.json'), JSON.stringify({ compilerOptions, include: ['*.ts'] }));
    const tsc = (source: string) =>
      writeFile(join(service, 'typed.ts'), source).then(() =>
        run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: service, env: userEnv }),
      );
    const valid = [
      "import { Msg, isConcordError, type SqlExecutor } from '@concord/sdk';",
      "const msg: Msg = new Msg('http://127.0.0.1:36789/api/dtmsvr', 'g-1', { waitResult: true }).add('http://bank/in', { amount: 30 });",
      'export const gid: string = msg.gid;',
      'export const check = (err: unknown): boolean => isConcordError(err);',
      'export type Executor = SqlExecutor;',
    ].join('\n');
    await tsc(valid);
    // The declarations are read, not taken as any: a wrong option is refused.
    await expect(tsc(valid.replace('waitResult: true', "waitResult: 'yes'"))).rejects.toMatchObject({
      stdout: expect.stringContaining('typed.ts(2,'),
    });
  });

  it('is the name the documentation tells services to import', async () => {
    const markdown = async (dir: string) =>
      (await readdir(join(root, dir), { recursive: true })).filter((name) => name.endsWith('.md')).map((name) => join(dir, name));
    const pages = ['README.md', ...(await markdown('docs')), ...(await markdown('examples'))];
    const stale: string[] = [];
    for (const page of pages) if (/['"`]concord\/sdk['"`]/.test(await readFile(join(root, page), 'utf8'))) stale.push(page);
    expect(stale, "import '@concord/sdk', the SDK package's name").toEqual([]);
  });

  it('declares every package a published file imports', async () => {
    const builtins = new Set(builtinModules);
    for (const dir of [join(service, 'node_modules/@concord/sdk'), join(operator, 'node_modules/@concord/coordinator')]) {
      const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
      const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
      // The admin UI's browser modules load their vendored copies, not packages.
      const files = (await readdir(join(dir, 'dist'), { recursive: true })).filter(
        (file) => file.endsWith('.js') && !file.includes('admin-ui/'),
      );
      expect(files.length).toBeGreaterThan(10);
      const undeclared = new Set<string>();
      const seen = new Set<string>();
      for (const file of files) {
        const text = await readFile(join(dir, 'dist', file), 'utf8');
        for (const match of text.matchAll(importStatements)) {
          const specifier = (match[1] ?? match[2] ?? match[3])!;
          if (specifier.startsWith('.') || specifier.startsWith('node:') || builtins.has(specifier)) continue;
          const name = specifier
            .split('/')
            .slice(0, specifier.startsWith('@') ? 2 : 1)
            .join('/');
          seen.add(name);
          if (!declared.has(name)) undeclared.add(`${file}: ${name}`);
        }
      }
      expect([...undeclared], `${dir}/package.json`).toEqual([]);
      // Static, dynamic and lazily loaded imports are all seen.
      expect([...seen]).toEqual(
        expect.arrayContaining(dir.endsWith('sdk') ? ['zod', 'kafkajs', 'drizzle-orm'] : ['zod', 'fastify', 'mysql2']),
      );
    }
    // Neither ships the repository's tools.
    for (const dir of [join(service, 'node_modules/@concord/sdk/dist'), join(operator, 'node_modules/@concord/coordinator/dist')]) {
      expect((await readdir(dir)).filter((name) => ['bench', 'test', 'examples', 'scripts'].includes(name))).toEqual([]);
    }
  });

  it('runs `npx concord start` from a fresh directory, and a service on the SDK alone sends it a message', async () => {
    const got: { path: string; body: string }[] = [];
    const branch: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        got.push({ path: req.url ?? '', body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"dtm_result":"SUCCESS"}');
      });
    });
    branch.listen(0, '127.0.0.1');
    await once(branch, 'listening');
    const branchUrl = `http://127.0.0.1:${(branch.address() as { port: number }).port}`;
    const [port, grpcPort] = [await freePort(), await freePort()];
    let output = '';
    // Its own process group: npx runs the bin in a shell, and the whole group is stopped at the end.
    const coordinator: ChildProcess = spawn('npx', ['concord', 'start'], {
      cwd: operator,
      // The gRPC API on a port of its own too: other coordinators may hold the default, and it loads the shipped .proto.
      env: { ...userEnv, CONCORD_PORT: String(port), CONCORD_GRPC_PORT: String(grpcPort), CONCORD_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    coordinator.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    coordinator.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const dtm = `http://127.0.0.1:${port}/api/dtmsvr`;
      // The package's own version, read from its package.json.
      const { stdout: version } = await run('npx', ['concord', '--version'], { cwd: operator, env: userEnv });
      expect(version.trim()).toBe(JSON.parse(await readFile(join(root, 'coordinator/package.json'), 'utf8')).version);
      // Fails at once, with its output, if the coordinator exits instead of starting.
      const exited = once(coordinator, 'exit').then(() => Promise.reject(new Error(`npx concord start exited: ${output}`)));
      exited.catch(() => undefined);
      await Promise.race([
        exited,
        vi.waitFor(async () => expect((await fetch(`http://127.0.0.1:${port}/api/health`)).status).toBe(200), {
          timeout: 60_000,
          interval: 200,
        }),
      ]);
      // The gRPC API listens: its modules and .proto came with the package.
      const socket = connect(grpcPort, '127.0.0.1');
      await once(socket, 'connect');
      socket.destroy();
      const script = [
        "import { Msg } from '@concord/sdk';",
        'const [dtm, branch, gid] = process.argv.slice(2);',
        "const msg = new Msg(dtm, gid).add(`${branch}/paid`, { order: 'o-1' });",
        'await msg.prepare(`${branch}/query-prepared`);',
        'await msg.submit();',
      ].join('\n');
      await writeFile(join(service, 'send.js'), script);
      const gid = `packed-${Date.now()}`;
      await run(process.execPath, ['send.js', dtm, branchUrl, gid], { cwd: service, env: userEnv });
      await vi.waitFor(() => expect(got).toContainEqual({ path: expect.stringContaining(`/paid?`) as string, body: '{"order":"o-1"}' }), {
        timeout: 30_000,
        interval: 100,
      });
      expect(got.find((call) => call.path.startsWith('/paid'))!.path).toContain(`gid=${gid}`);
      // The embedded store, where the operator ran it, made from the template shipped for the PGlite installed with it.
      expect(await readdir(operator)).toContain('concord-data');
      const installed = join(operator, 'node_modules');
      const pglite = JSON.parse(await readFile(join(installed, '@electric-sql/pglite/package.json'), 'utf8')).version as string;
      const templates = await readdir(join(installed, '@concord/coordinator/dist/coordinator/store'));
      expect(templates.filter((name) => name.endsWith('.tgz'))).toEqual([expect.stringMatching(new RegExp(`^pglite-${pglite}-`))]);
    } finally {
      // npx exits before the coordinator it started has let go of its store: wait for the whole group.
      const group = -coordinator.pid!;
      const alive = () => {
        try {
          process.kill(group, 0);
          return true;
        } catch {
          return false;
        }
      };
      if (alive()) process.kill(group, 'SIGTERM');
      await vi.waitFor(() => expect(alive()).toBe(false), { timeout: 30_000, interval: 100 });
      branch.close();
    }
  }, 180_000);
});
