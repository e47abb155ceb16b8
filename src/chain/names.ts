/**
 * File names of a backup set (FORMAT.md §6.2). Files are found by listing the directory and
 * matching these patterns; metadata never builds a path (FORMAT.md §9).
 */

export type DataLevel = 'full' | 'copy' | 'inc' | 'diff';

export interface DataFileName {
  /** The disk target, e.g. `vda`. */
  dev: string;
  level: DataLevel;
  /** inc/diff: checkpoint name or Unix time; undefined for full/copy. */
  ident?: string;
}

const DEV = '[A-Za-z0-9_-]+';
const IDENT = '[A-Za-z0-9_.-]+';
const BASE_RE = new RegExp(`^(${DEV})\\.(full|copy)\\.data$`);
const DELTA_RE = new RegExp(`^(${DEV})\\.(inc|diff)\\.(${IDENT})\\.data$`);
const PARTIAL_RE = /\.data\.partial$/;
const VMCONFIG_RE = new RegExp(`^vmconfig\\.(${IDENT})\\.xml$`);
const QCOW_JSON_RE = new RegExp(`^(${DEV})\\.(${IDENT})\\.qcow\\.json$`);
// `virtnbdbackup.N`, or `virtnbdbackup.<chain>.N` of an independent chain (virtnbdbackup --chain).
const CHECKPOINT_RE = /^virtnbdbackup(?:\.[A-Za-z][A-Za-z0-9_-]{0,63})?\.([0-9]+)$/;

/** Parse a data file's base name; undefined when it is not one. */
export function parseDataFileName(name: string): DataFileName | undefined {
  const b = BASE_RE.exec(name);
  if (b) return { dev: b[1], level: b[2] as DataLevel };
  const d = DELTA_RE.exec(name);
  if (d && d[3] !== '.' && d[3] !== '..') return { dev: d[1], level: d[2] as DataLevel, ident: d[3] };
  return undefined;
}

export function isPartialName(name: string): boolean {
  return PARTIAL_RE.test(name);
}

export function parseVmconfigName(name: string): string | undefined {
  return VMCONFIG_RE.exec(name)?.[1];
}

export function parseQcowJsonName(name: string): { dev: string; ident: string } | undefined {
  const m = QCOW_JSON_RE.exec(name);
  return m ? { dev: m[1], ident: m[2] } : undefined;
}

/** The number N of a checkpoint named `virtnbdbackup.N` (ours, D21); undefined otherwise. */
export function checkpointNumber(name: string): number | undefined {
  const m = CHECKPOINT_RE.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** True when `s` is a valid disk target name (safe to use in an output file name). */
export function isDevName(s: string): boolean {
  return new RegExp(`^${DEV}$`).test(s);
}
