/**
 * One readable sentence for the I/O errors a user can act on (a full or read-only target, a
 * quota), naming the file, instead of Node's `ENOSPC: no space left on device, write`.
 */
const CAUSES: Record<string, string> = {
  ENOSPC: 'No space left on device',
  EDQUOT: 'Disk quota exceeded',
  EROFS: 'Read-only file system',
  EIO: 'I/O error',
};

/** `e` itself, or an Error naming the cause and `path` (the original error as its cause). */
export function explainIoError(e: unknown, path: string): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const cause = code !== undefined ? CAUSES[code] : undefined;
  if (cause === undefined) return e;
  const err = new Error(`${cause} writing [${path}]`, { cause: e });
  (err as NodeJS.ErrnoException).code = code;
  return err;
}
