import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: './schemas/db/tables.ts',
  out: './schemas/db/migrations',
});
