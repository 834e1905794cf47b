/**
 * The destination policy's vocabulary: which hosts and addresses the coordinator may call
 * (config allowDestinations / denyDestinations). The relay enforces it (relay/destination-policy.ts).
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** Named groups an entry may use instead of spelling their ranges and names out. */
export const destinationGroups = {
  // 0.0.0.0 and :: reach the local host too when connected to.
  loopback: ['127.0.0.0/8', '::1/128', '0.0.0.0/8', '::/128', 'localhost', '*.localhost'],
  'link-local': ['169.254.0.0/16', 'fe80::/10'],
  // AWS, GCP, Azure, OpenStack, Oracle: 169.254.169.254 (and AWS over IPv6); Alibaba; Azure's wire server.
  metadata: [
    '169.254.169.254',
    'fd00:ec2::254',
    '100.100.100.200',
    '168.63.129.16',
    'metadata.google.internal',
    'metadata.goog',
    'metadata',
  ],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'],
  any: ['0.0.0.0/0', '::/0'],
} as const satisfies Record<string, readonly string[]>;

export type DestinationGroup = keyof typeof destinationGroups;

/** Refused whatever denyDestinations says (so that adding to it cannot drop them); allowDestinations may let parts through. */
export const alwaysDenied = ['link-local', 'metadata'] as const;

export type DestinationEntry =
  | { kind: 'subnet'; address: string; prefix: number; family: 'ipv4' | 'ipv6' }
  | { kind: 'name'; name: string }
  /** *.example.com: every name below example.com. */
  | { kind: 'suffix'; suffix: string };

const hostName = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** A host as the policy compares it: lower case, no brackets around IPv6, no trailing dot. */
export function normalizeHost(host: string): string {
  return host
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '');
}

/** One config entry (an address, a CIDR, a host name, *.domain or a group) as what it matches, or a reason it is none. */
export function parseDestinationEntry(entry: string): DestinationEntry[] | string {
  const text = normalizeHost(entry.trim());
  // A group's own members are never groups ("metadata" is also a host name in it).
  if (text in destinationGroups) return destinationGroups[text as DestinationGroup].map((e) => parseSingle(e) as DestinationEntry);
  const single = parseSingle(text);
  return typeof single === 'string' ? `"${entry}" ${single}` : [single];
}

function parseSingle(text: string): DestinationEntry | string {
  const [address = '', prefixText, ...extra] = text.split('/');
  const family = isIP(address);
  if (family !== 0 && extra.length === 0) {
    const bits = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix >= 0 && prefix <= bits)) return `needs a prefix length from 0 to ${bits}`;
    return { kind: 'subnet', address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
  }
  if (text.startsWith('*.') && hostName.test(text.slice(2))) return { kind: 'suffix', suffix: text.slice(1) };
  if (hostName.test(text)) return { kind: 'name', name: text };
  return `is no address, CIDR, host name, *.domain or group (${Object.keys(destinationGroups).join(', ')})`;
}

/** A list in config: a JSON array, or comma-separated text as environment variables and flags carry it. */
export const destinationListSchema = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v;
    if (v.trim().startsWith('[')) {
      try {
        return JSON.parse(v) as unknown;
      } catch {
        return v; // the schema then says what it expected
      }
    }
    return v
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== '');
  },
  z.array(
    z.string().superRefine((entry, ctx) => {
      const parsed = parseDestinationEntry(entry);
      if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
    }),
  ),
);
