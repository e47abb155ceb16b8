/** Wait for the first line a spawned command prints on stdout (its `--json` line), collecting stderr. */
import type { ResultPromise } from 'execa';

export interface JsonLineWatch {
  /** The first stdout line. */
  line: Promise<string>;
  /** stderr so far. */
  stderr(): string;
  /** All of stdout so far. */
  stdout(): string;
}

/** Rejects when `timeoutMs` passes or the process exits first (with its stderr in the message). */
export function watchJsonLine(proc: ResultPromise, timeoutMs: number, what = 'virtnbdmap'): JsonLineWatch {
  let out = '';
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const line = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no JSON line within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    void proc.then((r) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${r.exitCode ?? r.signal}) before printing JSON; stderr:\n${err}`));
    });
  });
  return { line, stderr: () => err, stdout: () => out };
}
