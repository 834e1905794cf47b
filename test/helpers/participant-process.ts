/**
 * Saga participants in a child process, for SIGKILL tests: prints `{"command": …}` when a handler
 * starts and `{"started": true}` once consuming; with `blockOn` it hangs inside that handler's
 * transaction until killed.
 * Usage: node participant-process.js '<json: StepParticipantsOptions without onCommand>'
 */
import { startStepParticipants, type StepParticipantsOptions } from './step-participants.js';

const options = JSON.parse(process.argv[2] ?? '{}') as StepParticipantsOptions;
const say = (line: unknown) => process.stdout.write(`${JSON.stringify(line)}\n`);
await startStepParticipants({ ...options, onCommand: (command) => say({ command }) });
say({ started: true });
