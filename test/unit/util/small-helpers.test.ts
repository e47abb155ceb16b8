/** The small helpers every folder shares: errorMessage, sleep, checkAborted. */
import { errorMessage } from '../../../src/util/error-message.js';
import { sleep } from '../../../src/util/sleep.js';
import { checkAborted } from '../../../src/util/abort.js';

describe('errorMessage', () => {
  test('an Error gives its message, anything else its string form', () => {
    expect(errorMessage(new TypeError('bad'))).toBe('bad');
    expect(errorMessage('plain')).toBe('plain');
    expect(errorMessage(42)).toBe('42');
    expect(errorMessage(undefined)).toBe('undefined');
  });
});

describe('sleep', () => {
  test('waits at least the time asked', async () => {
    const t0 = Date.now();
    await sleep(30);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
  });
  test('an abort ends the wait early, without rejecting', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    const p = sleep(60_000, ac.signal);
    ac.abort();
    await expect(p).resolves.toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
});

describe('checkAborted', () => {
  test('nothing without a signal or before the abort', () => {
    expect(() => checkAborted(undefined, 'x')).not.toThrow();
    expect(() => checkAborted(new AbortController().signal, 'x')).not.toThrow();
  });
  test('throws the reason when it is an Error, else an Error with the given text', () => {
    const a = new AbortController();
    const reason = new Error('stopped by signal');
    a.abort(reason);
    expect(() => checkAborted(a.signal, 'restore aborted')).toThrow(reason);
    const b = new AbortController();
    b.abort('not an error');
    expect(() => checkAborted(b.signal, 'restore aborted')).toThrow('restore aborted');
    expect(() => checkAborted(b.signal)).toThrow('aborted');
  });
});
