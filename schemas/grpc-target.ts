/**
 * DTM's gRPC branch URLs: `host:port/package.Service/Method`, with no scheme (DTM splits the text
 * at its first "/" into the server to dial and the method's path). One definition for the API's
 * checks, the relay's choice of publisher and the gRPC publisher itself.
 */
import { isIP } from 'node:net';

/** A gRPC target split into what is dialled and what is called. */
export interface GrpcTarget {
  /** Host name or address, without brackets around IPv6. */
  host: string;
  port: number;
  /** host:port as dialled (IPv6 in brackets): the key of the cached channel. */
  authority: string;
  /** The call's path: /package.Service/Method. */
  method: string;
}

/**
 * Whether a destination is of the gRPC form rather than a URL with a scheme. `new URL()` cannot
 * tell (it reads "localhost:" in `localhost:8081/x` as a scheme), so: no "://", and a server part
 * before the first "/". Whether it is a well-formed one is parseGrpcTarget's question.
 */
export function isGrpcTarget(url: string): boolean {
  return !url.includes('://') && /^[^/\s]+\//.test(url);
}

const hostName = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*$/;
/** A protobuf full service name and a method name: the parts of a gRPC call path. */
const methodPath = /^\/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\/[A-Za-z_][A-Za-z0-9_]*$/;

/** A gRPC target's parts, or why it is not one (a sentence naming the expected form). */
export function parseGrpcTarget(url: string): GrpcTarget | string {
  const form = 'a gRPC target is host:port/package.Service/Method';
  const slash = url.indexOf('/');
  if (url.includes('://') || slash <= 0) return `"${url}" is not a gRPC target: ${form}`;
  const server = url.slice(0, slash);
  const method = url.slice(slash);
  const match = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(server);
  if (!match) return `"${url}": the server "${server}" needs a host and a port (${form})`;
  const [, rawHost = '', portText = ''] = match;
  const host = rawHost.replace(/^\[(.*)\]$/, '$1');
  const port = Number(portText);
  if (!(port >= 1 && port <= 65_535)) return `"${url}": port ${portText} is not from 1 to 65535`;
  const bracketed = rawHost.startsWith('[');
  if (bracketed ? isIP(host) !== 6 : isIP(host) !== 4 && !hostName.test(host)) return `"${url}": "${rawHost}" is no host name or address`;
  if (!methodPath.test(method)) return `"${url}": the method "${method}" is not /package.Service/Method (${form})`;
  return { host, port, authority: server, method };
}

/**
 * Why a header cannot go out as gRPC metadata, or undefined: gRPC keys are lower-case letters,
 * digits and -_. (upper case is folded), values printable ASCII, and the transport's own
 * headers (grpc-*, content-type, te, user-agent, host, :pseudo) are the channel's.
 */
export function grpcMetadataProblem(headers: Record<string, string>): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    const key = name.toLowerCase();
    if (!/^[0-9a-z_.-]+$/.test(key)) return `header "${name}" cannot be gRPC metadata: a name may hold only letters, digits and -_.`;
    if (isReservedMetadata(key)) return `header "${name}" is set by the gRPC transport itself`;
    if (key.endsWith('-bin')) return `header "${name}": binary (-bin) metadata is not sent`;
    if (!/^[\x20-\x7e]*$/.test(value)) return `header "${name}": a gRPC metadata value may hold only printable ASCII`;
  }
  return undefined;
}

function isReservedMetadata(key: string): boolean {
  return key.startsWith('grpc-') || ['content-type', 'te', 'user-agent', 'host'].includes(key);
}
