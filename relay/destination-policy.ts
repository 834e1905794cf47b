/**
 * Which destinations the HTTP relay may call, so that callers cannot use the coordinator to reach
 * what only it can reach (cloud metadata and link-local always, and whatever the operator denies). A host name is
 * refused when it is on the deny list and not on the allow list; an address (an IP literal, or each
 * address a name resolves to, at every connection) is refused when it is denied, unless the address
 * or the name it came from is allowed. Checking at connection time, in the lookup the socket uses,
 * leaves no gap between a check and the connection for a DNS answer to change (rebinding).
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { alwaysDenied, normalizeHost, parseDestinationEntry } from '../schemas/destinations.js';

class Matcher {
  private readonly blocks = new BlockList();
  private readonly names = new Set<string>();
  private readonly suffixes: string[] = [];

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const parsed = parseDestinationEntry(entry);
      if (typeof parsed === 'string') throw new Error(parsed); // the config schema has refused it already
      for (const e of parsed) {
        if (e.kind === 'subnet') this.blocks.addSubnet(e.address, e.prefix, e.family);
        else if (e.kind === 'name') this.names.add(e.name);
        else this.suffixes.push(e.suffix);
      }
    }
  }

  name(host: string): boolean {
    return this.names.has(host) || this.suffixes.some((s) => host.endsWith(s));
  }

  /** IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4 ranges too (BlockList does that). */
  address(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.blocks.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

export class DestinationPolicy {
  private readonly allow: Matcher;
  private readonly deny: Matcher;

  constructor(options: { allow: readonly string[]; deny: readonly string[] }) {
    this.allow = new Matcher(options.allow);
    this.deny = new Matcher([...alwaysDenied, ...options.deny]);
  }

  /** Why a URL's host may not be called, judged without DNS (IP literals and listed names), or undefined. */
  hostProblem(host: string): string | undefined {
    const h = normalizeHost(host);
    if (isIP(h)) return this.addressProblem(h, undefined);
    if (this.deny.name(h) && !this.allow.name(h)) return `destination ${h} is refused by the destination policy (denyDestinations)`;
    return undefined;
  }

  /** Why an address (from `name`, when it was resolved) may not be called, or undefined. */
  addressProblem(address: string, name: string | undefined): string | undefined {
    if (!this.deny.address(address) || this.allow.address(address) || (name !== undefined && this.allow.name(name))) return undefined;
    const shown = name === undefined ? address : `${name} (${address})`;
    return `destination ${shown} is refused by the destination policy (denyDestinations)`;
  }

  /** The socket's DNS lookup: resolves as usual, and fails when the name or any of its addresses is refused. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    const host = normalizeHost(hostname);
    const refuse = (message: string) => callback(Object.assign(new Error(message), { code: 'EDESTINATIONREFUSED' }), '', 4);
    const byName = this.hostProblem(host);
    if (byName) return refuse(byName);
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 4);
      const refused = addresses.map((a) => this.addressProblem(a.address, host)).find((p) => p !== undefined);
      if (refused) return refuse(refused);
      if (options.all) return (callback as (e: null, a: LookupAddress[]) => void)(null, addresses);
      const [first] = addresses;
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 4);
      callback(null, first.address, first.family);
    });
  };
}
