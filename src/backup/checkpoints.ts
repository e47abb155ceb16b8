/**
 * Checkpoint handling of a backup run (BEHAVIOUR.md §3, FORMAT.md §6.3–6.4): ownership (D21),
 * the checkpoint XML of a new checkpoint (§5.2), validation (§3.4), deletion before a full
 * (§3.5, D29), redefinition of lost metadata from the checkpoint directory (§3.6, D36, D40),
 * foreign checkpoints (§3.7), the per-run plan (§3.3), saving `checkpoints/<name>.xml`, and the
 * recovery after an interrupted run (§3.9).
 *
 * libvirt is reached through {@link CheckpointDomain}, a structural subset of VirtDomain (so unit
 * tests can use an in-memory fake). User-facing failures throw {@link CheckpointError}; where the
 * original logs an ERROR line before its fatal message, that line is logged here and the error
 * carries the fatal message (the caller logs it and exits 1).
 */
import { readdir, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { XMLValidator } from 'fast-xml-parser';
import { makeXmlParser } from '../xml/parser.js';
import type { Logger } from '../log/logger.js';
import { CHECKPOINT_CREATE, CHECKPOINT_DELETE, CHECKPOINT_XML, VIR_ERR, type VirtDomain } from '../virt/client.js';
import { isPartialName, parseDataFileName } from '../chain/names.js';
import { readSavesetMetadata } from '../saveset/reader.js';
import { pathExists, publishNoReplace, syncDir, writeFileAtomic } from '../util/atomic-file.js';
import { CheckpointError, isOurCheckpoint, isAnyChainCheckpoint, checkpointNameOf, ourCheckpointNumber, readCptFile, writeCptFile, formatCptFile } from './cpt-file.js';
import { decodeXmlEntities } from '../xml/domain-xml.js';
import { xmlEscape } from '../xml/escape.js';
import type { BackupLevel } from './types.js';
import { guardedParse } from '../xml/parse-guard.js';
import { assertNoSymlink } from '../util/safe-path.js';
import { MAX_XML_FILE, readTextCapped } from '../util/read-capped.js';
import { errorMessage } from '../util/error-message.js';

export { CheckpointError, isOurCheckpoint, ourCheckpointNumber, readCptFile, writeCptFile, formatCptFile };

// ---------------------------------------------------------------------------------------------
// The libvirt surface used here

/** What this module needs of a libvirt checkpoint (VirtCheckpoint satisfies it). */
export interface CheckpointHandle {
  readonly name: string;
  /** The domain the checkpoint belongs to (validation redefines through it). */
  readonly domain: CheckpointDomain;
  /** flags: CHECKPOINT_XML */
  xmlDesc(flags?: number): Promise<string>;
  /** flags: CHECKPOINT_DELETE */
  delete(flags?: number): Promise<void>;
}

/** What this module needs of a libvirt domain (VirtDomain satisfies it). */
export interface CheckpointDomain {
  readonly name: string;
  /** flags: CHECKPOINT_LIST */
  listCheckpoints(flags?: number): Promise<CheckpointHandle[]>;
  /** Rejects with `.code === VIR_ERR.NO_DOMAIN_CHECKPOINT` when there is no such checkpoint. */
  checkpointLookupByName(name: string): Promise<CheckpointHandle>;
  /** flags: CHECKPOINT_CREATE */
  checkpointCreateXML(xml: string, flags?: number): Promise<CheckpointHandle>;
}

// Compile-time proof that the real binding fits.
type Fits<T, U> = T extends U ? true : never;
const virtDomainFits: Fits<VirtDomain, CheckpointDomain> = true;
void virtDomainFits;

const REDEFINE_VALIDATE = CHECKPOINT_CREATE.REDEFINE | CHECKPOINT_CREATE.REDEFINE_VALIDATE;

function errorCode(e: unknown): unknown {
  return typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
}

function isNoSuchCheckpoint(e: unknown): boolean {
  return errorCode(e) === VIR_ERR.NO_DOMAIN_CHECKPOINT;
}

/** libvirt's "missing or broken bitmap" (VIR_ERR_CHECKPOINT_INCONSISTENT) on redefinition with validation. */
function isLostBitmap(e: unknown): boolean {
  return errorCode(e) === VIR_ERR.CHECKPOINT_INCONSISTENT || /missing or broken bitmap/i.test(errorMessage(e));
}

const byNumber = (a: string, b: string): number => (ourCheckpointNumber(a) ?? 0) - (ourCheckpointNumber(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0);

// ---------------------------------------------------------------------------------------------
// Checkpoint XML

/**
 * The XML of a new checkpoint (BEHAVIOUR.md §5.2): description `Backup checkpoint`, `name`,
 * `parent/name` when `parent` is not empty, one `disks/disk@name` per device in `devs` (the
 * selected disks whose format is not raw; disks not listed get no bitmap). Throws a TypeError
 * for a name that is not ours, a parent that is neither '' nor ours, or an empty/duplicate `devs`.
 */
export function checkpointXml(name: string, parent: string, devs: readonly string[]): string {
  if (!isOurCheckpoint(name)) throw new TypeError(`checkpointXml: [${name}] is not a checkpoint name of ours`);
  if (parent !== '' && !isOurCheckpoint(parent)) throw new TypeError(`checkpointXml: parent [${parent}] is not a checkpoint name of ours`);
  if (devs.length === 0) throw new TypeError('checkpointXml: no disks (libvirt would put every disk into the checkpoint)');
  if (new Set(devs).size !== devs.length) throw new TypeError(`checkpointXml: duplicate disks in [${devs.join(', ')}]`);
  const lines = ['<domaincheckpoint>', '  <description>Backup checkpoint</description>', `  <name>${xmlEscape(name)}</name>`];
  if (parent !== '') lines.push(`  <parent><name>${xmlEscape(parent)}</name></parent>`);
  lines.push('  <disks>', ...devs.map((d) => `    <disk name="${xmlEscape(d)}"/>`), '  </disks>', '</domaincheckpoint>', '');
  return lines.join('\n');
}

type XmlNode = { [key: string]: XmlNode[] | string | undefined };

const xmlParser = makeXmlParser({
  ignoreAttributes: true,
  trimValues: true,
  alwaysCreateTextNode: true,
  isArray: () => true,
});

/**
 * `name` (and `parent/name`, '' when absent) of a `<domaincheckpoint>` document. Throws an Error
 * describing the problem when the text is not well-formed or has no such root or no name.
 */
export function parseCheckpointXml(xml: string): { name: string; parent: string } {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const doc = guardedParse(() => xmlParser.parse(xml) as XmlNode, 'not well-formed XML');
  const roots = Object.keys(doc).filter((k) => !k.startsWith('?') && k !== '#text');
  const root = doc.domaincheckpoint;
  if (roots.length !== 1 || !Array.isArray(root) || root.length !== 1) throw new Error('expected a single <domaincheckpoint> root element');
  const text = (n: XmlNode | undefined): string => {
    const t = n?.['#text'];
    return typeof t === 'string' ? decodeXmlEntities(t) : '';
  };
  const first = (n: XmlNode | undefined, k: string): XmlNode | undefined => {
    const v = n?.[k];
    return Array.isArray(v) ? v[0] : undefined;
  };
  const name = text(first(root[0], 'name'));
  if (name === '') throw new Error('the checkpoint has no <name>');
  return { name, parent: text(first(first(root[0], 'parent'), 'name')) };
}

const attrParser = makeXmlParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  trimValues: true,
  isArray: (_name: string, _jpath: unknown, _leaf: boolean, isAttribute: boolean) => !isAttribute,
});

