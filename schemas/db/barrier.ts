/**
 * The barrier table lives in each service's own database, not in the coordinator's store. It is
 * DTM's table (same schema, name and unique key), so services moving from DTM keep their rows.
 * `concord barrier-sql` prints this for DBAs.
 */
export const barrierTable = 'dtm_barrier.barrier';

export const barrierDdlPostgres = `CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id bigserial PRIMARY KEY,
  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '',
  create_time timestamp(0) with time zone DEFAULT now(),
  update_time timestamp(0) with time zone DEFAULT now(),
  CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);
`;
