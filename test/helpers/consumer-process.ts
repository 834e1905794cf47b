/**
 * A consumer process for crash tests: `consume()` writing one effect row per message in the
 * handler's transaction (the table of test/conformance-suite.ts), which blocks forever on the
 * message whose payload has `i === blockOn`, so that the test can SIGKILL it there: inside the
 * handler's transaction (`block: "in-transaction"`), or once that transaction has committed but
 * before the message is acknowledged (`block: "after-commit"`). It prints one JSON line per handler
 * call (`{"arrival": …}`), then `{"blocking": id}`.
 * Usage: node consumer-process.js '<json: { source, dbUrl, consumerName, dest, blockOn, block }>'
 */
import pg from 'pg';
import { consume, type ConsumeSource } from '../../sdk/index.js';

const config = JSON.parse(process.argv[2] ?? '{}') as {
  source: ConsumeSource;
  dbUrl: string;
  consumerName: string;
  dest: string;
  blockOn: number;
  block: 'in-transaction' | 'after-commit';
};
const pool = new pg.Pool({ connectionString: config.dbUrl });
const say = (line: unknown) => process.stdout.write(`${JSON.stringify(line)}\n`);

await consume<pg.PoolClient>(
  config.source,
  async ({ id, value, tx }) => {
    const payload = JSON.parse(value) as { i: number; key: string };
    say({ arrival: { id, key: payload.key, i: payload.i } });
    await tx.query('insert into effects (dest, message_id, key, i) values ($1, $2, $3, $4)', [config.dest, id, payload.key, payload.i]);
    if (payload.i !== config.blockOn) return;
    if (config.block === 'in-transaction') {
      say({ blocking: id });
      await new Promise(() => {}); // until SIGKILL
    }
    // The SDK commits with this client's query('commit'): let it commit, then never return (no ack).
    const query = tx.query.bind(tx) as (text: unknown, ...rest: unknown[]) => Promise<unknown>;
    tx.query = (async (text: unknown, ...rest: unknown[]) => {
      const result = await query(text, ...rest);
      if (typeof text === 'string' && text.toLowerCase() === 'commit') {
        say({ blocking: id });
        await new Promise(() => {}); // until SIGKILL
      }
      return result;
    }) as typeof tx.query;
  },
  { db: pool, consumerName: config.consumerName, retry: { attempts: 3, base: 0.01, cap: 0.05 } },
);
say({ started: true });
