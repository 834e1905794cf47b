/**
 * Who may call what (docs/security.md). With no token configured every route is open (the
 * coordinator then listens on loopback only, see schemas/config.ts). With tokens, each route asks
 * for an API token, an operator token, or nothing (liveness, readiness), and state changes come
 * only as POST/PUT/DELETE with a JSON body, which a browser cannot send across origins unasked.
 *
 * DTM's clients take nothing but a server URL, so the token may ride in it as a path prefix,
 * http://host:36789/t/<token>/api/dtmsvr; the SDK sends "Authorization: Bearer <token>" instead.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { defaultOperatorName } from '../../schemas/config.js';
import { ConcordError } from '../../schemas/errors.js';

export type AccessLevel = 'open' | 'api' | 'operator';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route once tokens are configured; 'api' when not given. */
    access?: AccessLevel;
    /** DTM's GET form of a state change (/subscribe?topic=&url=): refused once tokens are configured. */
    changesStateByGet?: boolean;
  }
  interface FastifyRequest {
    /** May see payloads and header values: no tokens are configured, or an operator token was presented. */
    operator: boolean;
    /** Whom this request's operator actions are recorded under: its operator token's name ("operator" with no tokens configured). */
    operatorName: string;
  }
}

export interface AccessOptions {
  apiTokens: readonly string[];
  operatorTokens: readonly { name: string; token: string }[];
}

const presented = Symbol('concord.pathToken');
type TokenRequest = IncomingMessage & { [presented]?: string };
const tokenPrefix = /^\/t\/([^/?#]*)(?=[/?#]|$)/;

/**
 * Fastify's rewriteUrl: /t/<token>/api/... is routed as /api/..., the token kept aside for the
 * onRequest check (so it never reaches route labels in metrics or logs).
 */
export function stripTokenPrefix(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const match = tokenPrefix.exec(url);
  if (!match) return url;
  (req as TokenRequest)[presented] = match[1];
  const rest = url.slice(match[0].length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}

const digest = (token: string) => createHash('sha256').update(token).digest();

/** What a presented token may do: an API token's calls, or an operator's (named: actions are recorded with the name). */
export type Role = { role: 'api' } | { role: 'operator'; name: string };

/** The configured tokens: whether any is set, and the role a presented token has (also used by the gRPC API). */
export function tokenRoles(options: AccessOptions): { enabled: boolean; roleOf: (token: string) => Role | undefined } {
  const api = options.apiTokens.map(digest);
  const operator = options.operatorTokens.map((t) => ({ name: t.name, digest: digest(t.token) }));
  return {
    enabled: api.length + operator.length > 0,
    /** Compares against every token in constant time (equal-length digests), so timing tells nothing. */
    roleOf: (token) => {
      const d = digest(token);
      let name: string | undefined;
      let isApi = false;
      for (const t of operator) if (timingSafeEqual(d, t.digest)) name ??= t.name;
      for (const t of api) isApi = timingSafeEqual(d, t) || isApi;
      return name !== undefined ? { role: 'operator', name } : isApi ? { role: 'api' } : undefined;
    },
  };
}

/** The onRequest hook that enforces the access level of each route. */
export function accessHook(options: AccessOptions) {
  const { enabled, roleOf } = tokenRoles(options);

  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    // The raw URL with the token in it stays on the request for Fastify's own use; keep it out of reach.
    const raw = request.raw as TokenRequest & { originalUrl?: string };
    if (raw.originalUrl !== undefined) raw.originalUrl = raw.url;
    request.operatorName = defaultOperatorName;
    if (!enabled) {
      request.operator = true;
      return;
    }
    const tokens = [bearer(request.headers.authorization), raw[presented]].filter((t) => t !== undefined);
    const roles = tokens.map(roleOf);
    const asOperator = roles.find((r) => r?.role === 'operator');
    const role = asOperator ? 'operator' : roles.some((r) => r?.role === 'api') ? 'api' : undefined;
    request.operator = role === 'operator';
    if (asOperator?.role === 'operator') request.operatorName = asOperator.name;
    const config = request.routeOptions.config;
    const route = request.routeOptions.url ?? request.url;
    const access = config.access ?? 'api';
    if (access === 'open') return;
    if (role === undefined) {
      reply.header('www-authenticate', 'Bearer realm="concord"');
      throw new ConcordError(
        'UNAUTHORIZED',
        tokens.length === 0
          ? 'this coordinator requires a token: put it in the server URL (http://host:36789/t/<token>/api/dtmsvr) or send Authorization: Bearer <token>'
          : 'the token presented is not valid',
      );
    }
    if (access === 'operator' && role !== 'operator') {
      throw new ConcordError('FORBIDDEN', `${request.method} ${route} is an operator action: present an operator token`);
    }
    if (config.changesStateByGet && (request.method === 'GET' || request.method === 'HEAD')) {
      reply.header('allow', 'POST');
      throw new ConcordError('METHOD_NOT_ALLOWED', `${route} changes state: POST it with a JSON body, not ${request.method}`);
    }
    const carriesBody =
      (request.headers['content-length'] !== undefined && request.headers['content-length'] !== '0') ||
      request.headers['transfer-encoding'] !== undefined;
    const mustBeJson = ['POST', 'PUT', 'PATCH'].includes(request.method) || (request.method === 'DELETE' && carriesBody);
    if (mustBeJson && !isJson(request.headers['content-type'])) {
      throw new ConcordError(
        'UNSUPPORTED_MEDIA_TYPE',
        `${request.method} ${route} takes Content-Type: application/json, not ${request.headers['content-type'] ?? 'none'}`,
      );
    }
  };
}

/** The token of an `Authorization: Bearer <token>` header (HTTP header or gRPC metadata). */
export function bearer(header: string | undefined): string | undefined {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return match?.[1];
}

function isJson(contentType: string | undefined): boolean {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(type);
}