type AttrNode = { [key: string]: AttrNode[] | string | undefined };

/**
 * The disks of a `<domaincheckpoint>` document (as libvirt returns it) that have a bitmap in
 * that checkpoint: `<disks><disk name="vda" checkpoint="bitmap" …/>`. Empty for a text that is
 * not well-formed or has no such disks.
 */
export function checkpointBitmapDisks(xml: string): Set<string> {
  const out = new Set<string>();
  if (XMLValidator.validate(xml) !== true) return out;
  let doc: AttrNode;
  try {
    doc = attrParser.parse(xml) as AttrNode;
  } catch {
    return out;
  }
  const list = (n: AttrNode | undefined, k: string): AttrNode[] => {
    const v = n?.[k];
    return Array.isArray(v) ? v : [];
  };
  for (const root of list(doc, 'domaincheckpoint')) {
    for (const disks of list(root, 'disks')) {
      for (const disk of list(disks, 'disk')) {
        const name = disk['@_name'];
        if (typeof name === 'string' && disk['@_checkpoint'] === 'bitmap') out.add(decodeXmlEntities(name));
      }
    }
  }
  return out;
}

/**
 * Independent chains (--chain): libvirt records as parent whatever checkpoint was current when a
 * checkpoint was created, which can belong to another chain. When that parent is not ours and
 * libvirt does not know it (lost metadata), the checkpoint is redefined without a parent (libvirt
 * refuses an unknown parent; the bitmap, which is what the next backup uses, is validated as usual).
 */
