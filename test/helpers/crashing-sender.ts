/**
 * A service process that dies between its local commit and its submit (or after a local
 * rollback), with SIGKILL: no cleanup, no abort, exactly what a crash leaves behind.
 * Usage: node crashing-sender.js <dtm url> <bank url> <bank db url> <gid> <commit|rollback>
 */
import pg from 'pg';
import { BranchBarrier, Msg } from '../../sdk/index.js';

const [dtm, bank, dbUrl, gid, mode] = process.argv.slice(2) as [string, string, string, string, string];
const pool = new pg.Pool({ connectionString: dbUrl });
const msg = new Msg(dtm, gid, { timeoutToFail: 1 }).add(`${bank}/TransIn`, { amount: 30 });
await msg.prepare(`${bank}/QueryPrepared`);
const barrier = new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' });
try {
  await barrier.run<void, pg.PoolClient>(pool, async (tx) => {
    await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [gid, 'out', 30]);
    if (mode === 'rollback') throw new Error('business rule broken: roll back');
  });
} catch {
  // rolled back; the crash below leaves the message prepared
}
process.stdout.write('local transaction done\n');
process.kill(process.pid, 'SIGKILL');
