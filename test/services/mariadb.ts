import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { aptInstall } from './apt-install.js';
import { dockerAnswers } from './docker.js';
import { runChecked, runCommand, tail } from './run-command.js';
import { PortTakenError, startRestartable } from './service-dir.js';
import { freePort, startSupervised, waitUntilReady } from './supervised-process.js';

export interface MariaDBService {
  /** URL of a user that may create databases, e.g. mysql://root@127.0.0.1:PORT/ */
  url: string;
  /** Stops the server and removes its files; does nothing for a server given by CONCORD_TEST_MYSQL_URL. */
  stop(): Promise<void>;
}

const IMAGE = 'mariadb:11';
const SERVER = '/usr/sbin/mariadbd';
const INSTALL_DB = '/usr/bin/mariadb-install-db';
const READY_TIMEOUT_MS = 60_000;

/**
 * Provides a MySQL-compatible server, in this order:
 * 1. the server at `CONCORD_TEST_MYSQL_URL` when that is set (mysql://user:password@host:port/, a
 *    user allowed to create databases);
 * 2. a `mariadb:11` container through testcontainers when a Docker engine answers;
 * 3. a throwaway instance of Debian's mariadb-server (installed with apt-get if missing): its own
 *    datadir and socket in a temp dir, on a free loopback port, gone with stop() or the test process.
 */
export async function startMariaDB(): Promise<MariaDBService> {
  const given = process.env.CONCORD_TEST_MYSQL_URL;
  if (given !== undefined && given !== '') {
    await waitUntilReady(() => probe(given), { what: 'MySQL at CONCORD_TEST_MYSQL_URL', timeoutMs: 30_000 });
    return { url: given, stop: () => Promise.resolve() };
  }
  if (await dockerAnswers()) {
    try {
      return await startContainer();
    } catch (error) {
      console.warn(
        `[concord test services] Docker answers but ${IMAGE} did not start (${(error as Error).message}); using Debian's MariaDB instead`,
      );
    }
  }
  return startLocalMariaDB();
}

async function probe(url: string): Promise<void> {
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 2_000 });
  await connection.end();
}

async function startContainer(): Promise<MariaDBService> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer(IMAGE)
    .withEnvironment({ MARIADB_ALLOW_EMPTY_ROOT_PASSWORD: '1', MARIADB_ROOT_HOST: '%' })
    .withExposedPorts(3306)
    .withWaitStrategy(Wait.forLogMessage(/ready for connections/, 2))
    .withStartupTimeout(120_000)
    .start();
  return {
    url: `mysql://root@${container.getHost()}:${container.getMappedPort(3306)}/`,
    stop: async () => {
      await container.stop();
    },
  };
}

let installing: Promise<void> | undefined;

async function ensureInstalled(): Promise<void> {
  if (existsSync(SERVER) && existsSync(INSTALL_DB)) return;
  installing ??= (async () => {
    await aptInstall(
      ['mariadb-server'],
      'MariaDB',
      `${SERVER} was not found. Set CONCORD_TEST_MYSQL_URL to a MySQL or MariaDB server (mysql://root@127.0.0.1:3306/), or start a Docker engine, or install mariadb-server yourself.`,
    );
    // The package starts and enables the system server where the init system lets it; tests run their own.
    if (existsSync('/run/systemd/system')) await runCommand('systemctl', ['disable', '--now', 'mariadb.service']).catch(() => undefined);
  })();
  await installing;
}

/** A local instance that can be halted and restarted on the same port and data. */
export interface LocalMariaDB extends MariaDBService {
  halt(): Promise<void>;
  restart(): Promise<void>;
}

export async function startLocalMariaDB(): Promise<LocalMariaDB> {
  await ensureInstalled();
  const service = await startRestartable({
    prefix: 'concord-mariadb-',
    attempts: 3,
    plan: () => freePort(),
    launch: async (work, port, run) => {
      const data = join(work, 'data');
      if (run === 1)
        await runChecked(
          INSTALL_DB,
          ['--no-defaults', `--datadir=${data}`, '--user=root', '--auth-root-authentication-method=normal', '--skip-test-db'],
          {
            timeoutMs: 120_000,
          },
        );
      const log = join(work, `mariadb-${run}.log`);
      const server = startSupervised({
        command: SERVER,
        args: [
          '--no-defaults',
          `--datadir=${data}`,
          '--user=root',
          `--port=${port}`,
          '--bind-address=127.0.0.1',
          `--socket=${join(work, 'mariadb.sock')}`,
          `--pid-file=${join(work, 'mariadb.pid')}`,
          '--skip-name-resolve',
          // A throwaway server: commits need not reach the disk, as with the test Postgres.
          '--innodb-flush-log-at-trx-commit=0',
          '--innodb-buffer-pool-size=128M',
          '--max-connections=500',
        ],
        cwd: work,
        log,
        graceMs: 10_000,
      });
      const url = `mysql://root@127.0.0.1:${port}/`;
      try {
        await waitUntilReady(() => probe(url), {
          what: `MariaDB on 127.0.0.1:${port}`,
          timeoutMs: READY_TIMEOUT_MS,
          exitStatus: server.exitStatus,
        });
      } catch (error) {
        await server.stop();
        const text = await readFile(log, 'utf8').catch(() => '');
        if (/address already in use/i.test(text)) throw new PortTakenError(`port ${port} was taken`);
        throw new Error(`MariaDB did not start: ${(error as Error).message}\n--- ${log} ---\n${tail(text)}`, { cause: error });
      }
      return { url, stop: () => server.stop() };
    },
  });
  return { url: service.first.url, halt: service.halt, restart: service.restart, stop: service.stop };
}

/** Creates a new, empty database on the server of `adminUrl` and returns its URL. */
export async function createMysqlDatabase(adminUrl: string, name: string): Promise<string> {
  const connection = await mysql.createConnection({ uri: adminUrl });
  try {
    await connection.query(`create database \`${name}\``);
  } finally {
    await connection.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops the databases whose names start with the prefix (a server shared between runs). */
export async function dropMysqlDatabases(adminUrl: string, prefix: string): Promise<void> {
  const connection = await mysql.createConnection({ uri: adminUrl });
  try {
    const [rows] = await connection.query<mysql.RowDataPacket[]>(
      'select schema_name as name from information_schema.schemata where schema_name like ?',
      [`${prefix}%`],
    );
    for (const { name } of rows) await connection.query(`drop database if exists \`${String(name)}\``);
  } finally {
    await connection.end();
  }
}
