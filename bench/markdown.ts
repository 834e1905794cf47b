/** Markdown helpers for the report. */

/** A number with `digits` decimals; – when missing. */
export const fixed = (value: number | undefined, digits: number) =>
  value === undefined || Number.isNaN(value) ? '–' : Number.isFinite(value) ? value.toFixed(digits) : '∞';

export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
