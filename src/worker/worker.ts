/**
 * The Node worker of the nbdkit plugin shim (docs/PROTOCOL.md). Started by the shim as
 *   node worker.js --resolve [--fds=N] FILE...   (worker 0: resolve the chain, send the table, then serve)
 *   node worker.js --serve [--fds=N] FILE...     (answer read requests for compressed data, lz4=worker)
 * With --fds=N, file i is read through the inherited descriptor N + i (the very file the shim
 * opened and checked); the paths only name the files. Without it, the paths are opened.
 * It talks to the shim over fd 3 (a socketpair), synchronously: read one request, answer it.
 * Never writes to stdout; errors go to the shim (status + message) or, failing that, to stderr.
 * Exits 0 when the shim closes the socket.
 */
import { openSync, readSync, writeSync } from 'node:fs';
import { FrameCache } from './frame-cache.js';
import { errorMessage } from '../util/error-message.js';

const SOCK = 3;
const EIO = 5;
const ENOMEM = 12;
const EINVAL = 22;
const REQ_MAGIC = 0x5244524e;
const REQ_LEN = 40;
const MAX_COUNT = 64 * 1024 * 1024;
const MAX_USIZE = 256 * 1024 * 1024;
const MAX_MSG = 64 * 1024;

/** lz4.decodeLz4FrameAsync (liblz4 on the libuv pool: decoding does not block the request loop). */
type DecodeLz4Frame = (frame: Buffer, expectedSize: number, file: string, offset: number) => Promise<Buffer>;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** The shim went away or broke the protocol: nothing sensible is left to do. */
class ProtocolEnd extends Error {}

function isAgain(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR';
}

/** Fill `buf` from fd. false on EOF before the first byte (when allowed); throws on a partial read. */
function readExact(fd: number, buf: Buffer, eofOk: boolean, position: number | null = null): boolean {
  let got = 0;
  while (got < buf.length) {
    let n: number;
    try {
      n = readSync(fd, buf, got, buf.length - got, position === null ? null : position + got);
    } catch (err) {
      if (!isAgain(err)) throw err;
      Atomics.wait(sleeper, 0, 0, 1);
      continue;
    }
    if (n === 0) {
      if (got === 0 && eofOk) return false;
      const e = new Error(`unexpected end of file after ${got} of ${buf.length} bytes`);
      (e as NodeJS.ErrnoException).code = 'EOF';
      throw e;
    }
    got += n;
  }
  return true;
}

function writeAll(buf: Buffer): void {
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(SOCK, buf, off, buf.length - off);
    } catch (err) {
      if (!isAgain(err)) throw new ProtocolEnd(`cannot write to the shim: ${(err as Error).message}`);
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}

function sendHeader(status: number, length: number): void {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(status, 0);
  h.writeUInt32LE(length, 4);
  writeAll(h);
}

function sendError(status: number, message: string): void {
  let body = Buffer.from(message, 'utf8');
  if (body.length > MAX_MSG) body = body.subarray(0, MAX_MSG);
  sendHeader(status, body.length);
  writeAll(body);
}

function logStderr(message: string): void {
  try {
    writeSync(2, `virtnbd worker ${process.pid}: ${message}\n`);
  } catch {
    /* stderr gone: nothing to do */
  }
}

/** Errors about the input files (their structure, the chain) as opposed to I/O or bugs. */
const INPUT_ERRORS = new Set(['SavesetFormatError', 'ChainError', 'TableError']);

function errorStatus(err: unknown): number {
  if (err instanceof RangeError && /alloc/i.test(err.message)) return ENOMEM;
  return err instanceof Error && INPUT_ERRORS.has(err.name) ? EINVAL : EIO;
}

/**
 * --resolve: index every file, resolve the chain, send the table; returns the LZ4 decoder for
 * serving (loaded before answering, so a broken installation fails at start-up). Exits 1 on failure.
 */
async function resolve(files: string[], fds: number[] | undefined): Promise<DecodeLz4Frame> {
  let table: Buffer;
  let decode: DecodeLz4Frame;
  try {
    const [{ indexDataFile }, { indexDataFd }, { resolveChain }, { encodeTable }, lz4] = await Promise.all([
      import('../chain/data-file.js'),
      import('./fd-index.js'),
      import('../chain/resolve.js'),
      import('./table.js'),
      import('../saveset/lz4.js'),
    ]);
    decode = lz4.decodeLz4FrameAsync;
    table = encodeTable(resolveChain(files.map((f, i) => (fds ? indexDataFd(fds[i]!, f) : indexDataFile(f)))));
  } catch (err) {
    // SavesetFormatError, ChainError, TableError → EINVAL; I/O errors (ENOENT, EACCES) → EIO.
    sendError(errorStatus(err), errorMessage(err));
    process.exit(1);
  }
  sendHeader(0, table.length);
  writeAll(table);
  return decode;
}

