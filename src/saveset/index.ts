/** The sparse stream format engine (FORMAT.md §2, §3, §5, §9). */
export * from './types.js';
export { formatHeader, parseHeader } from './header.js';
export { pyJsonDumps, pyJsonString } from './pyjson.js';
export { buildMetadata, metadataJson, parseMetadata, formatDate, STREAM_VERSION, type MetadataParams } from './metadata.js';
export {
  compressChunk,
  compressChunkAsync,
  parseLz4FrameHeader,
  decodeLz4Frame,
  decodeLz4FrameUnsized,
  LZ4_MAX_HEADER_LEN,
  LZ4_MIN_FRAME_LEN,
  type Lz4FrameHeader,
} from './lz4.js';
export { Adler32, adler32File, formatChecksum, parseChecksumFile } from './adler32.js';
export { SavesetWriter, SavesetWriterError, type WriterOptions } from './writer.js';
export { indexSaveset, isSavesetFile, readSavesetMetadata } from './reader.js';
