import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    // Starts PostgreSQL once per run (Debian's packages, Docker or CONCORD_TEST_PG_URL).
    globalSetup: ['test/global-setup.ts'],
    // After each file: nothing it opened is still open.
    setupFiles: ['test/helpers/leak-check.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2, // CI machines have two cores
    // Coordinators started by tests run side by side: the gRPC API (default port 36790) only where a test turns it on.
    env: { CONCORD_GRPC_PORT: '0' },
  },
});
