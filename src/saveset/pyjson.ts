/**
 * Python-compatible JSON serialisation (FORMAT.md §2.5, §3.3): reproduces `json.dumps(obj)` and
 * `json.dumps(obj, indent=N)` with the default ensure_ascii=True, byte for byte.
 */

const SHORT_ESCAPES: Readonly<Record<number, string>> = {
  0x22: '\\"',
  0x5c: '\\\\',
  0x08: '\\b',
  0x0c: '\\f',
  0x0a: '\\n',
  0x0d: '\\r',
  0x09: '\\t',
};

/** A string literal as Python writes it with ensure_ascii: escapes per UTF-16 code unit. */
export function pyJsonString(s: string): string {
  let out = '"';
  let run = 0; // start of the current run of characters that need no escaping
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(run, i);
    out += SHORT_ESCAPES[c] ?? '\\u' + c.toString(16).padStart(4, '0');
    run = i + 1;
  }
  return out + s.slice(run) + '"';
}

/** Options of pyJsonDumps. */
export interface PyJsonOptions {
  /**
   * How a number is written. Without it only safe integers are accepted (others throw); callers
   * whose values were Python floats or C integers pass the notation they need.
   */
  number?: (n: number) => string;
}

function dump(value: unknown, indent: number | undefined, level: number, opts: PyJsonOptions): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (opts.number !== undefined) return opts.number(value);
      if (!Number.isSafeInteger(value)) throw new TypeError(`pyJsonDumps: only safe integers are supported, got ${value}`);
      return Object.is(value, -0) ? '0' : String(value);
    case 'string':
      return pyJsonString(value);
    case 'object':
      break;
    default:
      throw new TypeError(`pyJsonDumps: unsupported value of type ${typeof value}`);
  }
  const isArray = Array.isArray(value);
  const items: string[] = [];
  if (isArray) {
    for (const v of value as unknown[]) items.push(dump(v, indent, level + 1, opts));
  } else {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      items.push(`${pyJsonString(k)}: ${dump(v, indent, level + 1, opts)}`);
    }
  }
  const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
  if (items.length === 0) return open + close;
  if (indent === undefined) return open + items.join(', ') + close;
  const inner = '\n' + ' '.repeat(indent * (level + 1));
  const outer = '\n' + ' '.repeat(indent * level);
  return open + inner + items.join(',' + inner) + outer + close;
}

/**
 * `json.dumps(value)` (separators ", " and ": ") or, with `indent`, `json.dumps(value, indent=indent)`
 * (separators "," and ": ", no trailing spaces, no trailing newline). Supports objects (insertion
 * order), arrays, strings, safe integers, booleans and null; anything else throws a TypeError.
 */
export function pyJsonDumps(value: unknown, indent?: number, opts: PyJsonOptions = {}): string {
  if (indent !== undefined && (!Number.isInteger(indent) || indent < 0)) throw new RangeError(`bad indent ${indent}`);
  return dump(value, indent, 0, opts);
}
