/** The isolation / headless / console edits of a verify boot (src/boot/verify-config.ts), then through boot-config.ts. */
import { verifyVmconfig, CONSOLE_PLACEHOLDER_DIR } from '../../../src/boot/verify-config.js';
import { bootDomainXml } from '../../../src/boot/boot-config.js';
import type { VerifyConfigLog } from '../../../src/boot/verify-config.js';

/** verifyVmconfig with the output's attribute quotes made single (the XML builder writes double ones). */
const verify = (xml: string, l: VerifyConfigLog, o?: { agent?: boolean }): string => verifyVmconfig(xml, l, o).replace(/"/g, "'");

const VM = (devices: string, extra = '', arch = 'x86_64'): string => `<domain type='kvm'>
  <name>web1</name>
  <os><type arch='${arch}' machine='pc'>hvm</type></os>${extra}
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/web1.qcow2'/><target dev='vda' bus='virtio'/></disk>
${devices}
  </devices>
</domain>
`;

const messages: string[] = [];
const log = { info: (m: string): void => void messages.push(m), debug: (): void => undefined };

beforeEach(() => {
  messages.length = 0;
});

test('network interfaces and shared host directories are removed; the disk stays', () => {
  const xml = verify(
    VM(`    <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='prod'/><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
    <interface type='direct'><source dev='eth0' mode='bridge'/></interface>
    <filesystem type='mount' accessmode='passthrough'><source dir='/srv/data'/><target dir='data'/></filesystem>`),
    log,
  );
  expect(xml).not.toContain('<interface');
  expect(xml).not.toContain('<filesystem');
  expect(xml).not.toContain('prod');
  expect(xml).toContain("<source file='/img/web1.qcow2'/>");
  expect(messages.filter((m) => m.startsWith('Isolation: removed network interface'))).toHaveLength(3);
  expect(messages).toContain('Isolation: removed network interface [52:54:00:aa:bb:cc] (was on [prod]).');
});

test('vnc/spice listen nowhere, window graphics go, egl-headless stays', () => {
  const xml = verify(
    VM(`    <graphics type='vnc' port='5901' autoport='no' listen='0.0.0.0' websocket='5701'><listen type='address' address='0.0.0.0'/></graphics>
    <graphics type='spice' autoport='yes'><listen type='network' network='prod'/></graphics>
    <graphics type='sdl' display=':0'/>
    <graphics type='egl-headless'/>
    <video><model type='qxl'/></video>`),
    log,
  );
  expect(xml).toMatch(/<graphics type='vnc'><listen type='none'\/><\/graphics>/);
  expect(xml).toMatch(/<graphics type=.spice.><listen type=.none.\/><\/graphics>/);
  expect(xml).not.toMatch(/5901|5701|0\.0\.0\.0|prod|sdl/);
  expect(xml).toMatch(/<graphics type='egl-headless'\/>/);
  expect(xml).toMatch(/<video><model type='qxl'\/><\/video>/);
});

test('pty serial + console become one file-backed log in the run directory; file serials stay', () => {
  const vm = VM(`    <serial type='pty'><target type='isa-serial' port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <serial type='file'><source path='/var/log/web1-ttyS1.log'/><target port='1'/></serial>
    <console type='pty'><target type='virtio' port='1'/></console>`);
  const edited = verify(vm, log);
  expect(edited).toContain(`<serial type='file'><source path='${CONSOLE_PLACEHOLDER_DIR}/ttyS0.log'/><target type='isa-serial' port='0'/></serial>`);
  expect(edited).toContain(`<console type='file'><source path='${CONSOLE_PLACEHOLDER_DIR}/ttyS0.log'/><target type='serial' port='0'/></console>`);
  expect(edited).toContain(`<console type='file'><source path='${CONSOLE_PLACEHOLDER_DIR}/console-virtio1.log'/>`);
  const { xml, consoleLogs } = bootDomainXml(
    verifyVmconfig(vm, log),
    { name: 'verify_web1', disks: new Map([['vda', { kind: 'nbd', socket: '/run/v/vda.sock', exportName: 'vda' }]]), bootFiles: new Map(), runDir: '/run/v' },
    log,
  );
  expect(consoleLogs).toEqual(['/run/v/serial1-ttyS0.log', '/run/v/serial2-web1-ttyS1.log', '/run/v/console3-console-virtio1.log']);
  expect(xml).not.toContain(CONSOLE_PLACEHOLDER_DIR);
  expect(xml).not.toContain('/var/log/web1-ttyS1.log');
});

test('a domain without any console gets a serial port; --expect-agent adds the agent channel once', () => {
  const none = verify(VM(''), log, { agent: true });
  expect(none).toContain(`<serial type='file'><source path='${CONSOLE_PLACEHOLDER_DIR}/ttyS0.log'/><target port='0'/></serial>`);
  expect(none).toContain("<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>");
  const has = verify(
    VM(`    <serial type='pty'><target port='0'/></serial>
    <channel type='unix'><source mode='bind' path='/x/ga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`),
    log,
    { agent: true },
  );
  expect(has.match(/org\.qemu\.guest_agent\.0/g)).toHaveLength(1);
  expect(has.match(/<serial /g)).toHaveLength(1);
  expect(verify(VM(''), log)).not.toContain('<channel');
});

test('crash detection: pvpanic on x86 unless present, on_crash=preserve replaces or is added', () => {
  const x86 = verify(VM('', '\n  <on_crash>restart</on_crash>'), log);
  expect(x86).toContain("<panic model='isa'/>");
  expect(x86).toContain('<on_crash>preserve</on_crash>');
  expect(x86).not.toContain('restart');
  const arm = verify(VM('', '', 'aarch64'), log);
  expect(arm).not.toContain('<panic');
  expect(arm).toContain('<on_crash>preserve</on_crash>');
  const own = verify(VM("    <panic model='hyperv'/>"), log);
  expect(own.match(/<panic /g)).toHaveLength(1);
});

test('invalid XML is refused', () => {
  expect(() => verifyVmconfig('<domain><devices>', log)).toThrow(/Invalid domain XML/);
});
