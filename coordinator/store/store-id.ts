/** A random id made once per store: it names things that belong to one store, such as its saga reply topic. */
import { sql } from 'drizzle-orm';
import type { Database } from './database.js';

export async function storeId(database: Database): Promise<string> {
  const [row] = await database.rows<{ id: string }>(
    sql`with made as (
          insert into kv (cat, k, v) values ('concord', 'store-id', to_jsonb(substr(md5(random()::text || clock_timestamp()::text), 1, 12)))
          on conflict (cat, k) do nothing returning v #>> '{}' as id
        )
        select id from made union all select v #>> '{}' from kv where cat = 'concord' and k = 'store-id' limit 1`,
  );
  if (!row) throw new Error('the store has no id');
  return row.id;
}
