/**
 * HTTP publisher: calls a branch the way DTM does. The DTM parameters are merged into the URL's
 * own query; the method is POST when there is a payload (or the delivery asks for POST), GET
 * otherwise; the answer is read with DTM's rules (classifyDtmAnswer).
 */
import { Agent, request } from 'undici';
import { classifyDtmAnswer } from '../schemas/dtm.js';
import { readAnswerPrefix } from './answer.js';
import { DestinationPolicy } from './destination-policy.js';
import type { Delivery, DeliveryResult, Publisher } from './publisher.js';

const maxDetail = 500;

export interface HttpPublisherOptions {
  connections?: number;
  /** Bytes of an answer kept to classify it and describe it (config answerBytes); the rest is discarded. */
  answerBytes?: number;
  /** Which hosts and addresses may be called; by default link-local and cloud metadata are refused. */
  destinations?: DestinationPolicy;
}

export function createHttpPublisher(options: HttpPublisherOptions = {}): Publisher {
  const answerBytes = options.answerBytes ?? 65_536;
  const policy = options.destinations ?? new DestinationPolicy({ allow: [], deny: [] });
  // Keep-alive connections per origin: branch services are few and called often. Every new
  // connection resolves its host through the policy.
  const agent = new Agent({
    connections: options.connections ?? 128,
    keepAliveTimeout: 30_000,
    pipelining: 1,
    connect: { lookup: policy.lookup },
  });
  // WHATWG URL parsing turns every spelling of an IP (0x7f000001, 2130706433, 127.1) into the canonical one.
  const judge = (url: string) => {
    if (!URL.canParse(url)) return `"${url}" is not a valid URL`;
    return policy.hostProblem(new URL(url).hostname);
  };
  // Branch URLs are few and calls many, and the policy never changes: each URL is judged once
  // (parsing it and matching its address cost more than the rest of a publish's own work).
  const verdicts = new Map<string, string | undefined>();
  const problem = (url: string): string | undefined => {
    if (verdicts.has(url)) return verdicts.get(url);
    if (verdicts.size >= 10_000) verdicts.clear();
    const verdict = judge(url);
    verdicts.set(url, verdict);
    return verdict;
  };
  return {
    schemes: ['http', 'https'],
    problem,
    async publish(delivery: Delivery): Promise<DeliveryResult> {
      // Stored before the policy was tightened: refused here, as an error the retry policy handles.
      const refused = problem(delivery.url);
      if (refused) return { outcome: 'ERROR', detail: refused };
      const url = new URL(delivery.url);
      for (const [key, value] of Object.entries(delivery.params)) url.searchParams.set(key, value);
      const empty = delivery.payload.length === 0;
      const post = !empty || delivery.post === true;
      // One deadline for connecting, the headers and the whole body: bodyTimeout alone only limits the gap between chunks.
      const signal = AbortSignal.timeout(delivery.timeoutMs);
      try {
        const res = await request(url, {
          dispatcher: agent,
          method: post ? 'POST' : 'GET',
          // An empty POST says no content type: servers such as Fastify refuse an empty JSON body.
          headers: post && empty ? delivery.headers : { 'content-type': 'application/json', ...delivery.headers },
          body: post ? delivery.payload : undefined,
          headersTimeout: delivery.timeoutMs,
          bodyTimeout: delivery.timeoutMs,
          signal,
        });
        const body = await readAnswerPrefix(res.body, answerBytes, signal);
        const outcome = classifyDtmAnswer(res.statusCode, body);
        return { outcome, detail: `HTTP ${res.statusCode} ${body.slice(0, maxDetail)}`.trim() };
      } catch (err) {
        return { outcome: 'ERROR', detail: describe(err) };
      }
    },
    close: () => agent.close(),
  };
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return `${err.name === 'TimeoutError' ? 'timeout' : (code ?? err.name)}: ${err.message}`.slice(0, maxDetail);
  }
  return String(err).slice(0, maxDetail);
}
