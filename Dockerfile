# Build stage: dev dependencies are needed for tsc.
FROM node:20-slim AS build
WORKDIR /app
# The workspaces' manifests too: `npm ci` installs the dependencies of every workspace (docs/packages.md).
COPY package.json package-lock.json ./
COPY coordinator/package.json coordinator/
COPY sdk/package.json sdk/
# No scripts yet: "prepare" would build before the sources are copied.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

# Runtime stage: the coordinator's build (dist), its package.json (the version it reports), the
# schemas (the migrations, the gRPC API's .proto), and production dependencies.
# A container must listen on 0.0.0.0, so it refuses to start until it gets CONCORD_API_TOKENS (or, on a
# network you trust, CONCORD_INSECURE=true): docs/security.md.
FROM node:20-slim
# Two malloc arenas, not one per thread (up to 8 per core): 1-6 MiB less RSS (docs/operations.md).
ENV NODE_ENV=production \
    CONCORD_HOST=0.0.0.0 \
    MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/coordinator/package.json ./coordinator/
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/schemas ./schemas
# The embedded store, when no CONCORD_STORE is given, writes under the working directory.
RUN chown node:node /app
USER node
EXPOSE 36789 36790
# Semi-spaces of 8 MiB, not 16: a coordinator under load peaked at 129-148 MiB instead of 142-203,
# at the same CPU per message (docs/operations.md).
CMD ["node", "--max-semi-space-size=8", "dist/coordinator/cli.js", "start"]
