/**
 * Humanised sizes exactly as the original prints them (BEHAVIOUR.md §7.4): divide by 1024 while
 * the value is >= 1024 through "", Ki, Mi, Gi, Ti, Pi, Ei, Zi (then Yi), print with one decimal
 * and append "B". Rounding is Python's `%.1f`: correctly rounded from the exact binary value,
 * ties to even (1280 → "1.2KiB", where Number#toFixed would give "1.3KiB").
 */

const UNITS = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei', 'Zi'];

/** A finite double as the exact rational `n / 2^shift` (n a BigInt, shift >= 0). */
function exactRational(v: number): { n: bigint; shift: number } {
  if (Number.isInteger(v)) return { n: BigInt(v), shift: 0 };
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, v);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const sign = hi >>> 31 ? -1n : 1n;
  const exp = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e: number;
  if (exp === 0) e = -1074; // subnormal
  else {
    mant |= 1n << 52n;
    e = exp - 1075;
  }
  // v = sign * mant * 2^e, with e < 0 here (v is not an integer)
  return { n: sign * mant, shift: -e };
}

/** Python's `'%.1f' % x` for x = n / 2^shift (exact), round half to even. */
function formatOneDecimal(n: bigint, shift: number, negativeZero: boolean): string {
  const negative = n < 0n || (n === 0n && negativeZero);
  const abs = n < 0n ? -n : n;
  const den = 1n << BigInt(shift);
  const scaled = abs * 10n;
  let q = scaled / den;
  const r2 = (scaled % den) * 2n;
  if (r2 > den || (r2 === den && q % 2n === 1n)) q += 1n;
  return `${negative ? '-' : ''}${q / 10n}.${q % 10n}`;
}

/** Format a byte count like the original's humanize(): `1280` → `"1.2KiB"`, `0` → `"0.0B"`. */
export function humanSize(bytes: number): string {
  if (Number.isNaN(bytes)) return 'nanB';
  if (!Number.isFinite(bytes)) return `${bytes < 0 ? '-' : ''}infB`;
  const { n, shift } = exactRational(bytes);
  const negZero = Object.is(bytes, -0);
  let value = Math.abs(bytes);
  let s = shift;
  for (const unit of UNITS) {
    if (value < 1024) return `${formatOneDecimal(n, s, negZero)}${unit}B`;
    value /= 1024; // exact: division by a power of two
    s += 10;
  }
  return `${formatOneDecimal(n, s, negZero)}YiB`;
}
