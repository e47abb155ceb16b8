/** Streaming ZIP archive output for `-o -` (FORMAT.md §7). */
export { ZipStreamWriter, ZipWriterError, type ZipEntryWriter, type ZipEntryOptions, type ZipStreamOptions } from './writer.js';
export { Crc32 } from './crc32.js';
export { dosDateTime, type DosDateTime } from './records.js';
