import { existsSync } from 'node:fs';
import { aptInstall } from './apt-install.js';

const candidates = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];

/**
 * A Chromium binary for the browser tests: CONCORD_CHROMIUM if set, else Debian's chromium,
 * installed with apt-get on a fresh machine like the other test services.
 */
export async function chromiumPath(): Promise<string> {
  const configured = process.env.CONCORD_CHROMIUM;
  if (configured) return configured;
  const found = () => candidates.find((path) => existsSync(path));
  if (!found()) await aptInstall(['chromium'], 'Chromium', 'Set CONCORD_CHROMIUM to a Chromium or Chrome binary.');
  const path = found();
  if (!path) throw new Error(`apt-get installed chromium, but none of ${candidates.join(', ')} exists`);
  return path;
}
