/** Kept apart from app.ts so that commands other than `start` need not load the whole coordinator. */
import { readFileSync } from 'node:fs';

/**
 * The coordinator package's version (coordinator/package.json), read from source (coordinator/),
 * the build (dist/coordinator/) or the installed package (dist/coordinator/ in it).
 */
export const version: string = (() => {
  for (const up of ['./package.json', '../../coordinator/package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@concord/coordinator' && pkg.version) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return '0.0.0';
})();
