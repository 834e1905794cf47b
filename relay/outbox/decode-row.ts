/**
 * One outbox row to one delivery, or the reason it can never be one (the row is then parked).
 * Payloads travel as text, as every publisher takes them: bytea and base64 bodies must be UTF-8.
 */
import type { OutboxMapping } from '../../schemas/outbox.js';
import { brokerHeaders } from '../../schemas/broker-messages.js';

/** A row as outbox-sql reads it. */
export interface OutboxRow {
  id: string;
  destination: string | null;
  key: string | null;
  payload: string | Buffer | null;
  headers: string | null;
}

export interface DecodedRow {
  id: string;
  url: string;
  key?: string;
  payload: string;
  headers: Record<string, string>;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The template split around {id} once per mapping, not once per row. */
const idTemplates = new WeakMap<OutboxMapping, string[]>();

export function messageIdOf(mapping: OutboxMapping, id: string): string {
  let parts = idTemplates.get(mapping);
  if (!parts) {
    parts = mapping.messageId.replaceAll('{table}', mapping.table).split('{id}');
    idTemplates.set(mapping, parts);
  }
  return parts.length === 2 ? parts[0]! + id + parts[1]! : parts.join(id);
}

/** The row as a delivery, or `{ error }` saying what about it cannot be delivered. */
export function decodeRow(mapping: OutboxMapping, row: OutboxRow): DecodedRow | { error: string } {
  let url = mapping.destination;
  if (url === undefined) {
    const value = row.destination;
    if (value === null || value === '') return { error: `${mapping.destinationColumn} is empty` };
    if (value.includes('://')) url = value;
    else if (mapping.destinationTemplate) url = mapping.destinationTemplate.replaceAll('{destination}', value);
    else return { error: `${mapping.destinationColumn} "${value}" is not a URL and the mapping has no destinationTemplate` };
  }
  let payload: string;
  try {
    payload = decodePayload(mapping, row.payload);
  } catch (err) {
    return { error: `${mapping.payloadColumn}: ${(err as Error).message}` };
  }
  const headers: Record<string, string> = {};
  if (row.headers !== null && row.headers !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(row.headers);
    } catch {
      return { error: `${mapping.headersColumn}: not JSON` };
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      return { error: `${mapping.headersColumn}: not a JSON object` };
    for (const [name, value] of Object.entries(parsed))
      headers[name.toLowerCase()] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  // Last, so a header column cannot break the id the consumers' inboxes rely on.
  headers[brokerHeaders.messageId] = messageIdOf(mapping, row.id);
  return { id: row.id, url, ...(row.key === null ? {} : { key: row.key }), payload, headers };
}

function decodePayload(mapping: OutboxMapping, value: string | Buffer | null): string {
  if (value === null) return '';
  switch (mapping.payloadEncoding) {
    case 'text':
      return String(value);
    case 'json':
      JSON.parse(String(value)); // throws on a body that is not JSON
      return String(value);
    case 'bytea':
      return utf8.decode(value as Buffer);
    case 'base64': {
      const text = String(value).trim();
      if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text) || text.length % 4 === 1) throw new Error('not base64');
      return utf8.decode(Buffer.from(text, 'base64'));
    }
  }
}
