/** BitLocker recovery-key export (BEHAVIOUR.md §10.3) against a fake guest agent. */
import { jest } from '@jest/globals';
import { guestExec, saveBitlockerKeys, volumeName, windowsMountpoints, type GuestAgent, type GuestExecOptions } from '../../../src/backup/bitlocker.js';
import type { SideFileSink } from '../../../src/backup/side-files.js';
import { recordingLogger } from './recording-logger.js';

/** What one fake process does: its exit code and output, after how many status polls. */
interface FakeProc {
  exitcode?: number;
  out?: string;
  err?: string;
  /** Number of `guest-exec-status` replies with exited=false before it exits (Infinity: never). */
  pollsBeforeExit?: number;
  /** guest-exec itself fails with this agent error. */
  execError?: string;
}

interface Sent {
  execute: string;
  arguments?: { path?: string; arg?: string[]; 'capture-output'?: boolean; pid?: number };
}

/** A guest agent answering guest-exec / guest-exec-status; `behave` decides per command line. */
class FakeAgent implements GuestAgent {
  readonly sent: Sent[] = [];
  readonly timeouts: number[] = [];
  private readonly procs = new Map<number, { p: FakeProc; polls: number }>();
  private nextPid = 100;
  constructor(private readonly behave: (path: string, args: string[]) => FakeProc) {}

  get execs(): string[][] {
    return this.sent.filter((s) => s.execute === 'guest-exec').map((s) => [s.arguments?.path ?? '', ...(s.arguments?.arg ?? [])]);
  }

  async agentCommand(cmd: string, timeoutS: number): Promise<string> {
    const req = JSON.parse(cmd) as Sent;
    this.sent.push(req);
    this.timeouts.push(timeoutS);
    if (req.execute === 'guest-exec') {
      const a = req.arguments ?? {};
      if (a['capture-output'] !== true) throw new Error('test: capture-output not requested');
      const p = this.behave(a.path ?? '', a.arg ?? []);
      if (p.execError !== undefined) return JSON.stringify({ error: { class: 'GenericError', desc: p.execError } });
      const pid = this.nextPid++;
      this.procs.set(pid, { p, polls: 0 });
      return JSON.stringify({ return: { pid } });
    }
    if (req.execute === 'guest-exec-status') {
      const st = this.procs.get(req.arguments?.pid ?? -1);
      if (!st) return JSON.stringify({ error: { class: 'GenericError', desc: 'Invalid parameter pid' } });
      if (st.polls < (st.p.pollsBeforeExit ?? 0)) {
        st.polls++;
        return JSON.stringify({ return: { exited: false } });
      }
      const r: Record<string, unknown> = { exited: true, exitcode: st.p.exitcode ?? 0 };
      if (st.p.out !== undefined) r['out-data'] = Buffer.from(st.p.out, 'utf8').toString('base64');
      if (st.p.err !== undefined) r['err-data'] = Buffer.from(st.p.err, 'utf8').toString('base64');
      return JSON.stringify({ return: r });
    }
    throw new Error(`test: unexpected agent command ${req.execute}`);
  }
}

/** A fake clock: sleeping advances it, nothing really waits. */
function fakeClock(): GuestExecOptions & { sleeps: number[]; t: () => number } {
  let t = 1_000_000;
  const sleeps: number[] = [];
  return {
    sleeps,
    t: () => t,
    now: () => t,
    sleep: async (ms) => {
      sleeps.push(ms);
      t += ms;
    },
  };
}

