/**
 * Builds and runs the compatibility drivers: DTM's own Go client (test/compat/go)
 * and Python client (test/compat/python), each wrapped in a tiny CLI that drives
 * one two-phase message against a coordinator. See test/compat/README.md.
 *
 * Node built-ins only. Safe to call from several vitest workers at once: each
 * build or install goes to a private path first and is renamed into place.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the first ancestor of this file that holds test/compat/go/go.mod (works from dist/ too). */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'test', 'compat', 'go', 'go.mod'))) return dir;
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error('compat: cannot find the repository root (test/compat/go/go.mod) above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

export const REPO_ROOT = findRepoRoot();
export const GO_DIR = join(REPO_ROOT, 'test', 'compat', 'go');
export const GO_CLIENT_BIN = join(GO_DIR, 'compat-client');
export const PYTHON_DIR = join(REPO_ROOT, 'test', 'compat', 'python');
/** The Python driver script: run it as `runClient([await pythonWithDtmcli(), PYTHON_CLIENT_SCRIPT], args)`. */
export const PYTHON_CLIENT_SCRIPT = join(PYTHON_DIR, 'compat_client.py');
export const CACHE_DIR = join(REPO_ROOT, '.cache');

interface Exec {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after `timeoutMs`), with its output. */
export function exec(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            stderr += `\n[compat: killed after ${opts.timeoutMs} ms]`;
            child.kill('SIGKILL');
          }, opts.timeoutMs);
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`compat: cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function describe(cmd: string, args: string[], r: Exec): string {
  const status = r.signal ? `signal ${r.signal}` : `exit code ${r.code}`;
  return `\`${[cmd, ...args].join(' ')}\` failed with ${status}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

let goClient: Promise<string> | undefined;

/**
 * Builds the Go driver (`go build -o compat-client .` in test/compat/go) once per process
 * and returns the binary's path. Cold (empty module and build caches) this takes about a
 * minute on a 2-core machine, so give the calling hook a timeout of a few minutes.
 */
export function buildGoClient(): Promise<string> {
  goClient ??= doBuildGoClient();
  goClient.catch(() => (goClient = undefined)); // let a later call retry
  return goClient;
}

async function doBuildGoClient(): Promise<string> {
  await mkdir(CACHE_DIR, { recursive: true });
  // Build to a private file, then rename: another worker may be running or building the binary.
  const tmp = join(CACHE_DIR, `compat-client.${process.pid}.${Date.now()}`);
  const args = ['build', '-mod=mod', '-buildvcs=false', '-o', tmp, '.'];
  // GOTOOLCHAIN=local: never try to download another Go toolchain; GOFLAGS cleared so that
  // the flags above are the only ones (a user's GOFLAGS=-mod=vendor would break the build).
  const env = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '' };
  let r: Exec;
  try {
    r = await exec('go', args, { cwd: GO_DIR, env, timeoutMs: 600_000 });
  } catch (err) {
    throw new Error(`compat: the Go toolchain is needed to build ${GO_DIR}: ${(err as Error).message}`, { cause: err });
  }
  if (r.code !== 0) {
    await rm(tmp, { force: true });
    throw new Error(`compat: building the Go DTM client driver failed.\n${describe('go', args, r)}`);
  }
  await rename(tmp, GO_CLIENT_BIN);
  return GO_CLIENT_BIN;
}

const venvs = new Map<string, Promise<string>>();

/**
 * Returns the python binary of a venv (<repo>/.cache/venv-dtmcli) holding the packages of
 * test/compat/python/requirements.txt, creating it first when it is missing or was made from
 * other requirements. Once per process; a cold install takes about 10 s.
 */
export function pythonWithDtmcli(): Promise<string> {
  return pythonVenv('venv-dtmcli', join(PYTHON_DIR, 'requirements.txt'));
}

/**
 * The python binary of the venv <repo>/.cache/<name> holding the packages of `requirements`
 * (a pip requirements file), made first when it is missing or was made from other requirements.
 * Once per process and name.
 */
export function pythonVenv(name: string, requirements: string): Promise<string> {
  let venv = venvs.get(name);
  if (!venv) {
    venv = makeVenv(join(CACHE_DIR, name), requirements);
    venv.catch(() => venvs.delete(name)); // let a later call retry
    venvs.set(name, venv);
  }
  return venv;
}

const MARKER = 'concord-requirements.txt'; // copy of the requirements the venv was made from

async function makeVenv(dir: string, requirements: string): Promise<string> {
  const wanted = await readFile(requirements, 'utf8');
  const python = join(dir, 'bin', 'python');
  if (await venvMatches(dir, wanted)) return python;

  await mkdir(CACHE_DIR, { recursive: true });
  // Make the venv under a private name and rename it into place (only bin/python is used,
  // through `python -m pip`, so the venv does not mind being moved).
  const tmp = `${dir}.${process.pid}.${Date.now()}`;
  const pythonCmd = process.env.PYTHON ?? 'python3';
  try {
    const venvArgs = ['-m', 'venv', tmp];
    const v = await exec(pythonCmd, venvArgs, { timeoutMs: 120_000 });
    if (v.code !== 0) throw new Error(`compat: creating the Python venv failed.\n${describe(pythonCmd, venvArgs, v)}`);
    const tmpPython = join(tmp, 'bin', 'python');
    const pipArgs = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-r', requirements];
    const p = await exec(tmpPython, pipArgs, { timeoutMs: 600_000 });
    if (p.code !== 0) throw new Error(`compat: installing ${requirements} failed.\n${describe(tmpPython, pipArgs, p)}`);
    await writeFile(join(tmp, MARKER), wanted);

    if (await venvMatches(dir, wanted)) return python; // another worker finished first
    if (existsSync(dir)) {
      const old = `${dir}.old.${process.pid}.${Date.now()}`;
      await rename(dir, old).catch(() => undefined);
      await rm(old, { recursive: true, force: true });
    }
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Lost a race with another worker that renamed its own venv in: use that one if it fits.
      if (!(await venvMatches(dir, wanted))) throw err;
    }
    return python;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function venvMatches(dir: string, wanted: string): Promise<boolean> {
  try {
    return existsSync(join(dir, 'bin', 'python')) && (await readFile(join(dir, MARKER), 'utf8')) === wanted;
  } catch {
    return false;
  }
}

export interface ClientResult {
  /** True when the driver printed {"ok":true} as its last stdout line and exited 0. */
  ok: boolean;
  /** The driver's error text, or why its output could not be read. */
  error?: string;
  /** The gid printed by mode new-gid. */
  gid?: string;
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface RunClientOptions {
  /** Kill the driver after this long (default 60 s). */
  timeoutMs?: number;
  /** Extra environment variables, e.g. LOG_LEVEL=warn for the Go driver. */
  env?: Record<string, string>;
}

/**
 * Runs one driver invocation: `bin` is the command (the Go binary, or [python, PYTHON_CLIENT_SCRIPT]),
 * `args` the driver flags, e.g. ['-dtm', dtm, '-busi', busi, '-mode', 'prepare-submit', '-gid', gid].
 */
export async function runClient(bin: string[], args: string[], options: RunClientOptions = {}): Promise<ClientResult> {
  const [cmd, ...pre] = bin;
  if (cmd === undefined) throw new Error('compat: runClient needs a command');
  const r = await exec(cmd, [...pre, ...args], { env: { ...process.env, ...options.env }, timeoutMs: options.timeoutMs ?? 60_000 });
  const base = { stdout: r.stdout, stderr: r.stderr, code: r.code };
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: { ok?: unknown; error?: unknown; gid?: unknown };
  try {
    parsed = JSON.parse(last) as typeof parsed;
  } catch {
    return { ...base, ok: false, error: `compat: no result line from the driver.\n${describe(cmd, [...pre, ...args], r)}` };
  }
  const result: ClientResult = { ...base, ok: parsed.ok === true && r.code === 0 };
  if (typeof parsed.gid === 'string') result.gid = parsed.gid;
  if (typeof parsed.error === 'string') result.error = parsed.error;
  else if (!result.ok)
    result.error = `compat: driver reported ok=${String(parsed.ok)} with ${r.signal ? `signal ${r.signal}` : `exit code ${r.code}`}`;
  return result;
}