async function withKnownParent(dom: CheckpointDomain, xml: string, log: Logger): Promise<string> {
  const { name, parent } = parseCheckpointXml(xml);
  if (parent === '' || isOurCheckpoint(parent)) return xml;
  try {
    await dom.checkpointLookupByName(parent);
    return xml;
  } catch (e) {
    if (!isNoSuchCheckpoint(e)) throw e;
  }
  // The checkpoint's own <parent> comes before its <disks> and the embedded <domain>.
  const head = xml.search(/<disks[\s>]|<domain[\s>]/);
  const cut = head < 0 ? xml.length : head;
  const stripped = xml.slice(0, cut).replace(/[ \t]*<parent>\s*<name>[^<]*<\/name>\s*<\/parent>[ \t]*\r?\n?/, '') + xml.slice(cut);
  log.info(`Checkpoint [${name}]: its parent [${parent}] belongs to another chain and is unknown to libvirt; redefining it without a parent.`);
  return stripped;
}

// ---------------------------------------------------------------------------------------------
// Foreign checkpoints (§3.7) and validation (§3.4)

/** Names of the domain's checkpoints that are not ours (D21), sorted; the caller refuses the run when any exist. */
export async function findForeignCheckpoints(dom: CheckpointDomain): Promise<string[]> {
  const all = await dom.listCheckpoints();
  return all
    .map((c) => c.name)
    .filter((n) => !isAnyChainCheckpoint(n)) // other --chain's checkpoints are not foreign
    .sort();
}

/**
 * §3.4: a checkpoint is valid when libvirt accepts its own description (flags 0) back with
 * REDEFINE | REDEFINE_VALIDATE, i.e. its bitmaps exist in every disk image and are consistent.
 * Any failure → warning `Failed to validate checkpoint: [<libvirt message>]` and false.
 * (libvirt validates only on a running domain; on a shut-off one this reports invalid.)
 */
