import { jest } from '@jest/globals';
import { createProgress, type ProgressStream } from '../../../src/util/progress.js';

/** A fake terminal: interprets the few sequences the progress display uses and keeps the screen. */
class FakeTerminal implements ProgressStream {
  columns = 100;
  writes: string[] = [];
  lines: string[] = [''];
  row = 0;
  write(text: string): boolean {
    this.writes.push(text);
    let i = 0;
    while (i < text.length) {
      const m = /^\x1b\[(\d*)([AJ])/.exec(text.slice(i));
      if (m) {
        if (m[2] === 'A') {
          this.row = Math.max(0, this.row - Number(m[1] || 1));
        } else {
          this.lines.length = this.row + 1; // clear to the end of the screen
          this.lines[this.row] = '';
        }
        i += m[0].length;
        continue;
      }
      const c = text[i++]!;
      if (c === '\r') continue; // we only ever write whole lines
      if (c === '\n') {
        this.row++;
        if (this.lines.length <= this.row) this.lines.push('');
      } else this.lines[this.row] += c;
    }
    return true;
  }
  /** Screen content without the empty cursor line. */
  screen(): string[] {
    return this.lines.slice(0, this.row).concat(this.lines[this.row] ? [this.lines[this.row]!] : []);
  }
}

describe('progress bars', () => {
  test('disabled: no output at all, log() still runs the write', () => {
    const t = new FakeTerminal();
    const p = createProgress({ enabled: false, stream: t });
    const b = p.bar('vda', 100);
    b.update(50);
    b.done();
    let ran = false;
    p.log(() => (ran = true));
    expect(ran).toBe(true);
    expect(t.writes).toEqual([]);
  });

  test('one line per disk with percentage, 1024-based sizes and rate; done() removes the bar', () => {
    const t = new FakeTerminal();
    let clock = 1000;
    const p = createProgress({ enabled: true, stream: t, now: () => clock, intervalMs: 100 });
    const a = p.bar('vda', 4 * 1024 * 1024);
    const b = p.bar('sda', 1024);
    expect(t.screen()).toHaveLength(2);
    clock += 2000;
    a.update(2 * 1024 * 1024);
    expect(t.screen()[0]).toMatch(/^vda:  50% \[#{13} {12}\] 2\.0MiB\/4\.0MiB 1\.0MiB\/s$/);
    expect(t.screen()[1]).toMatch(/^sda:   0% \[ {25}\] 0\.0B\/1\.0KiB 0\.0B\/s$/);
    a.done();
    expect(t.screen()).toHaveLength(1);
    expect(t.screen()[0]).toMatch(/^sda:/);
    b.done();
    expect(t.screen()).toEqual([]);
  });

  test('updates are throttled: at most one redraw per interval, the last value wins', () => {
    jest.useFakeTimers();
    try {
      const t = new FakeTerminal();
      let clock = 0;
      const p = createProgress({ enabled: true, stream: t, now: () => clock, intervalMs: 100 });
      const b = p.bar('vda', 1000);
      const before = t.writes.length;
      for (let i = 1; i <= 50; i++) {
        clock += 1; // 50 updates within 50 ms
        b.update(i * 10);
      }
      expect(t.writes.length).toBe(before); // nothing drawn yet
      clock += 50;
      jest.advanceTimersByTime(100);
      expect(t.writes.length).toBe(before + 1); // one deferred redraw
      expect(t.screen()[0]).toMatch(/^vda:  50% .* 500\.0B\/1000\.0B/);
    } finally {
      jest.useRealTimers();
    }
  });

  test('log() writes above the bars and redraws them below', () => {
    const t = new FakeTerminal();
    const p = createProgress({ enabled: true, stream: t });
    const b = p.bar('vda', 100);
    p.log(() => t.write('[2026-01-01 00:00:00] INFO first\n'));
    p.log(() => t.write('[2026-01-01 00:00:00] INFO second\n'));
    expect(t.screen()).toHaveLength(3);
    expect(t.screen()[0]).toBe('[2026-01-01 00:00:00] INFO first');
    expect(t.screen()[1]).toBe('[2026-01-01 00:00:00] INFO second');
    expect(t.screen()[2]).toMatch(/^vda:/);
    b.done();
    expect(t.screen()).toEqual(['[2026-01-01 00:00:00] INFO first', '[2026-01-01 00:00:00] INFO second']);
  });

  test('lines are cut to the terminal width, so they never wrap', () => {
    const t = new FakeTerminal();
    t.columns = 30;
    const p = createProgress({ enabled: true, stream: t });
    p.bar('a-very-long-disk-label-indeed', 1 << 30).update(1 << 29);
    expect(t.screen()[0]!.length).toBeLessThanOrEqual(29);
  });

  test('a zero-size disk shows 100%; updates after done() are ignored', () => {
    const t = new FakeTerminal();
    const p = createProgress({ enabled: true, stream: t, intervalMs: 0 });
    const b = p.bar('vdz', 0);
    expect(t.screen()[0]).toMatch(/^vdz: 100% \[#{25}\]/);
    b.done();
    const n = t.writes.length;
    b.update(5);
    b.done();
    expect(t.writes.length).toBe(n);
  });
});
