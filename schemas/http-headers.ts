/**
 * Headers a caller asks Concord to add to its HTTP calls (branch_headers, a step's "headers").
 * What the HTTP client (undici) would refuse at call time is refused at request time instead, so
 * a transaction cannot be accepted and then fail every call forever.
 */
import { textProblem } from './text.js';

/** RFC 9110 token characters: what a header name may hold. */
const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Visible Latin-1, space and tab: what a header value may hold (no CR, LF or NUL). */
const fieldValue = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Headers the client sets itself from the call (framing, connection, target), refused by undici. */
export const reservedHeaders = ['content-length', 'transfer-encoding', 'expect', 'upgrade', 'connection', 'keep-alive', 'host'] as const;

/** Why one header cannot be sent, or undefined when it can. */
export function headerProblem(name: string, value: string): string | undefined {
  if (name === '') return 'a header name must not be empty';
  if (!token.test(name)) return `header name "${printable(name)}" may hold only letters, digits and !#$%&'*+-.^_\`|~`;
  if ((reservedHeaders as readonly string[]).includes(name.toLowerCase())) return `header "${name}" is set by the coordinator itself`;
  const text = textProblem(value);
  if (text) return `header "${name}": value ${text}`;
  if (!fieldValue.test(value)) return `header "${name}": value may hold only Latin-1 characters, without CR or LF`;
  return undefined;
}

/** The first problem of a header map. */
export function headersProblem(headers: Record<string, string>): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    const problem = headerProblem(name, value);
    if (problem) return problem;
  }
  return undefined;
}

function printable(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}
