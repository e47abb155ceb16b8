/**
 * Types of the sparse stream format (docs/FORMAT.md §2).
 * Everything here is plain data: the format knows nothing about chains, NBD or libvirt.
 */

/** The five frame kinds of the sparse stream. */
export type FrameKind = 'meta' | 'data' | 'zero' | 'stop' | 'comp';

/** Length of every frame header in bytes (FORMAT.md §2.1). */
export const HEADER_LEN = 40;

/** Size of one LZ4 chunk of a compressed data frame (FORMAT.md §3.1). */
export const LZ4_CHUNK = 33_554_432;

/** The metadata of a stream, normalised (FORMAT.md §2.5). */
export interface Metadata {
  virtualSize: number;
  dataSize: number;
  date: string;
  diskName: string;
  diskFormat: string;
  checkpointName: string;
  /** false, or the LZ4 level recorded by the writer. */
  compressed: false | number;
  compressionMethod: string;
  /** "" when there is none (a legacy `false` is normalised to ""). */
  parentCheckpoint: string;
  incremental: boolean;
  streamVersion: number;
}

/** One LZ4 frame inside a compressed data frame's payload. */
export interface Lz4Chunk {
  /** File offset of the LZ4 frame's first byte (its magic). */
  offset: number;
  /** Compressed size of this LZ4 frame in bytes. */
  csize: number;
  /** Decoded size of this LZ4 frame in bytes. */
  usize: number;
}

export interface DataFrame {
  kind: 'data';
  /** Guest offset. */
  start: number;
  /** Uncompressed length. */
  length: number;
  /** File offset of the frame's 40-byte header. */
  headerOffset: number;
  /** File offset of the first payload byte. */
  payloadOffset: number;
  /** Payload size in the file (compressed size when compressed). */
  payloadSize: number;
  /** Present iff the stream is compressed; decoded sizes add up to `length`. */
  chunks?: Lz4Chunk[];
}

export interface ZeroFrame {
  kind: 'zero';
  start: number;
  length: number;
  headerOffset: number;
}

export type ExtentFrame = DataFrame | ZeroFrame;

/** A validated index of one stream file: metadata and every data/zero frame, no payloads. */
export interface SavesetIndex {
  path: string;
  fileSize: number;
  metadata: Metadata;
  /** The metadata object exactly as parsed from the file. */
  rawMetadata: Record<string, unknown>;
  compressed: boolean;
  frames: ExtentFrame[];
}

/**
 * Any structural problem in a file read from a backup set.
 * The message names the file and the byte offset (FORMAT.md §9).
 */
export class SavesetFormatError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`${file}: at byte offset ${offset}: ${reason}`);
    this.name = 'SavesetFormatError';
  }
}

/** Maximum length of the metadata JSON (FORMAT.md §9 limits). */
export const MAX_METADATA_LEN = 1_048_576;

/** Maximum length of the compression trailer JSON (FORMAT.md §9 limits). */
export const MAX_TRAILER_LEN = 67_108_864;

/** Largest decoded (and, where it must be read whole, compressed) size accepted for one LZ4 chunk. */
export const MAX_LZ4_CHUNK_LEN = 268_435_456;
