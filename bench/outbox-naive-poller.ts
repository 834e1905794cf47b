/**
 * The baseline of the outbox bench: the hand-rolled poller teams write, one loop of
 * SELECT … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED, sendBatch with acks=all, DELETE, COMMIT,
 * each step waiting for the one before. Exits when the table is empty, printing its resource use.
 *
 * With a poll interval it never exits: an empty read waits that long and reads again (the steady
 * state of bench/outbox-latency.ts).
 *
 * node dist/bench/outbox-naive-poller.js <database url> <brokers> <table> [batch size] [poll ms]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';

const [url, brokers, table, batchArg, pollArg] = process.argv.slice(2) as [string, string, string, string | undefined, string | undefined];
const batch = Number(batchArg ?? 1000);
const pollMs = pollArg === undefined ? undefined : Number(pollArg);
const client = new pg.Client({ connectionString: url });
await client.connect();
const producer = new Kafka({ clientId: 'naive-poller', brokers: brokers.split(','), logLevel: logLevel.NOTHING }).producer({
  idempotent: true,
  maxInFlightRequests: 1,
});
await producer.connect();
let published = 0;
for (;;) {
  await client.query('begin');
  const { rows } = await client.query<{ id: string; topic: string; k: string; payload: string }>(
    `select id, topic, k, payload from ${table} order by id limit $1 for update skip locked`,
    [batch],
  );
  if (rows.length === 0) {
    await client.query('commit');
    if (pollMs === undefined) break;
    await sleep(pollMs);
    continue;
  }
  const byTopic = new Map<string, { key: string; value: string; headers: Record<string, string> }[]>();
  for (const r of rows)
    byTopic.set(r.topic, [
      ...(byTopic.get(r.topic) ?? []),
      { key: r.k, value: r.payload, headers: { 'message-id': `outbox:${table}:${r.id}` } },
    ]);
  await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
  await client.query(`delete from ${table} where id = any($1::bigint[])`, [rows.map((r) => r.id)]);
  await client.query('commit');
  published += rows.length;
}
await producer.disconnect();
await client.end();
const usage = process.resourceUsage();
console.log(
  `naive poller: done, published ${published}, peak RSS ${Math.round(usage.maxRSS / 1024)} MiB, CPU ${((usage.userCPUTime + usage.systemCPUTime) / 1e6).toFixed(2)} s`,
);
