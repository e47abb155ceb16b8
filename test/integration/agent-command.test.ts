/**
 * VirtDomain.agentCommand (virDomainQemuAgentCommand) against the real libvirtd: a running TCG
 * domain with a guest-agent channel but no agent behind it (no OS). The command must reject with
 * libvirt's error as a VirtError carrying libvirt's code, and the BitLocker export (§10.3) on top
 * of it must treat that as "tools not available" (INFO, no files, no warning). A real Windows
 * guest with manage-bde is not available here; the export logic itself is unit-tested with a fake
 * agent (test/unit/backup/bitlocker.test.ts).
 */
import { jest } from '@jest/globals';
import { VIR_ERR, VirtError } from '../../src/virt/client.js';
import { saveBitlockerKeys } from '../../src/backup/bitlocker.js';
import type { SideFileSink } from '../../src/backup/side-files.js';
import { TestVm } from '../helpers/test-vm.js';
import { recordingLogger } from '../unit/backup/recording-logger.js';

// Creating a domain costs ~35-60 s here (libvirtd re-probes qemu).
jest.setTimeout(300_000);

let vm: TestVm | undefined;
beforeAll(async () => {
  vm = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 4 * 1024 * 1024 }], agentChannel: true });
});
afterAll(async () => {
  await vm?.cleanup();
});

test('agentCommand without a connected agent rejects with a VirtError carrying libvirt\'s code', async () => {
  const dom = vm!.dom;
  const err = await dom.agentCommand('{"execute":"guest-ping"}', 5).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VirtError);
  expect((err as VirtError).code).toBe(VIR_ERR.AGENT_UNRESPONSIVE);
  expect((err as VirtError).message).toMatch(/agent/i);
});

test('agentCommand rejects bad arguments before calling libvirt', async () => {
  const dom = vm!.dom;
  await expect(dom.agentCommand('{"execute":"guest-ping"}', 1.5)).rejects.toThrow(/timeoutSeconds/);
  await expect(dom.agentCommand('{"execute":"guest-ping"}', -3)).rejects.toThrow(/timeoutSeconds/);
});

test('BitLocker export through a domain without agent: INFO, no files, no warning', async () => {
  const files: string[] = [];
  const sink: SideFileSink = {
    writeFile: async (name) => {
      files.push(name);
    },
    copyFile: async (name) => {
      files.push(name);
    },
  };
  const log = recordingLogger();
  const info = { 'os.id': 'mswindows', 'fs.count': 1, 'fs.0.mountpoint': 'C:\\' };
  expect(await saveBitlockerKeys(vm!.dom, info, sink, 'virtnbdbackup.0', log)).toEqual([]);
  expect(files).toEqual([]);
  expect(log.counts.warnings).toBe(0);
  expect(log.at('INFO').some((m) => m.includes('BitLocker tools not available'))).toBe(true);
});
