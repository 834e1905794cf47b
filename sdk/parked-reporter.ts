/**
 * Tells the coordinator what this consumer parked, and takes the redrives operators ask for in the
 * admin UI (docs/consumers.md#parked-messages-in-the-admin-ui). Each round sends the whole parked
 * store as of now (the oldest parkedReportLimit messages), so a round that fails loses nothing:
 * the next one says the same and more. It runs beside consumption and never holds it up; with the
 * coordinator unreachable, messages stay parked here and are reported once it answers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { parkedErrorChars, parkedIdMaxLength, parkedReportLimit, type ParkedReport } from '../schemas/consumer-parked.js';
import type { CoordinatorClient } from './coordinator-client.js';
import { parkedSnapshot } from './inbox.js';
import type { TransactionSource } from './sql-executor.js';

export interface ParkedReporterOptions {
  client: CoordinatorClient;
  db: TransactionSource;
  consumer: string;
  /** Milliseconds between rounds. */
  intervalMs: number;
  /** Runs the parked messages of these ids again (the consumer's redrive). */
  redrive: (ids: string[]) => Promise<number>;
  logger: Logger;
  /** Aborted when the consumer closes. */
  signal: AbortSignal;
}

export interface ParkedReporter {
  /** Starts a round now (a message was just parked). */
  nudge(): void;
  /** Resolves when the round in progress has ended, after the signal was aborted. */
  stopped: Promise<void>;
}

export function startParkedReporter(options: ParkedReporterOptions): ParkedReporter {
  const { client, db, consumer, logger, signal } = options;
  let wake = new AbortController();
  let failing = false;
  let skipped = 0;

  const round = async (): Promise<string[]> => {
    const snapshot = await parkedSnapshot(db, consumer, parkedReportLimit + 1);
    const listed = snapshot.messages.slice(0, parkedReportLimit);
    // An id the coordinator cannot keep is left out, and the report then counts as incomplete.
    const fitting = listed.filter((m) => m.id.length <= parkedIdMaxLength);
    if (fitting.length < listed.length && skipped !== listed.length - fitting.length) {
      skipped = listed.length - fitting.length;
      logger.warn({ skipped }, `parked messages with ids over ${parkedIdMaxLength} characters are not reported to the coordinator`);
    }
    const report: ParkedReport = {
      consumer,
      listedAt: snapshot.listedAt.toISOString(),
      complete: snapshot.messages.length <= parkedReportLimit && fitting.length === listed.length,
      parked: fitting.map((m) => ({
        messageId: m.id,
        source: m.source.slice(0, 1024),
        error: m.error.slice(0, parkedErrorChars),
        attempts: m.attempts,
        firstFailure: m.firstFailure.toISOString(),
        lastFailure: m.lastFailure.toISOString(),
      })),
    };
    return (await client.reportParked(report)).redrive;
  };

  const stopped = (async () => {
    // After a redrive, one more round at once tells the coordinator how it went.
    let reportOutcome = false;
    while (!signal.aborted) {
      let redrove = false;
      try {
        const redrive = await round();
        if (failing) logger.info('parked messages reported to the coordinator again');
        failing = false;
        if (redrive.length > 0 && !reportOutcome && !signal.aborted) {
          const succeeded = await options.redrive(redrive);
          logger.info({ asked: redrive.length, succeeded }, 'redrive asked by the coordinator');
          redrove = true;
        }
      } catch (err) {
        if (signal.aborted) break;
        // Once per outage at warn: a coordinator down for an hour is not 360 warnings.
        if (!failing)
          logger.warn({ err }, 'cannot report parked messages to the coordinator; they stay parked here and are reported later');
        failing = true;
      }
      reportOutcome = redrove;
      if (redrove) continue;
      await sleep(options.intervalMs, undefined, { signal: AbortSignal.any([signal, wake.signal]) }).catch(() => undefined);
      wake = new AbortController();
    }
  })();

  return { nudge: () => wake.abort(), stopped };
}
