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

/** DTM's MySQL table: the database dtm_barrier beside the service's own, the same columns and key. */
export const barrierDdlMysql = `CREATE DATABASE IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id bigint PRIMARY KEY AUTO_INCREMENT,
  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '' COMMENT 'the op that inserted this row',
  create_time datetime DEFAULT now(),
  update_time datetime DEFAULT now(),
  KEY (create_time),
  KEY (update_time),
  UNIQUE KEY uniq_barrier (gid, branch_id, op, barrier_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
`;
