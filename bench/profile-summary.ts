/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, e.g. CONCORD_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=…") as markdown: self time by group (our code, fastify/zod, pg, JSON, undici,
 * kafkajs, GC…) and by function, in % of the busy (non-idle) time, one column per profile (before
 * and after a change, side by side).
 *
 *   node dist/bench/profile-summary.js [--top N] <file.cpuprofile>...
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

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
  // The write syscalls: on loopback the kernel delivers to the peer inside them, and a peer woken
  // there often preempts this process, so their samples are partly time spent not running.
  ['socket writes (syscall)', /^(writev|writeBuffer|writeUtf8String|writeLatin1String|writeAsciiString)$/],
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

interface Summary {
  busyUs: number;
  wallS: number;
  byGroup: Map<string, number>;
  byFunction: Map<string, { us: number; group: string }>;
}

export function summarise(profile: Profile): Summary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to the sample that ends the interval.
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byGroup = new Map<string, number>();
  const byFunction = new Map<string, { us: number; group: string }>();
  let busyUs = 0;
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    const group = groupOf(frame);
    if (group === 'idle') continue;
    byGroup.set(group, (byGroup.get(group) ?? 0) + us);
    busyUs += us;
    const name = `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
    const entry = byFunction.get(name) ?? { us: 0, group };
    entry.us += us;
    byFunction.set(name, entry);
  }
  return { busyUs, wallS: (profile.endTime - profile.startTime) / 1e6, byGroup, byFunction };
}

/** Markdown: self time by group, then the top functions, in % of each profile's busy time, a column per profile. */
export function render(names: string[], summaries: Summary[], top: number): string {
  const pct = (s: Summary, us: number | undefined) => (us === undefined ? '–' : ((100 * us) / s.busyUs).toFixed(1));
  const rank = (get: (s: Summary) => Map<string, number>) => {
    const total = new Map<string, number>();
    for (const s of summaries) for (const [k, us] of get(s)) total.set(k, (total.get(k) ?? 0) + us / s.busyUs);
    return [...total].sort((a, b) => b[1] - a[1]).map(([k]) => k);
  };
  const head = (first: string) => [`| ${first} | ${names.join(' | ')} |`, `| --- |${names.map(() => ' --- |').join('')}`];
  const out = summaries.map((s, i) => `${names[i]}: busy ${(s.busyUs / 1e6).toFixed(2)} s of ${s.wallS.toFixed(1)} s profiled`);
  out.push('', ...head('group (self time, % of busy)'));
  for (const g of rank((s) => s.byGroup)) out.push(`| ${g} | ${summaries.map((s) => pct(s, s.byGroup.get(g))).join(' | ')} |`);
  const functions = (s: Summary) => new Map([...s.byFunction].map(([k, v]) => [k, v.us]));
  out.push('', ...head('function (self time, % of busy)'));
  for (const f of rank(functions).slice(0, top)) {
    out.push(`| ${f.replace(/\|/g, '\\|')} | ${summaries.map((s) => pct(s, s.byFunction.get(f)?.us)).join(' | ')} |`);
  }
  return out.join('\n');
}

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
if (args.length === 0) {
  process.stderr.write('usage: profile-summary [--top N] <file.cpuprofile>...\n');
  process.exit(2);
}
const summaries = args.map((file) => summarise(JSON.parse(readFileSync(file, 'utf8')) as Profile));
process.stdout.write(
  render(
    args.map((f) => basename(f)),
    summaries,
    top,
  ) + '\n',
);
