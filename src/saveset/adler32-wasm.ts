/**
 * Fast Adler-32 for the writer and `verify` (BEHAVIOUR.md §14 P3, P6: checksum off the critical path, at disk speed).
 *
 * The checksum is computed by a small WebAssembly SIMD routine (about 8 GB/s on x86-64, against
 * about 0.5 GB/s for the `adler-32` package used by src/saveset/adler32.ts). A reader can read file
 * data straight into the module's memory ({@link FastAdler32.readBuffer}), so the checksum costs
 * no copy; other buffers are copied through a small scratch area. Where WebAssembly SIMD is not
 * available the portable Adler32 of src/saveset is used instead (same results, slower).
 *
 * The routine treats the data as blocks of up to 2048 16-byte vectors. For a block of n bytes
 * starting with sums (a, b): a' = a + Σ bytes and b' = b + n·a + Σ (n − p)·byte[p]; per vector it
 * accumulates the byte sums (lane-wise), the running sum of earlier vectors' byte sums (× 16 at
 * the end) and the dot product with the weights 16…1, then reduces modulo 65521 in 64-bit
 * integers. Lane bounds for 2048 vectors: prefix sums ≤ 1020·2048·2047/2 < 2³², dot sums ≤ 2²⁵.
 * The bytes below are the output of `wat2wasm` (wabt 1.0.32) for this module text:
 *
 * ```wat
 * (module
 *   (memory (export "memory") 1)
 *   (func (export "adler32") (param $ptr i32) (param $len i32) (param $adler i32) (result i32)
 *     (local $a i64) (local $b i64) (local $end i32) (local $blockEnd i32) (local $n i32)
 *     (local $vs1 v128) (local $vps v128) (local $vw v128) (local $v v128)
 *     (local.set $a (i64.extend_i32_u (i32.and (local.get $adler) (i32.const 0xffff))))
 *     (local.set $b (i64.extend_i32_u (i32.shr_u (local.get $adler) (i32.const 16))))
 *     (local.set $end (i32.add (local.get $ptr) (local.get $len)))
 *     (block $vdone
 *       (loop $blocks
 *         (local.set $n (i32.and (i32.sub (local.get $end) (local.get $ptr)) (i32.const -16)))
 *         (br_if $vdone (i32.eqz (local.get $n)))
 *         (if (i32.gt_u (local.get $n) (i32.const 32768)) (then (local.set $n (i32.const 32768))))
 *         (local.set $blockEnd (i32.add (local.get $ptr) (local.get $n)))
 *         (local.set $vs1 (v128.const i32x4 0 0 0 0))
 *         (local.set $vps (v128.const i32x4 0 0 0 0))
 *         (local.set $vw (v128.const i32x4 0 0 0 0))
 *         (loop $vec
 *           (local.set $v (v128.load (local.get $ptr)))
 *           (local.set $vps (i32x4.add (local.get $vps) (local.get $vs1)))
 *           (local.set $vs1 (i32x4.add (local.get $vs1)
 *             (i32x4.extadd_pairwise_i16x8_u (i16x8.extadd_pairwise_i8x16_u (local.get $v)))))
 *           (local.set $vw (i32x4.add (local.get $vw)
 *             (i32x4.add
 *               (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_u (local.get $v)) (v128.const i16x8 16 15 14 13 12 11 10 9))
 *               (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_u (local.get $v)) (v128.const i16x8 8 7 6 5 4 3 2 1)))))
 *           (local.set $ptr (i32.add (local.get $ptr) (i32.const 16)))
 *           (br_if $vec (i32.lt_u (local.get $ptr) (local.get $blockEnd))))
 *         (local.set $b (i64.rem_u
 *           (i64.add
 *             (i64.add (local.get $b) (i64.mul (i64.extend_i32_u (local.get $n)) (local.get $a)))
 *             (i64.add
 *               (i64.shl
 *                 (i64.add
 *                   (i64.add (i64.extend_i32_u (i32x4.extract_lane 0 (local.get $vps))) (i64.extend_i32_u (i32x4.extract_lane 1 (local.get $vps))))
 *                   (i64.add (i64.extend_i32_u (i32x4.extract_lane 2 (local.get $vps))) (i64.extend_i32_u (i32x4.extract_lane 3 (local.get $vps)))))
 *                 (i64.const 4))
 *               (i64.extend_i32_u (i32.add
 *                 (i32.add (i32x4.extract_lane 0 (local.get $vw)) (i32x4.extract_lane 1 (local.get $vw)))
 *                 (i32.add (i32x4.extract_lane 2 (local.get $vw)) (i32x4.extract_lane 3 (local.get $vw)))))))
 *           (i64.const 65521)))
 *         (local.set $a (i64.rem_u
 *           (i64.add (local.get $a) (i64.extend_i32_u (i32.add
 *             (i32.add (i32x4.extract_lane 0 (local.get $vs1)) (i32x4.extract_lane 1 (local.get $vs1)))
 *             (i32.add (i32x4.extract_lane 2 (local.get $vs1)) (i32x4.extract_lane 3 (local.get $vs1))))))
 *           (i64.const 65521)))
 *         (br $blocks)))
 *     (block $tdone
 *       (loop $tail
 *         (br_if $tdone (i32.ge_u (local.get $ptr) (local.get $end)))
 *         (local.set $a (i64.add (local.get $a) (i64.load8_u (local.get $ptr))))
 *         (local.set $b (i64.add (local.get $b) (local.get $a)))
 *         (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
 *         (br $tail)))
 *     (local.set $a (i64.rem_u (local.get $a) (i64.const 65521)))
 *     (local.set $b (i64.rem_u (local.get $b) (i64.const 65521)))
 *     (i32.wrap_i64 (i64.or (i64.shl (local.get $b) (i64.const 16)) (local.get $a)))))
 * ```
 */
