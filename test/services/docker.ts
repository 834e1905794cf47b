import { runCommand } from './run-command.js';

let answer: Promise<boolean> | undefined;

/** Whether a Docker engine answers `docker info`; asked once per process, however many services start. */
export function dockerAnswers(): Promise<boolean> {
  answer ??= runCommand('docker', ['info'], { timeoutMs: 5_000 }).then(
    (result) => result.code === 0,
    () => false,
  );
  return answer;
}
