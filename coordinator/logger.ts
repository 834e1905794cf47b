/**
 * The coordinator's root logger: JSON lines for log collectors, or pino-pretty's readable lines
 * when a person watches a terminal (logFormat auto: stdout is a TTY). Children carry the context:
 * `component`, and on everything about one transaction its `gid` and `trans_type`.
 */
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from '../schemas/config.js';

/** `destination` replaces stdout (JSON lines), e.g. for a coordinator run inside a test process. */
export async function createLogger(config: Pick<Config, 'logLevel' | 'logFormat'>, destination?: DestinationStream): Promise<Logger> {
  const options: LoggerOptions = { level: config.logLevel, redact: ['*.payload', '*.data', 'req.headers.authorization'] };
  if (destination) return pino(options, destination);
  const pretty = config.logFormat === 'pretty' || (config.logFormat === 'auto' && process.stdout.isTTY === true);
  if (!pretty) return pino(options);
  // Loaded only for a terminal; formatted in this thread (no transport worker), synchronously, so
  // the last lines before an exit are not lost.
  const { default: prettyStream } = await import('pino-pretty');
  return pino(
    options,
    prettyStream({
      colorize: process.stdout.isTTY === true,
      sync: true,
      singleLine: true,
      ignore: 'pid,hostname',
      translateTime: 'SYS:HH:MM:ss.l',
    }),
  );
}
