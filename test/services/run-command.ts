import { spawn } from 'node:child_process';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user (only possible as root). */
  uid?: number;
  gid?: number;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  output: string;
}

/** Runs a command to completion and collects stdout and stderr together. Never throws for a non-zero exit. */
export function runCommand(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      uid: options.uid,
      gid: options.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** Like runCommand, but throws an error naming the command and quoting the end of its output when it fails. */
export async function runChecked(command: string, args: string[], options: RunOptions = {}): Promise<string> {
  let result: RunResult;
  try {
    result = await runCommand(command, args, options);
  } catch (cause) {
    throw new Error(`could not run ${command}: ${(cause as Error).message}`, { cause });
  }
  if (result.code !== 0) {
    const how = result.code === null ? 'was killed (timeout?)' : `exited with code ${result.code}`;
    throw new Error(`${[command, ...args].join(' ')} ${how}:\n${tail(result.output)}`);
  }
  return result.output;
}

/** The last lines of a command's output, for error messages. */
export function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
