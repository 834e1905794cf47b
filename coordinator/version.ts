/** Kept apart from app.ts so that commands other than `start` need not load the whole coordinator. */
import { readFileSync } from 'node:fs';

/** The package version, read from package.json whether this runs from source or from dist/. */
export const version: string = (() => {
  for (const up of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'concord' && pkg.version) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return '0.0.0';
})();
