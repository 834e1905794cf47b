/** A real gRPC server (grpc-js) serving raw-bytes methods built with the SDK's adapter, on a free loopback port. */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { grpcBranchService, type GrpcUnaryHandler } from '../../sdk/index.js';

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
