/**
 * Wait `ms` milliseconds. With a `signal`, an abort ends the wait early (it resolves, it does not
 * reject): the caller checks the signal afterwards.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
