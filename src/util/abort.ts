/** Throws when `signal` is aborted: its reason when that is an Error, else `new Error(what)`. */
export function checkAborted(signal: AbortSignal | undefined, what = 'aborted'): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(what);
}
