/** A real gRPC server (grpc-js) serving raw-bytes methods built with the SDK's adapter, on a free loopback port. */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { grpcBranch, grpcBranchService, type GrpcBranchHandler, type GrpcUnaryHandler } from '../../sdk/index.js';

export interface GrpcTestServer {
  /** host:port */
  address: string;
  /** DTM's gRPC branch URL of one method: host:port/service/method. */
  url(method: string): string;
  close(): Promise<void>;
}

export async function startGrpcServer(service: string, methods: Record<string, GrpcUnaryHandler>, port = 0): Promise<GrpcTestServer> {
  const server = new Server();
  const { definition, implementation } = grpcBranchService(service, methods);
  server.addService(definition, implementation);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `127.0.0.1:${bound}`;
  return {
    address,
    url: (method) => `${address}/${service}/${method}`,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

export interface Received {
  method: string;
  body: Buffer;
  metadata: Record<string, string>;
}

/** A test's branch service over gRPC: busi.Busi's methods record each call and answer as the gid's script says. */
export interface RecordingBusi {
  server: GrpcTestServer;
  received: Received[];
  /** Per gid, what `method`'s n-th call (from 1) throws; undefined answers OK. */
  script: Map<string, (method: string, n: number) => Error | undefined>;
  callsOf(gid: string, method?: string): Received[];
  close(): Promise<void>;
}

export const busiMethods = ['TransOut', 'TransOutRevert', 'TransIn', 'TransInRevert', 'Notify', 'Confirm', 'Cancel'];

export async function startRecordingBusi(port = 0): Promise<RecordingBusi> {
  const received: Received[] = [];
  const script = new Map<string, (method: string, n: number) => Error | undefined>();
  const callsOf = (gid: string, method?: string) =>
    received.filter((r) => r.metadata['dtm-gid'] === gid && (method === undefined || r.method === method));
  const recorded = (method: string): GrpcBranchHandler =>
    async function ({ body, metadata, barrier }) {
      received.push({ method, body, metadata });
      const answer = script.get(barrier.call.gid)?.(method, callsOf(barrier.call.gid, method).length);
      if (answer) throw answer;
    };
  const server = await startGrpcServer('busi.Busi', Object.fromEntries(busiMethods.map((m) => [m, grpcBranch(recorded(m))])), port);
  return { server, received, script, callsOf, close: () => server.close() };
}
