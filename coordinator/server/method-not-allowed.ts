/**
 * 405 instead of 404 for a path that exists under other methods. Fastify's router knows only
 * "no route for this method and path", so the routes are recorded as they are added (onRoute)
 * and the not-found handler looks the path up among them.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ConcordError } from '../../schemas/errors.js';

export function methodNotAllowed() {
  const routes: { pattern: RegExp; methods: Set<string> }[] = [];
  return {
    onRoute(route: { url: string; method: string | string[] }): void {
      const escaped = route.url
        .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
        .replace(/:\w+/g, '[^/]+')
        .replace(/\*/g, '.*');
      const source = `^${escaped}/?$`;
      let entry = routes.find((r) => r.pattern.source === source);
      if (!entry) routes.push((entry = { pattern: new RegExp(source), methods: new Set() }));
      for (const method of [route.method].flat()) entry.methods.add(method);
    },
    async notFound(request: FastifyRequest, reply: FastifyReply): Promise<never> {
      const path = request.url.split('?')[0] ?? '';
      const allowed = [...new Set(routes.filter((r) => r.pattern.test(path)).flatMap((r) => [...r.methods]))].sort();
      if (allowed.length === 0) throw new ConcordError('ROUTE_NOT_FOUND', `no route ${request.method} ${path}`);
      void reply.header('allow', allowed.join(', '));
      throw new ConcordError('METHOD_NOT_ALLOWED', `${path} answers ${allowed.join(', ')}, not ${request.method}`);
    },
  };
}