function memorySink(): SideFileSink & { files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  return {
    files,
    writeFile: async (name, content) => {
      files.set(name, Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8'));
    },
    copyFile: async () => {
      throw new Error('test: copyFile not expected');
    },
  };
}

const windows = (...mps: string[]): Record<string, number | string | boolean> => {
  const info: Record<string, number | string | boolean> = { 'os.id': 'mswindows', 'os.pretty-name': 'Windows Server 2022', 'fs.count': mps.length };
  mps.forEach((mp, i) => (info[`fs.${i}.mountpoint`] = mp));
  return info;
};

const KEY_C = 'BitLocker Drive Encryption: Configuration Tool\r\nVolume C: [System]\r\n  Numerical Password:\r\n    ID: {AAAA}\r\n    Password:\r\n      111111-222222-333333\r\n';
const KEY_D = 'Volume D: [Data]\r\n  Numerical Password:\r\n    Password:\r\n      444444-555555-666666\r\n';

/** manage-bde present, -protectors -get answered per volume from `keys`. */
const withTools = (keys: Record<string, FakeProc>) => (path: string, args: string[]): FakeProc => {
  if (path !== 'manage-bde.exe') throw new Error(`test: unexpected program ${path}`);
  if (args.length === 1 && args[0] === '-status') return { out: 'status ok' };
  if (args[0] === '-protectors' && args[1] === '-get' && args.length === 3) return keys[args[2]] ?? { exitcode: 1, out: 'no such volume' };
  throw new Error(`test: unexpected args ${args.join(' ')}`);
};

describe('saveBitlockerKeys', () => {
  test('Windows guest with C: and D: → one key file per volume with the decoded output', async () => {
    const agent = new FakeAgent(withTools({ 'C:': { out: KEY_C }, 'D:': { out: KEY_D } }));
    const sink = memorySink();
    const log = recordingLogger();
    const written = await saveBitlockerKeys(agent, windows('C:\\', 'D:\\'), sink, 'virtnbdbackup.0', log, fakeClock());
    expect(written).toEqual(['bitlocker.recovery.key.C.virtnbdbackup.0', 'bitlocker.recovery.key.D.virtnbdbackup.0']);
    expect([...sink.files.keys()]).toEqual(written);
    expect(sink.files.get('bitlocker.recovery.key.C.virtnbdbackup.0')?.toString('utf8')).toBe(KEY_C);
    expect(sink.files.get('bitlocker.recovery.key.D.virtnbdbackup.0')?.toString('utf8')).toBe(KEY_D);
    expect(agent.execs).toEqual([
      ['manage-bde.exe', '-status'],
      ['manage-bde.exe', '-protectors', '-get', 'C:'],
      ['manage-bde.exe', '-protectors', '-get', 'D:'],
    ]);
    expect(log.counts.warnings).toBe(0);
    expect(log.at('INFO').some((m) => m.includes('BitLocker tools found'))).toBe(true);
  });

  test('output bytes are saved unchanged (not re-encoded)', async () => {
    const raw = Buffer.from([0x56, 0x6f, 0x6c, 0x20, 0x84, 0x94, 0x0d, 0x0a]); // OEM code page bytes
    const agent: GuestAgent = {
      agentCommand: async (cmd) => {
        const req = JSON.parse(cmd) as Sent;
        if (req.execute === 'guest-exec') return JSON.stringify({ return: { pid: 7 } });
        return JSON.stringify({ return: { exited: true, exitcode: 0, 'out-data': raw.toString('base64') } });
      },
    };
    const sink = memorySink();
    await saveBitlockerKeys(agent, windows('C:\\'), sink, 'copy', recordingLogger(), fakeClock());
    expect(sink.files.get('bitlocker.recovery.key.C.copy')).toEqual(raw);
  });

  test('tools missing (guest-exec error) → INFO, nothing else run, no files, no warning', async () => {
    const agent = new FakeAgent(() => ({ execError: 'Failed to execute child process “manage-bde.exe” (No such file or directory)' }));
    const sink = memorySink();
    const log = recordingLogger();
    expect(await saveBitlockerKeys(agent, windows('C:\\', 'D:\\'), sink, 'virtnbdbackup.0', log, fakeClock())).toEqual([]);
    expect(sink.files.size).toBe(0);
    expect(agent.execs).toEqual([['manage-bde.exe', '-status']]);
    expect(log.counts.warnings).toBe(0);
    expect(log.at('INFO').some((m) => m.includes('BitLocker tools not available') && m.includes('No such file'))).toBe(true);
  });

  test('tools missing (libvirt rejects the agent command) → INFO, no files', async () => {
    const agent: GuestAgent = {
      agentCommand: async () => {
        throw new Error('Guest agent is not responding: QEMU guest agent is not connected');
      },
    };
    const sink = memorySink();
    const log = recordingLogger();
    expect(await saveBitlockerKeys(agent, windows('C:\\'), sink, 'virtnbdbackup.0', log, fakeClock())).toEqual([]);
    expect(sink.files.size).toBe(0);
    expect(log.counts.warnings).toBe(0);
    expect(log.at('INFO').some((m) => m.includes('not connected'))).toBe(true);
  });

  test('tools missing (-status exits non-zero) → INFO, no files', async () => {
    const agent = new FakeAgent((_p, args) => (args[0] === '-status' ? { exitcode: 1, err: 'manage-bde is not recognized' } : { out: 'KEY' }));
    const sink = memorySink();
    const log = recordingLogger();
    expect(await saveBitlockerKeys(agent, windows('C:\\'), sink, 'virtnbdbackup.0', log, fakeClock())).toEqual([]);
    expect(sink.files.size).toBe(0);
    expect(agent.execs).toHaveLength(1);
    expect(log.counts.warnings).toBe(0);
    expect(log.at('INFO').some((m) => m.includes('exit code 1') && m.includes('not recognized'))).toBe(true);
  });

  test('one volume failing → warning, the other still saved', async () => {
    const agent = new FakeAgent(withTools({ 'C:': { exitcode: 1, out: 'ERROR: No key protectors found.' }, 'D:': { out: KEY_D } }));
    const sink = memorySink();
    const log = recordingLogger();
    const written = await saveBitlockerKeys(agent, windows('C:\\', 'D:\\'), sink, '1700000000', log, fakeClock());
    expect(written).toEqual(['bitlocker.recovery.key.D.1700000000']);
    expect([...sink.files.keys()]).toEqual(written);
    expect(sink.files.get('bitlocker.recovery.key.D.1700000000')?.toString('utf8')).toBe(KEY_D);
    expect(log.counts.warnings).toBe(1);
    expect(log.at('WARNING')[0]).toContain('[C]');
    expect(log.at('WARNING')[0]).toContain('No key protectors found');
  });

  test('an agent error for one volume is a warning too', async () => {
    const agent = new FakeAgent((_p, args) => (args[0] === '-status' ? { out: 'ok' } : args[2] === 'C:' ? { execError: 'agent gone' } : { out: KEY_D }));
    const sink = memorySink();
    const log = recordingLogger();
    await saveBitlockerKeys(agent, windows('C:\\', 'D:\\'), sink, 'x', log, fakeClock());
    expect([...sink.files.keys()]).toEqual(['bitlocker.recovery.key.D.x']);
    expect(log.counts.warnings).toBe(1);
    expect(log.at('WARNING')[0]).toContain('agent gone');
  });

  test('mount points without ":" are skipped, duplicates queried once', async () => {
    const agent = new FakeAgent(withTools({ 'C:': { out: KEY_C } }));
    const sink = memorySink();
    const info = windows('C:\\', '\\\\?\\Volume{1234}\\', 'C:\\');
    await saveBitlockerKeys(agent, info, sink, 'i', recordingLogger(), fakeClock());
    expect(agent.execs).toEqual([
      ['manage-bde.exe', '-status'],
      ['manage-bde.exe', '-protectors', '-get', 'C:'],
    ]);
    expect([...sink.files.keys()]).toEqual(['bitlocker.recovery.key.C.i']);
  });

  test('non-Windows guest → the agent is never called', async () => {
    const agent = new FakeAgent(withTools({}));
    const sink = memorySink();
    const log = recordingLogger();
    const info: Record<string, number | string | boolean> = { 'os.id': 'fedora', 'fs.count': 1, 'fs.0.mountpoint': 'C:' };
    expect(await saveBitlockerKeys(agent, info, sink, 'i', log, fakeClock())).toEqual([]);
    expect(await saveBitlockerKeys(agent, {}, sink, 'i', log, fakeClock())).toEqual([]);
    expect(agent.sent).toEqual([]);
    expect(sink.files.size).toBe(0);
    expect(log.records).toEqual([]);
  });

  test('a sink failure rejects (like the other side files)', async () => {
    const agent = new FakeAgent(withTools({ 'C:': { out: KEY_C } }));
    const sink: SideFileSink = {
      writeFile: async () => {
        throw new Error('disk full');
      },
      copyFile: async () => undefined,
    };
    await expect(saveBitlockerKeys(agent, windows('C:\\'), sink, 'i', recordingLogger(), fakeClock())).rejects.toThrow('disk full');
  });
});

describe('guestExec', () => {
  test('a slow command is polled every 0.5 s until it has exited', async () => {
    const agent = new FakeAgent(() => ({ pollsBeforeExit: 5, out: 'done', err: 'warn', exitcode: 0 }));
    const clock = fakeClock();
    const r = await guestExec(agent, 'manage-bde.exe', ['-status'], clock);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe('done');
    expect(r.stderr.toString()).toBe('warn');
    expect(clock.sleeps).toEqual([500, 500, 500, 500, 500]);
    expect(agent.sent.map((s) => s.execute)).toEqual(['guest-exec', ...Array<string>(6).fill('guest-exec-status')]);
    expect(agent.sent.slice(1).every((s) => s.arguments?.pid === 100)).toBe(true);
  });

  test('a command still running after 30 s is a failure', async () => {
    const agent = new FakeAgent(() => ({ pollsBeforeExit: Infinity }));
    const clock = fakeClock();
    const t0 = clock.t();
    await expect(guestExec(agent, 'manage-bde.exe', ['-status'], clock)).rejects.toThrow('did not finish within 30 s');
    expect(clock.t() - t0).toBe(30_000);
    expect(clock.sleeps.every((ms) => ms === 500)).toBe(true);
    expect(clock.sleeps).toHaveLength(60);
  });

  test('the 30 s limit with the default sleep and clock (jest fake timers)', async () => {
    jest.useFakeTimers({ now: 0 });
    try {
      const agent = new FakeAgent(() => ({ pollsBeforeExit: Infinity }));
      const p = guestExec(agent, 'manage-bde.exe', ['-status']);
      const settled = p.then(
        () => 'resolved',
        (e: Error) => e.message,
      );
      await jest.advanceTimersByTimeAsync(29_000);
      const polls = agent.sent.filter((s) => s.execute === 'guest-exec-status').length;
      expect(polls).toBe(59); // at 0, 0.5, …, 29.0 s
      await jest.advanceTimersByTimeAsync(1_500);
      expect(await settled).toContain('did not finish within 30 s');
    } finally {
      jest.useRealTimers();
    }
  });

  test('a killed process (signal, no exit code) is not reported as success', async () => {
    const agent: GuestAgent = {
      agentCommand: async (cmd) => (JSON.parse(cmd) as Sent).execute === 'guest-exec' ? '{"return":{"pid":3}}' : '{"return":{"exited":true,"signal":9}}',
    };
    expect((await guestExec(agent, 'x', [], fakeClock())).exitCode).not.toBe(0);
  });

  test('malformed agent replies reject', async () => {
    const noPid: GuestAgent = { agentCommand: async () => '{"return":{}}' };
    await expect(guestExec(noPid, 'x', [], fakeClock())).rejects.toThrow('no pid');
    const garbage: GuestAgent = { agentCommand: async () => 'not json' };
    await expect(guestExec(garbage, 'x', [], fakeClock())).rejects.toThrow('Invalid reply');
  });
});

describe('helpers', () => {
  test('volumeName removes backslashes and colons', () => {
    expect(volumeName('C:\\')).toBe('C');
    expect(volumeName('E:')).toBe('E');
  });
  test('windowsMountpoints reads fs.count / fs.<i>.mountpoint', () => {
    expect(windowsMountpoints({ 'fs.count': 3, 'fs.0.mountpoint': 'C:\\', 'fs.1.mountpoint': '/boot', 'fs.2.mountpoint': 'D:\\', 'fs.3.mountpoint': 'E:\\' })).toEqual(['C:\\', 'D:\\']);
    expect(windowsMountpoints({})).toEqual([]);
  });
});
