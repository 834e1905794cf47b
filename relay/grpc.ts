/**
 * gRPC publisher: calls a branch of DTM's gRPC form (host:port/package.Service/Method) the way DTM
 * does: one unary call whose request is the stored bytes as they are (a pass-through codec, like
 * dtmgimp's raw codec, so no .proto is needed), DTM's coordinates as dtm-* metadata beside the
 * branch headers, the call's timeout as its deadline, and the outcome read from the status code
 * (classifyGrpcStatus). One channel per host:port, kept until close(). @grpc/grpc-js is loaded
 * on the first gRPC call, so coordinators without gRPC branches do not carry it.
 */
import type { Client, Metadata, ServiceError } from '@grpc/grpc-js';
import { classifyGrpcStatus } from '../schemas/dtm.js';
import { grpcMetadataProblem, parseGrpcTarget, type GrpcTarget } from '../schemas/grpc-target.js';
import { asBytes } from '../schemas/payload-bytes.js';
import { DestinationPolicy } from './destination-policy.js';
import type { Delivery, DeliveryResult, Publisher } from './publisher.js';

const maxDetail = 500;

type Grpc = typeof import('@grpc/grpc-js');
let loaded: Promise<Grpc> | undefined;
const loadGrpc = () => (loaded ??= import('@grpc/grpc-js'));

export interface GrpcPublisherOptions {
  /** Which hosts and addresses may be called; by default link-local and cloud metadata are refused. */
  destinations?: DestinationPolicy;
}

export function createGrpcPublisher(options: GrpcPublisherOptions = {}): Publisher {
  const policy = options.destinations ?? new DestinationPolicy({ allow: [], deny: [] });
  const channels = new Map<string, Promise<Client>>();

  const problem = (url: string): string | undefined => {
    const target = parseGrpcTarget(url);
    return typeof target === 'string' ? target : policy.hostProblem(target.host);
  };

  /**
   * The channel to a host:port. Its host is resolved once through the destination policy and the
   * channel dials that address (keeping host:port as the authority), so no later DNS answer can
   * point it elsewhere; a channel that lost its server is dropped and the next call resolves again.
   */
  const channel = (target: GrpcTarget): Promise<Client> => {
    let client = channels.get(target.authority);
    if (!client) {
      client = (async () => {
        const grpc = await loadGrpc();
        const { address, family } = await resolve(policy, target.host);
        const dialled = `${family === 6 ? `[${address}]` : address}:${target.port}`;
        return new grpc.Client(dialled, grpc.credentials.createInsecure(), { 'grpc.default_authority': target.authority });
      })();
      channels.set(target.authority, client);
      client.catch(() => channels.delete(target.authority));
    }
    return client;
  };

  const drop = (target: GrpcTarget, client: Client) => {
    void channels.get(target.authority)?.then((current) => {
      if (current !== client) return;
      channels.delete(target.authority);
      client.close();
    });
  };

  return {
    schemes: ['grpc'],
    problem,
    async publish(delivery: Delivery): Promise<DeliveryResult> {
      const target = parseGrpcTarget(delivery.url);
      if (typeof target === 'string') return { outcome: 'ERROR', detail: target };
      // Stored before the policy was tightened: refused here, as an error the retry policy handles.
      const refused = policy.hostProblem(target.host);
      if (refused) return { outcome: 'ERROR', detail: refused };
      const headersProblem = grpcMetadataProblem(delivery.headers);
      if (headersProblem) return { outcome: 'ERROR', detail: headersProblem };
      let client: Client;
      try {
        client = await channel(target);
      } catch (err) {
        return { outcome: 'ERROR', detail: describe(err) };
      }
      const grpc = await loadGrpc();
      const metadata = new grpc.Metadata();
      try {
        // DTM's names (dtmgimp.TransInfo2Ctx): dtm-gid, dtm-trans_type, dtm-branch_id, dtm-op.
        for (const [param, value] of Object.entries(delivery.params)) metadata.set(`dtm-${param}`, value);
        // DTM's coordinator sends dtm-dtm empty: the branch is not told where the coordinator is.
        if (delivery.params.gid !== undefined) metadata.set('dtm-dtm', '');
        for (const [name, value] of Object.entries(delivery.headers)) metadata.set(name, value);
      } catch (err) {
        // A value grpc-js refuses (a branch id registered with non-ASCII text): an error, never a crash.
        return { outcome: 'ERROR', detail: describe(err) };
      }
      const error = await unary(client, target.method, asBytes(delivery.payload), metadata, delivery.timeoutMs);
      if (!error) return { outcome: 'SUCCESS', detail: 'gRPC OK' };
      if (error.code === grpc.status.UNAVAILABLE && client.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY) {
        drop(target, client);
      }
      const outcome = classifyGrpcStatus(error.code, error.details);
      return { outcome, detail: `gRPC ${grpc.status[error.code] ?? error.code} ${error.details}`.trim().slice(0, maxDetail) };
    },
    async close() {
      const open = [...channels.values()];
      channels.clear();
      for (const client of await Promise.allSettled(open)) if (client.status === 'fulfilled') client.value.close();
    },
  };
}

/** One unary call with raw bytes both ways; resolves to its error, or undefined when it answered OK. */
function unary(client: Client, method: string, request: Buffer, metadata: Metadata, timeoutMs: number): Promise<ServiceError | undefined> {
  const raw = (bytes: Buffer) => bytes;
  return new Promise((resolve) => {
    client.makeUnaryRequest(method, raw, raw, request, metadata, { deadline: Date.now() + timeoutMs }, (err) => resolve(err ?? undefined));
  });
}

/** The host's first address, through the policy's lookup (which refuses denied names and addresses). */
function resolve(policy: DestinationPolicy, host: string): Promise<{ address: string; family: number }> {
  return new Promise((done, fail) => {
    policy.lookup(host, {}, (err, address, family) => {
      if (err) fail(err);
      else done({ address: address as string, family: family ?? 4 });
    });
  });
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return `${code ?? err.name}: ${err.message}`.slice(0, maxDetail);
  }
  return String(err).slice(0, maxDetail);
}
