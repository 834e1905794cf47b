/**
 * Text the store can keep unchanged. Postgres `text` refuses NUL, and a lone UTF-16 surrogate
 * has no UTF-8 form (it would be stored as U+FFFD): input holding either is refused, naming the
 * field; text from outside (a branch's answer, a participant's error) is cleaned instead.
 */

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Why `text` cannot be stored as it is, or undefined when it can. */
export function textProblem(text: string): string | undefined {
  if (text.includes('\0')) return 'must not contain NUL (\\u0000)';
  if (hasLoneSurrogate(text)) return 'must not contain a lone UTF-16 surrogate';
  return undefined;
}

/**
 * The first string in a parsed JSON value (or query object) that cannot be stored: its dotted path
 * and why. Iterative, so a deeply nested body cannot exhaust the stack.
 */
export function findTextProblem(root: unknown): { field: string; problem: string } | undefined {
  interface Node {
    value: unknown;
    key: string;
    parent: Node | undefined;
  }
  const pathOf = (node: Node | undefined): string => {
    const keys: string[] = [];
    for (let n = node; n?.parent; n = n.parent) keys.push(n.key);
    return keys.reverse().join('.');
  };
  const stack: Node[] = [{ value: root, key: '', parent: undefined }];
  for (let node = stack.pop(); node; node = stack.pop()) {
    const { value } = node;
    if (typeof value === 'string') {
      const problem = textProblem(value);
      if (problem) return { field: pathOf(node), problem };
    } else if (typeof value === 'object' && value !== null) {
      const entries = Object.entries(value as Record<string, unknown>);
      for (const [key] of entries) {
        const problem = textProblem(key);
        if (problem) return { field: pathOf(node), problem: `a key ${problem}` };
      }
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, item] = entries[i]!;
        stack.push({ value: item, key, parent: node });
      }
    }
  }
  return undefined;
}

/** Text from outside made storable: NUL and lone surrogates become U+FFFD, the rest is kept. */
export function storedText(text: string): string;
export function storedText(text: string | null | undefined): string | null | undefined;
export function storedText(text: string | null | undefined): string | null | undefined {
  if (text === null || text === undefined) return text;
  return text.replaceAll('\0', '\uFFFD').replace(loneSurrogate, '\uFFFD');
}

function hasLoneSurrogate(text: string): boolean {
  if (!/[\uD800-\uDFFF]/.test(text)) return false; // the common case, without the lookarounds
  loneSurrogate.lastIndex = 0;
  return loneSurrogate.test(text);
}
