/**
 * Per-disk progress bars on a terminal (BEHAVIOUR.md §7.2, CLI.md §1.3): one line per disk
 * (label, bar, percentage, bytes done/total in 1024-based units, rate), all redrawn together
 * with ANSI cursor movement at most ~10 times a second; a bar disappears when its disk is done.
 *
 * Hand-written rather than a dependency: it is about a hundred lines, and no well-kept ESM
 * multi-bar package without a heavy dependency tree was available.
 *
 * Log records must not be written while bars are on screen, or lines get mixed up: route the
 * logger's stderr writer through {@link Progress.log}, which clears the bars, runs the write and
 * draws them again below it. The caller decides whether bars are shown at all (`--noprogress`,
 * `--quiet`, stderr not a TTY → `enabled: false`, which produces no output whatsoever).
 */
import { humanSize } from './humanize.js';

/** What the bars are written to (a NodeJS.WriteStream satisfies it). */
export interface ProgressStream {
  write(text: string): unknown;
  /** Terminal width; lines are cut to it so that they never wrap. */
  columns?: number;
}

export interface ProgressBar {
  /** Bytes done so far (absolute, not a delta). */
  update(done: number): void;
  /** Remove the bar. */
  done(): void;
}

export interface Progress {
  bar(label: string, total: number): ProgressBar;
  /** Run `write` (which prints complete lines to the same terminal) above the bars. */
  log(write: () => void): void;
}

export interface ProgressOptions {
  enabled: boolean;
  stream?: ProgressStream;
  /** Minimum time between two redraws caused by updates, ms (default 100). */
  intervalMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

interface BarState {
  label: string;
  total: number;
  done: number;
  started: number;
}

const BAR_WIDTH = 25;
const CLEAR_BELOW = '\x1b[J';

const NOOP_BAR: ProgressBar = { update: () => undefined, done: () => undefined };

export function createProgress(opts: ProgressOptions): Progress {
  if (!opts.enabled) return { bar: () => NOOP_BAR, log: (write) => write() };
  const stream: ProgressStream = opts.stream ?? process.stderr;
  const now = opts.now ?? Date.now;
  const interval = opts.intervalMs ?? 100;
  const bars: BarState[] = [];
  let drawn = 0; // lines currently on screen
  let lastDraw = -Infinity;
  let timer: NodeJS.Timeout | undefined;

  const line = (b: BarState, t: number): string => {
    const frac = b.total > 0 ? Math.min(1, b.done / b.total) : 1;
    const filled = Math.round(frac * BAR_WIDTH);
    const secs = (t - b.started) / 1000;
    const rate = secs > 0 ? b.done / secs : 0;
    const pct = `${Math.floor(frac * 100)}%`.padStart(4);
    const text = `${b.label}: ${pct} [${'#'.repeat(filled)}${' '.repeat(BAR_WIDTH - filled)}] ${humanSize(b.done)}/${humanSize(b.total)} ${humanSize(rate)}/s`;
    const width = Math.max(10, (stream.columns ?? 80) - 1);
    return text.length > width ? text.slice(0, width) : text;
  };
  /** Move to the first bar line and clear everything below. */
  const erase = (): string => (drawn > 0 ? `\x1b[${drawn}A\r${CLEAR_BELOW}` : '');
  const draw = (): void => {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    const t = now();
    lastDraw = t;
    const out = erase() + bars.map((b) => `${line(b, t)}\n`).join('');
    drawn = bars.length;
    if (out) stream.write(out);
  };
  const schedule = (): void => {
    const wait = lastDraw + interval - now();
    if (wait <= 0) draw();
    else if (!timer) {
      timer = setTimeout(draw, wait);
      timer.unref();
    }
  };

  return {
    bar(label, total) {
      const b: BarState = { label, total, done: 0, started: now() };
      bars.push(b);
      draw();
      let finished = false;
      return {
        update(done) {
          if (finished) return;
          b.done = done;
          schedule();
        },
        done() {
          if (finished) return;
          finished = true;
          bars.splice(bars.indexOf(b), 1);
          draw();
        },
      };
    },
    log(write) {
      if (drawn > 0) {
        stream.write(erase());
        drawn = 0;
      }
      write();
      if (bars.length > 0) draw();
    },
  };
}