import ADLER32 from 'adler-32';

/** The portable fallback (the `adler-32` package). */
class PortableAdler32 {
  private state = 1;

  update(buf: Uint8Array): void {
    if (buf.length > 0) this.state = ADLER32.buf(buf, this.state);
  }

  digest(): number {
    return this.state >>> 0;
  }
}

const WASM_BASE64 =
  'AGFzbQEAAAABCAFgA39/fwF/AwIBAAUDAQABBxQCBm1lbW9yeQIAB2FkbGVyMzIAAAqnAwGkAwMCfgN/BHsgAkH//wNxrSEDIAJB' +
  'EHatIQQgACABaiEFAkADQCAFIABrQXBxIQcgB0UNASAHQYCAAksEQEGAgAIhBwsgACAHaiEG/QwAAAAAAAAAAAAAAAAAAAAAIQj9' +
  'DAAAAAAAAAAAAAAAAAAAAAAhCf0MAAAAAAAAAAAAAAAAAAAAACEKA0AgAP0ABAAhCyAJIAj9rgEhCSAIIAv9ff1//a4BIQggCiAL' +
  '/YkB/QwQAA8ADgANAAwACwAKAAkA/boBIAv9igH9DAgABwAGAAUABAADAAIAAQD9ugH9rgH9rgEhCiAAQRBqIQAgACAGSQ0ACyAE' +
  'IAetIAN+fCAJ/RsArSAJ/RsBrXwgCf0bAq0gCf0bA618fEIEhiAK/RsAIAr9GwFqIAr9GwIgCv0bA2pqrXx8QvH/A4IhBCADIAj9' +
  'GwAgCP0bAWogCP0bAiAI/RsDamqtfELx/wOCIQMMAAsLAkADQCAAIAVPDQEgAyAAMQAAfCEDIAQgA3whBCAAQQFqIQAMAAsLIANC' +
  '8f8DgiEDIARC8f8DgiEEIARCEIYgA4SnCw==';

const PAGE = 65536;
/** Scratch area for data that does not live in the module's memory. */
const SCRATCH = 1 << 20;

interface AdlerExports {
  memory: WebAssembly.Memory;
  adler32: (ptr: number, len: number, adler: number) => number;
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled module, or null where this runtime has no WebAssembly SIMD. */
function wasmModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(Buffer.from(WASM_BASE64, 'base64'));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** A running Adler-32 (zlib `adler32`, initial value 1) with an optional zero-copy read buffer. */
export class FastAdler32 {
  private state = 1;
  private readonly fn: ((ptr: number, len: number, adler: number) => number) | undefined;
  private readonly memory: ArrayBuffer | undefined;
  private readonly fallback: PortableAdler32 | undefined;
  /** Where the scratch area starts in the module's memory. */
  private readonly scratchAt: number;
  /** A buffer of the requested size; data read into it is checksummed without a copy. */
  readonly readBuffer: Buffer;

  /** `readBufferSize`: size of {@link readBuffer} (0 for none). */
  constructor(readBufferSize = 0, forcePortable = false) {
    if (!Number.isSafeInteger(readBufferSize) || readBufferSize < 0 || readBufferSize > 1 << 30) {
      throw new RangeError(`bad read buffer size ${readBufferSize}`);
    }
    const mod = forcePortable ? null : wasmModule();
    if (mod) {
      const ex = new WebAssembly.Instance(mod, {}).exports as unknown as AdlerExports;
      this.scratchAt = Math.ceil(readBufferSize / 16) * 16;
      const pages = Math.ceil((this.scratchAt + SCRATCH) / PAGE);
      const have = ex.memory.buffer.byteLength / PAGE;
      if (pages > have) ex.memory.grow(pages - have); // before any view is taken: grow detaches
      this.memory = ex.memory.buffer;
      this.fn = ex.adler32;
      this.readBuffer = Buffer.from(this.memory, 0, readBufferSize);
    } else {
      this.scratchAt = 0;
      this.fallback = new PortableAdler32();
      this.readBuffer = Buffer.allocUnsafe(readBufferSize);
    }
  }

  /** True when the WebAssembly routine is in use. */
  get accelerated(): boolean {
    return this.fn !== undefined;
  }

  update(buf: Uint8Array): void {
    if (buf.length === 0) return;
    if (this.fallback) {
      this.fallback.update(buf);
      return;
    }
    const fn = this.fn!;
    if (buf.buffer === this.memory) {
      this.state = fn(buf.byteOffset, buf.length, this.state) >>> 0;
      return;
    }
    const scratch = new Uint8Array(this.memory!, this.scratchAt, SCRATCH);
    for (let off = 0; off < buf.length; off += SCRATCH) {
      const piece = buf.subarray(off, Math.min(buf.length, off + SCRATCH));
      scratch.set(piece);
      this.state = fn(this.scratchAt, piece.length, this.state) >>> 0;
    }
  }

  /** The checksum so far, unsigned. */
  digest(): number {
    return this.fallback ? this.fallback.digest() : this.state >>> 0;
  }
}