export async function validateCheckpoint(cp: CheckpointHandle, log: Logger): Promise<boolean> {
  try {
    const xml = await cp.xmlDesc(0);
    await cp.domain.checkpointCreateXML(xml, REDEFINE_VALIDATE);
    log.debug(`Checkpoint [${cp.name}] is valid.`);
    return true;
  } catch (e) {
    log.warn(`Failed to validate checkpoint: [${errorMessage(e)}]`);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The per-run plan (§3.3)

export interface CheckpointPlanArgs {
  /** Level after auto resolution (and after the shut-off / raw-disk switches to copy). */
  level: BackupLevel;
  /** The domain is running (or was started paused with -S). */
  online: boolean;
  /** `<domain>.cpt` as read at the start of the run. */
  cpt: readonly string[];
  /** Validates the parent (the last `.cpt` entry) of an online inc/diff; called only then. */
  validateParent: () => Promise<boolean>;
}

export interface CheckpointPlan {
  /** Effective level: the requested one, or `full` after a fallback. */
  level: BackupLevel;
  /** Level used in data file names: the requested one, also after a fallback (FORMAT.md §6.2). */
  fileLevel: BackupLevel;
  /** Checkpoint name of the run (created for online full/inc, recorded in metadata otherwise). */
  name: string;
  /** Parent checkpoint ('' for copy, full and a fallback full). */
  parent: string;
  /** An online inc/diff whose parent was invalid became a full (§3.3 step 5): the caller logs
   * `Checkpoint [<parent>] is invalid, switching backup to full.`, creates `name` and appends it
   * to `.cpt`, and does NOT delete the existing checkpoints. */
  fallbackFull: boolean;
}

/**
 * §3.3 steps 1, 3, 5–7 (the caller does the redefinition of step 2 before, and the deletion of
 * step 4 as late as possible). inc/diff with an empty list → CheckpointError
 * `No existing checkpoints found, execute full backup first.`
 */
export async function planCheckpoint(a: CheckpointPlanArgs): Promise<CheckpointPlan> {
  const base: CheckpointPlan = { level: a.level, fileLevel: a.level, name: checkpointNameOf(0), parent: '', fallbackFull: false };
  if (a.level === 'copy' || a.level === 'full') return base;
  if (a.cpt.length === 0) throw new CheckpointError('No existing checkpoints found, execute full backup first.');
  const parent = a.cpt[a.cpt.length - 1]!;
  const name = checkpointNameOf(a.cpt.length);
  if (!a.online) return { ...base, name: parent, parent };
  if (await a.validateParent()) return { ...base, name, parent };
  return { level: 'full', fileLevel: a.level, name, parent: '', fallbackFull: true };
}

// ---------------------------------------------------------------------------------------------
// Redefinition from the checkpoint directory (§3.6)

const XML_FILE_RE = { test: (n: string): boolean => n.endsWith('.xml') && isOurCheckpoint(n.slice(0, -4)) }; // `<our checkpoint>.xml` (--chain aware)

/** Our checkpoint XML files in `dir` (`virtnbdbackup.<N>.xml`), by number; [] when `dir` does not exist. */
async function ourXmlFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.filter((n) => XML_FILE_RE.test(n)).sort((a, b) => byNumber(a.slice(0, -4), b.slice(0, -4)));
}

export interface RedefineOptions {
  /** The parent an inc/diff needs (last `.cpt` entry); undefined for other levels. */
  neededParent?: string;
}

export interface RedefineResult {
  /** The needed parent could not be redefined because its bitmap is missing or broken (D36):
   * the caller treats it like an invalid parent (fallback to full). */
  parentMissingBitmap: boolean;
}

/**
 * §3.6: feeds the checkpoint XML files of `dir` that libvirt does not know back to libvirt
 * (REDEFINE | REDEFINE_VALIDATE), on a running domain at the start of every run.
 *
 * Only `virtnbdbackup.<N>.xml` files are used (other `*.xml` files of a shared or user-chosen
 * directory are left alone and never turned into checkpoints), in checkpoint-number order so
 * that parents come before children (D40). A file must describe the checkpoint it is named after.
 *
 * A redefinition refused because a bitmap is missing or broken (VIR_ERR_CHECKPOINT_INCONSISTENT):
 * - of the needed parent → `parentMissingBitmap: true`, not fatal (D36);
 * - of a checkpoint older than the needed parent, or of any checkpoint when no parent is needed
 *   (a full, which removes our checkpoints and XML files anyway) → warning, not fatal: these
 *   checkpoints are no longer used, and failing here would block every later run, the full that
 *   repairs the chain included (the defect D36 describes);
 * - of any other checkpoint → fatal like every other failure.
 * Fatal failures (unreadable or invalid file, lookup error other than "no such checkpoint",
 * other libvirt errors) log an ERROR line and throw CheckpointError `Failed to redefine checkpoints.`
 */
export async function redefineFromDirectory(dom: CheckpointDomain, dir: string, log: Logger, opts: RedefineOptions = {}): Promise<RedefineResult> {
  const fatal = (line: string): never => {
    log.error(line);
    throw new CheckpointError('Failed to redefine checkpoints.');
  };
  const result: RedefineResult = { parentMissingBitmap: false };
  const neededNo = opts.neededParent !== undefined ? ourCheckpointNumber(opts.neededParent) : undefined;
  let files: string[] = [];
  try {
    files = await ourXmlFiles(dir);
  } catch (e) {
    fatal(`Unable to read checkpoint directory [${dir}]: ${errorMessage(e)}`);
  }
  for (const file of files) {
    const path = join(dir, file);
    const fileName = file.slice(0, -'.xml'.length);
    let xml = '';
    try {
      xml = await readTextCapped(path, MAX_XML_FILE);
    } catch (e) {
      fatal(`Redefining checkpoint failed: [${fileName}]: unable to read [${path}]: ${errorMessage(e)}`);
    }
    let name = '';
    try {
      name = parseCheckpointXml(xml).name;
    } catch (e) {
      fatal(`Redefining checkpoint failed: [${fileName}]: invalid checkpoint file [${path}]: ${errorMessage(e)}`);
    }
    if (name !== fileName) fatal(`Redefining checkpoint failed: [${fileName}]: the file [${path}] describes checkpoint [${name}]`);
    try {
      await dom.checkpointLookupByName(name);
      log.debug(`Checkpoint [${name}] is known to libvirt.`);
      continue;
    } catch (e) {
      if (!isNoSuchCheckpoint(e)) fatal(`Failed to look up checkpoint [${name}]: ${errorMessage(e)}`);
    }
    try {
      await dom.checkpointCreateXML(await withKnownParent(dom, xml, log), REDEFINE_VALIDATE);
      log.info(`Redefined missing checkpoint [${name}] from [${path}].`);
    } catch (e) {
      const no = ourCheckpointNumber(name)!;
      if (isLostBitmap(e) && name === opts.neededParent) {
        log.info(`Checkpoint [${name}] cannot be redefined: ${errorMessage(e)}`);
        result.parentMissingBitmap = true;
      } else if (isLostBitmap(e) && (opts.neededParent === undefined || (neededNo !== undefined && no < neededNo))) {
        log.warn(`Checkpoint [${name}] cannot be redefined, it is no longer usable: ${errorMessage(e)}`);
      } else {
        fatal(`Redefining checkpoint failed: [${name}]: ${errorMessage(e)}`);
      }
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Saving the checkpoint XML (FORMAT.md §6.4)

/**
 * Writes `<dir>/<name>.xml` atomically with the checkpoint's description exactly as libvirt
 * returns it (with CHECKPOINT_XML.SIZE, so disks carry `size`; without it when libvirt refuses
 * the flag). Returns the path. Failure → CheckpointError `Extending checkpoint file failed: [<reason>]`.
 */
export async function saveCheckpointXml(dom: CheckpointDomain, name: string, dir: string): Promise<string> {
  if (!isOurCheckpoint(name)) throw new TypeError(`saveCheckpointXml: [${name}] is not a checkpoint name of ours`);
  const path = join(dir, `${name}.xml`);
  try {
    assertNoSymlink(dir); // a planted checkpoints -> elsewhere link (src/util/safe-path.ts)
    const cp = await dom.checkpointLookupByName(name);
    let xml: string;
    try {
      xml = await cp.xmlDesc(CHECKPOINT_XML.SIZE);
    } catch {
      xml = await cp.xmlDesc(0);
    }
    await writeFileAtomic(path, xml, { replace: true });
  } catch (e) {
    const m = errorMessage(e);
    throw new CheckpointError(`Extending checkpoint file failed: [${m.includes(path) ? m : `${path}: ${m}`}]`);
  }
  return path;
}

// ---------------------------------------------------------------------------------------------
// Deletion before a full (§3.5)

/** One checkpoint of ours, removed as §3.5 step 2 says: invalid → metadata only, valid → normal delete. */
async function removeCheckpoint(cp: CheckpointHandle, log: Logger): Promise<void> {
  if (await validateCheckpoint(cp, log)) {
    await cp.delete(0);
    log.info(`Removed checkpoint [${cp.name}].`);
  } else {
    log.warn('Checkpoint inconsistency detected, removing metadata for checkpoint.');
    await cp.delete(CHECKPOINT_DELETE.METADATA_ONLY);
    log.info(`Removed metadata of checkpoint [${cp.name}].`);
  }
}

/**
 * §3.5, before a full backup:
 * 1. removes our XML files (`virtnbdbackup.<N>.xml` only) from `checkpointDir`;
 * 2. removes in libvirt the checkpoints named in `cptNames` (every checkpoint of the domain when
 *    it is empty), skipping names that are not ours; a listed name libvirt does not know is
 *    skipped with a warning (D29); every other checkpoint of ours libvirt knows is removed too
 *    (leftovers of failed runs, the full reuses `virtnbdbackup.0`). Oldest first: removing a
 *    checkpoint without parent drops its bitmaps without merging them.
 * Each is validated first (§3.4): invalid → warning `Checkpoint inconsistency detected, removing
 * metadata for checkpoint.` and a metadata-only delete; valid → normal delete.
 * Any error → ERROR `Error during checkpoint removal: [<reason>]`, CheckpointError `Failed to remove checkpoint.`
 */
export async function deleteOurCheckpoints(dom: CheckpointDomain, cptNames: readonly string[], checkpointDir: string, log: Logger): Promise<void> {
  const fail = (e: unknown): never => {
    log.error(`Error during checkpoint removal: [${errorMessage(e)}]`);
    throw new CheckpointError('Failed to remove checkpoint.');
  };
  try {
    const files = await ourXmlFiles(checkpointDir);
    for (const f of files) {
      try {
        await unlink(join(checkpointDir, f));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      log.debug(`Removed checkpoint file [${join(checkpointDir, f)}].`);
    }
    if (files.length > 0) await syncDir(checkpointDir);
  } catch (e) {
    fail(e);
  }

  let known: CheckpointHandle[] = [];
  try {
    known = await dom.listCheckpoints();
  } catch (e) {
    fail(e);
  }
  const byName = new Map(known.map((c) => [c.name, c]));
  const targets: CheckpointHandle[] = [];
  const take = (n: string): void => {
    const c = byName.get(n);
    if (c === undefined) return;
    targets.push(c);
    byName.delete(n);
  };
  for (const n of cptNames) {
    if (!isOurCheckpoint(n)) {
      log.debug(`Skipping checkpoint [${n}]: not created by this utility.`);
    } else if (!byName.has(n)) {
      log.warn(`Checkpoint [${n}] is not known to libvirt, skipping its removal.`);
    } else {
      take(n);
    }
  }
  const rest = [...byName.keys()].filter((n) => {
    if (isOurCheckpoint(n)) return true;
    log.debug(`Skipping checkpoint [${n}]: not created by this utility.`);
    return false;
  });
  for (const n of rest.sort(byNumber)) take(n);

  for (const cp of targets) {
    try {
      await removeCheckpoint(cp, log);
    } catch (e) {
      fail(e);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Interrupted runs (§3.9)

export type InterruptedRunState =
  | { kind: 'clean' }
  | {
      kind: 'recoverable';
      /** Our checkpoint that libvirt knows but `.cpt` does not list (`virtnbdbackup.<len(.cpt)>`). */
      staleCheckpoint?: string;
      /** `*.data.partial` names (in the output directory) of the interrupted run. */
      partials: string[];
      /** Other files of the interrupted run in the output directory: data files it completed, their
       * `.chksum`, its side files (`vmconfig.<ident>.xml`, `<dev>.<ident>.qcow.json`, …). */
      files: string[];
      /** `<checkpointdir>/<stale>.xml` when the run got as far as writing it. */
      checkpointXmlFile?: string;
    }
  | { kind: 'refuse'; message: string };

export type RecoverableRun = Extract<InterruptedRunState, { kind: 'recoverable' }>;

export interface InspectArgs {
  dom: CheckpointDomain;
  /** The backup directory. */
  outputDir: string;
  /** `.cpt` as read. */
  cpt: readonly string[];
  /** Names of the `*.data.partial` files in `outputDir` (TargetState.partials). */
  partialFiles: readonly string[];
  log: Logger;
  /** Checkpoint directory (`-C`); default `<outputDir>/checkpoints`. */
  checkpointDir?: string;
}

const FAILED_RE = /\.failed-[0-9]+$/;
const UNIX_TIME_RE = /^[0-9]+$/;
const LOG_RE = /^backup\.[a-z]+\.[0-9]{14}\.log$/;

/** True when `file` carries the run identifier `ident` as a dot-separated component (FORMAT.md §6.1–6.2:
 * `<dev>.inc.<ident>.data[.chksum]`, `vmconfig.<ident>.xml`, `<dev>.<ident>.qcow.json`, `<boot file>.<ident>`, …). */
function carriesIdent(file: string, ident: string): boolean {
  return file.endsWith(`.${ident}`) || file.includes(`.${ident}.`);
}

/**
 * §3.9: decides whether the target shows the traces of one of our runs that was killed before it
 * could clean up, for an inc/diff run about to continue the chain. With N = `.cpt` length, the
 * pattern of such a run is, exactly:
 * - every `*.data.partial` file is `<dev>.(inc|diff).<ident>.data.partial` with one common ident,
 *   which is either `virtnbdbackup.N` (an online inc or a fallback full: the checkpoint it was
 *   creating, not yet listed) or a Unix time (a diff or an offline inc, which create none);
 * - the checkpoints of ours that libvirt knows but `.cpt` does not list are none or exactly
 *   `virtnbdbackup.N` (also: an `-s` job ended with `-k`, or a failed clean-up);
 * - the complete data files whose ident is one of our checkpoint names not listed in `.cpt` all
 *   carry `virtnbdbackup.N` (the run was killed after some or all disks completed).
 * At least one of these traces → `recoverable` (with every file of that run: the partials, the
 * files carrying its ident, and `<checkpointdir>/virtnbdbackup.N.xml`); none → `clean`.
 * Anything else → `refuse` with what was found and what to do, in particular partial files of a
 * checkpoint `.cpt` already lists, and a listed checkpoint (after the first) without any complete
 * `<dev>.(inc|diff).<checkpoint>.data` — both left by the original, which lists a checkpoint
 * before its data is safe: continuing would lose that checkpoint's changes; also partial files
 * of several runs or of a full/copy, unlisted checkpoints other than N, and an empty `.cpt`
 * with traces. Directory mode only (in zip mode the data files are not in the directory).
 */
/** The checkpoint a full data file records ('' when unreadable: then it covers nothing). */
function fullCheckpointOf(path: string): string {
  try {
    return readSavesetMetadata(path).metadata.checkpointName;
  } catch {
    return '';
  }
}

export async function inspectInterruptedRun(a: InspectArgs): Promise<InterruptedRunState> {
  const listed = new Set(a.cpt);
  const n = a.cpt.length;
  const expected = checkpointNameOf(n);
  const cptName = `${a.dom.name}.cpt`;
  const partials = [...new Set(a.partialFiles.map((p) => basename(p)))].sort();

  let known: string[];
  try {
    known = (await a.dom.listCheckpoints()).map((c) => c.name);
  } catch (e) {
    throw new CheckpointError(`Failed to list checkpoints: [${errorMessage(e)}]`);
  }
  const stale = known.filter((c) => isOurCheckpoint(c) && !listed.has(c)).sort(byNumber);

  let names: string[] = [];
  try {
    names = (await readdir(a.outputDir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const unlistedIdents = new Set<string>();
  for (const f of names) {
    const d = parseDataFileName(f);
    if (d?.ident !== undefined && isOurCheckpoint(d.ident) && !listed.has(d.ident)) unlistedIdents.add(d.ident);
  }

  const fullAdvice = `Run a full backup into a new directory to start a new chain.`;

  // The partial files: one run, inc/diff, its ident.
  const partialIdents = new Set<string>();
  const odd: string[] = [];
  for (const p of partials) {
    const d = isPartialName(p) ? parseDataFileName(p.slice(0, -'.partial'.length)) : undefined;
    if (d === undefined || d.ident === undefined || (d.level !== 'inc' && d.level !== 'diff')) odd.push(p);
    else partialIdents.add(d.ident);
  }
  if (odd.length > 0) {
    return { kind: 'refuse', message: `Unexpected partial file(s) [${odd.join(', ')}] in [${a.outputDir}]: not left by an incremental or differential backup of this chain. ${fullAdvice}` };
  }
  if (partialIdents.size > 1) {
    return {
      kind: 'refuse',
      message: `Partial files of more than one backup run in [${a.outputDir}] ([${partials.join(', ')}]): move them out of the directory if the chain is known to be intact, or run a full backup into a new directory.`,
    };
  }
  const ident = partialIdents.values().next().value as string | undefined;
  if (ident !== undefined && isOurCheckpoint(ident)) {
    if (listed.has(ident)) {
      return {
        kind: 'refuse',
        message:
          `Checkpoint [${ident}] is listed in [${cptName}] but its data files are incomplete ([${partials.join(', ')}]): ` +
          `the changes it should contain never reached the backup, continuing the chain would lose them. ${fullAdvice}`,
      };
    }
    if (ident !== expected) {
      return { kind: 'refuse', message: `Partial files [${partials.join(', ')}] belong to checkpoint [${ident}], but the next checkpoint of [${cptName}] is [${expected}]. ${fullAdvice}` };
    }
  } else if (ident !== undefined && !UNIX_TIME_RE.test(ident)) {
    return { kind: 'refuse', message: `Partial files [${partials.join(', ')}] were not written by a backup of this chain. ${fullAdvice}` };
  }

  // Every listed checkpoint after the full needs a complete data file (inc, or a diff that fell
  // back to full); one without was registered by a run that never delivered its data (original).
  const withData = new Set<string>();
  for (const f of names) {
    const d = parseDataFileName(f);
    if (d?.ident !== undefined) withData.add(d.ident);
    // A synthetic full (virtnbdprune) records a later checkpoint: the listed checkpoints up to it were merged into it.
    if (d?.level === 'full') {
      const merged = a.cpt.indexOf(fullCheckpointOf(join(a.outputDir, f)));
      for (let i = 0; i <= merged; i++) withData.add(a.cpt[i]!);
    }
  }
  const noData = a.cpt.slice(1).filter((c) => !withData.has(c));
  if (noData.length > 0) {
    return {
      kind: 'refuse',
      message:
        `Checkpoint(s) [${noData.join(', ')}] listed in [${cptName}] have no data file in [${a.outputDir}]: ` +
        `the changes they track are not in the backup, continuing the chain would lose them. ${fullAdvice}`,
    };
  }

  if (partials.length === 0 && stale.length === 0 && unlistedIdents.size === 0) return { kind: 'clean' };
  if (n === 0) {
    return { kind: 'refuse', message: `[${cptName}] lists no checkpoint, so there is no chain to continue. ${fullAdvice}` };
  }

  const staleOther = stale.filter((c) => c !== expected);
  if (staleOther.length > 0) {
    return {
      kind: 'refuse',
      message:
        `Checkpoint(s) [${staleOther.join(', ')}] of domain [${a.dom.name}] are not listed in [${cptName}] and are not the next checkpoint [${expected}]: ` +
        `delete them (virsh checkpoint-delete ${a.dom.name} <name>) if they belong to no other backup chain, or run a full backup.`,
    };
  }
  const identsOther = [...unlistedIdents].filter((i) => i !== expected).sort(byNumber);
  if (identsOther.length > 0) {
    return {
      kind: 'refuse',
      message: `Data files of checkpoint(s) [${identsOther.join(', ')}] in [${a.outputDir}] are not listed in [${cptName}] and are not the next checkpoint [${expected}]. ${fullAdvice}`,
    };
  }

  // Recoverable: collect the files of the interrupted run(s).
  const runIdents = new Set<string>();
  if (ident !== undefined) runIdents.add(ident);
  if (stale.length > 0 || unlistedIdents.size > 0) runIdents.add(expected);
  const partialSet = new Set(partials);
  // Never the chain state or the logs, nor files already moved aside.
  const keep = (f: string): boolean => f === cptName || LOG_RE.test(f) || FAILED_RE.test(f) || partialSet.has(f);
  const files = names.filter((f) => !keep(f) && [...runIdents].some((i) => carriesIdent(f, i)));
  const checkpointDir = a.checkpointDir ?? join(a.outputDir, 'checkpoints');
  const xmlFile = join(checkpointDir, `${expected}.xml`);
  const state: RecoverableRun = { kind: 'recoverable', partials, files };
  if (stale.length > 0) state.staleCheckpoint = expected;
  if (runIdents.has(expected) && (await pathExists(xmlFile))) state.checkpointXmlFile = xmlFile;
  a.log.debug(`Interrupted backup run found: ${JSON.stringify(state)}`);
  return state;
}

export interface RecoverArgs {
  dom: CheckpointDomain;
  outputDir: string;
  state: RecoverableRun;
  log: Logger;
  /** Unix time of this run: files are renamed to `<name>.failed-<unixTime>`. */
  unixTime: number;
}

/**
 * §3.9 recovery of a state `inspectInterruptedRun` found recoverable, with a warning per step:
 * 1. deletes the stale checkpoint (normal delete: its changes stay tracked by its parent). On a
 *    shut-off domain libvirt cannot remove bitmaps: the checkpoint is kept (warning) and removed
 *    by the next run on the running domain. When the normal delete fails and the checkpoint
 *    fails validation, its metadata is removed (as §3.5 does); otherwise CheckpointError.
 * 2. renames the run's files (partials, completed files, checkpoint XML) to
 *    `<name>.failed-<unixTime>`, which no reader matches, never replacing an existing file.
 * The chain then continues from the last `.cpt` entry.
 */
export async function recoverInterruptedRun(a: RecoverArgs): Promise<void> {
  const { dom, log, state } = a;
  if (state.staleCheckpoint !== undefined) {
    const name = state.staleCheckpoint;
    let cp: CheckpointHandle | undefined;
    try {
      cp = await dom.checkpointLookupByName(name);
    } catch (e) {
      if (!isNoSuchCheckpoint(e)) throw new CheckpointError(`Failed to look up checkpoint [${name}] of an interrupted backup run: ${errorMessage(e)}`);
    }
    if (cp !== undefined) {
      try {
        await cp.delete(0);
        log.warn(`Removed checkpoint [${name}] of an interrupted backup run (not listed in ${dom.name}.cpt).`);
      } catch (e) {
        if (errorCode(e) === VIR_ERR.OPERATION_UNSUPPORTED) {
          log.warn(`Checkpoint [${name}] of an interrupted backup run cannot be removed while the domain is shut off (${errorMessage(e)}); the next backup of the running domain removes it.`);
        } else if (!(await validateCheckpoint(cp, log))) {
          log.warn('Checkpoint inconsistency detected, removing metadata for checkpoint.');
          try {
            await cp.delete(CHECKPOINT_DELETE.METADATA_ONLY);
          } catch (e2) {
            throw new CheckpointError(`Failed to remove checkpoint [${name}] of an interrupted backup run: ${errorMessage(e2)}. Remove it with: virsh checkpoint-delete ${dom.name} ${name} --metadata`);
          }
          log.warn(`Removed metadata of checkpoint [${name}] of an interrupted backup run (not listed in ${dom.name}.cpt).`);
        } else {
          throw new CheckpointError(`Failed to remove checkpoint [${name}] of an interrupted backup run: ${errorMessage(e)}. Remove it with: virsh checkpoint-delete ${dom.name} ${name}`);
        }
      }
    }
  }
  const moves: Array<[string, string]> = [...state.partials, ...state.files].map((f) => [join(a.outputDir, f), join(a.outputDir, `${f}.failed-${a.unixTime}`)]);
  if (state.checkpointXmlFile !== undefined) moves.push([state.checkpointXmlFile, `${state.checkpointXmlFile}.failed-${a.unixTime}`]);
  const dirs = new Set<string>();
  for (const [from, to] of moves) {
    try {
      await publishNoReplace(from, to);
    } catch (e) {
      throw new CheckpointError(`Failed to move [${from}] of an interrupted backup run aside: ${errorMessage(e)}`);
    }
    dirs.add(dirname(to));
    log.warn(`Moved [${from}] of an interrupted backup run aside: [${basename(to)}].`);
  }
  for (const d of dirs) await syncDir(d);
}