class Server {
  private readonly fds: (number | undefined)[] = [];
  private readonly cache = new FrameCache();

  constructor(
    private readonly files: string[],
    private readonly decode: DecodeLz4Frame,
    inherited: number[] | undefined,
  ) {
    if (inherited) this.fds.push(...inherited);
  }

  private fd(file: number): number {
    let fd = this.fds[file];
    if (fd === undefined) fd = this.fds[file] = openSync(this.files[file], 'r');
    return fd;
  }

  /**
   * The decoded frame (from the cache, or read and decoded on the libuv thread pool: the loop
   * stays synchronous, a miss just waits for the decode). Errors name the file and offset.
   */
  private async frame(file: number, offset: number, csize: number, usize: number): Promise<Buffer> {
    const hit = this.cache.get(file, offset);
    if (hit !== undefined && hit.length === usize) return hit;
    const path = this.files[file];
    const raw = Buffer.allocUnsafe(csize);
    try {
      readExact(this.fd(file), raw, false, offset);
    } catch (err) {
      throw new Error(`${path}: cannot read the LZ4 frame at byte offset ${offset} (${csize} bytes): ${errorMessage(err)}`);
    }
    const data = await this.decode(raw, usize, path, offset);
    if (data.length !== usize) {
      throw new Error(`${path}: at byte offset ${offset}: LZ4 frame decodes to ${data.length} bytes, expected ${usize}`);
    }
    this.cache.set(file, offset, data);
    return data;
  }

  /** Answer requests until the shim closes the socket. */
  async run(): Promise<void> {
    const req = Buffer.alloc(REQ_LEN);
    for (;;) {
      try {
        if (!readExact(SOCK, req, true)) return;
      } catch (err) {
        throw new ProtocolEnd(`cannot read a request: ${errorMessage(err)}`);
      }
      if (req.readUInt32LE(0) !== REQ_MAGIC) {
        sendError(EINVAL, 'bad request magic: protocol out of step');
        throw new ProtocolEnd('bad request magic');
      }
      const file = req.readUInt32LE(4);
      const offset = req.readUInt32LE(8) + req.readUInt32LE(12) * 2 ** 32;
      const csize = req.readUInt32LE(16);
      const usize = req.readUInt32LE(20);
      const slice = req.readUInt32LE(24) + req.readUInt32LE(28) * 2 ** 32;
      const count = req.readUInt32LE(32);
      if (
        file >= this.files.length ||
        !Number.isSafeInteger(offset) ||
        csize === 0 ||
        usize === 0 ||
        usize > MAX_USIZE ||
        count > MAX_COUNT ||
        slice + count > usize
      ) {
        sendError(EINVAL, `bad read request: file ${file} offset ${offset} csize ${csize} usize ${usize} slice ${slice} count ${count}`);
        continue;
      }
      let data: Buffer;
      try {
        data = await this.frame(file, offset, csize, usize);
      } catch (err) {
        const m = errorMessage(err);
        sendError(errorStatus(err) === ENOMEM ? ENOMEM : EIO, m.includes(this.files[file]) ? m : `${this.files[file]}: at byte offset ${offset}: ${m}`);
        continue;
      }
      sendHeader(0, count);
      writeAll(data.subarray(slice, slice + count));
    }
  }
}

async function main(argv: string[]): Promise<number> {
  const [mode, ...rest] = argv;
  const fdArg = /^--fds=(\d+)$/.exec(rest[0] ?? '');
  const files = fdArg ? rest.slice(1) : rest;
  if ((mode !== '--resolve' && mode !== '--serve') || files.length === 0) {
    logStderr('usage: worker.js --resolve|--serve [--fds=N] FILE...');
    return 2;
  }
  const fds = fdArg ? files.map((_, i) => Number(fdArg[1]) + i) : undefined;
  const decode = mode === '--resolve' ? await resolve(files, fds) : (await import('../saveset/lz4.js')).decodeLz4FrameAsync;
  await new Server(files, decode, fds).run();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (!(err instanceof ProtocolEnd)) logStderr(err instanceof Error && err.stack ? err.stack : String(err));
    else logStderr(err.message);
    process.exit(1);
  },
);
