/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, e.g. CONCORD_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=…") as markdown: self time by group (our code, fastify/zod, pg, JSON, undici,
 * kafkajs, GC…) and by function, in % of the busy (non-idle) time. With a message count it also
 * prints CPU µs per message of the profiled process.
 *
 *   node dist/bench/profile-summary.js <file.cpuprofile> [messages] [top]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** The first group whose pattern matches a frame's URL (or name, for V8's own entries). */
const groups: [string, RegExp][] = [
  ['GC', /^\(garbage collector\)$/],
  ['idle', /^\(idle\)$/],
  ['V8/program', /^\(program\)$/],
  ['JSON', /^JSON\.|^(parse|stringify)$/],
  [
    'fastify/zod validation',
    /node_modules\/(fastify|@fastify|fastify-type-provider-zod|zod|find-my-way|avvio|light-my-request|fast-json-stringify|secure-json-parse|ajv)/,
  ],
  ['pg protocol', /node_modules\/(pg|pg-protocol|pg-pool|pg-types|postgres-array|pg-connection-string|buffer-writer|packet-reader)\//],
  ['drizzle (SQL building)', /node_modules\/drizzle-orm/],
  ['undici (HTTP client)', /node_modules\/undici|node:internal\/deps\/undici/],
  ['kafkajs', /node_modules\/kafkajs/],
  ['amqplib', /node_modules\/amqplib/],
  ['pino (logging)', /node_modules\/(pino|sonic-boom|thread-stream)/],
  ['prom-client (metrics)', /node_modules\/(prom-client|tdigest|bintrees)/],
  ['opentelemetry', /node_modules\/@opentelemetry/],
  ['other node_modules', /node_modules\//],
  ['ours: engine', /\/coordinator\/engine\//],
  ['ours: store', /\/coordinator\/store\//],
  ['ours: server', /\/coordinator\/server\//],
  ['ours: relay', /\/relay\//],
  ['ours: schemas', /\/schemas\//],
  ['ours: other', /\/dist\//],
  ['node: http/net/stream', /node:(internal\/)?(http|_http|net|stream|streams|internal\/streams|tls|dns)/],
  ['node: other', /^node:/],
  ['native/builtin', /^$/],
];

function groupOf(frame: ProfileNode['callFrame']): string {
  const key = frame.url === '' ? frame.functionName : frame.url;
  for (const [name, pattern] of groups) if (pattern.test(key) || pattern.test(frame.url)) return name;
  return 'native/builtin';
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const dist = url.indexOf('/dist/');
  return dist >= 0 ? url.slice(dist + 1) : url;
}

export function summarise(profile: Profile, messages: number | undefined, top: number): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to the sample that ends the interval.
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byGroup = new Map<string, number>();
  const byFunction = new Map<string, { us: number; group: string }>();
  let busy = 0;
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    const group = groupOf(frame);
    byGroup.set(group, (byGroup.get(group) ?? 0) + us);
    if (group === 'idle') continue;
    busy += us;
    const name = `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
    const entry = byFunction.get(name) ?? { us: 0, group };
    entry.us += us;
    byFunction.set(name, entry);
  }
  const pct = (us: number) => ((100 * us) / busy).toFixed(1);
  const out: string[] = [];
  const wall = (profile.endTime - profile.startTime) / 1e6;
  out.push(
    `busy ${(busy / 1e6).toFixed(2)} s of ${wall.toFixed(1)} s profiled` +
      (messages ? `; ${(busy / messages).toFixed(0)} µs per message (${messages} messages)` : ''),
  );
  out.push('', '| group | self % of busy |' + (messages ? ' µs per message |' : ''), '| --- | --- |' + (messages ? ' --- |' : ''));
  for (const [group, us] of [...byGroup].filter(([g]) => g !== 'idle').sort((a, b) => b[1] - a[1])) {
    out.push(`| ${group} | ${pct(us)} |` + (messages ? ` ${(us / messages).toFixed(0)} |` : ''));
  }
  out.push('', '| function | group | self % of busy |', '| --- | --- | --- |');
  for (const [name, { us, group }] of [...byFunction].sort((a, b) => b[1].us - a[1].us).slice(0, top)) {
    out.push(`| ${name.replace(/\|/g, '\\|')} | ${group} | ${pct(us)} |`);
  }
  return out.join('\n');
}

const [file, messages, top] = process.argv.slice(2);
if (file === undefined) {
  process.stderr.write('usage: profile-summary <file.cpuprofile> [messages] [top]\n');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
process.stdout.write(summarise(profile, messages ? Number(messages) : undefined, top ? Number(top) : 25) + '\n');
