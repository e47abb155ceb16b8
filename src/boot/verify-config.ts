/**
 * The vmconfig edits of `--boot --verify` (issue 12), applied before boot-config.ts derives the
 * boot domain from it. A verified copy must never talk to production, needs no screen, and must
 * leave evidence of how its boot went:
 *
 *  - network interfaces (`<interface>`) are removed: no NIC, so nothing reaches any network;
 *  - host directories shared into the guest (`<filesystem>`) are removed;
 *  - VNC/SPICE graphics listen nowhere (`<listen type='none'/>`: screenshots still work, no port
 *    is opened); graphics that would open a window or another listener (sdl, desktop, rdp,
 *    dbus) are removed; egl-headless stays;
 *  - serial ports and consoles that are not file-backed (pty, vc, null, …) become file-backed,
 *    so every console is logged (boot-config.ts moves the files into the run directory);
 *  - a domain without any serial port or console gets a file-backed serial port; with
 *    `--expect-agent`, one without a guest agent channel gets one;
 *  - `<on_crash>preserve</on_crash>`, and on x86 a pvpanic device (`<panic model='isa'/>`) when
 *    the domain has none: a guest kernel that panics leaves the domain in the `crashed` state
 *    instead of rebooting, which verify reports as a panic.
 */
import { attr, buildDocument, editAttrs, elements, first, kids, parseDocument, removeChild, setText, AT, ATTRS, TEXT, type XNode } from '../xml/domain-tree.js';

export interface VerifyConfigLog {
  info(msg: string): void;
}

/** Directory of the placeholder paths given to consoles made file-backed (renamed by boot-config.ts). */
export const CONSOLE_PLACEHOLDER_DIR = '/virtnbd-verify';

const AGENT_CHANNEL = 'org.qemu.guest_agent.0';
const HEADLESS_GRAPHICS = new Set(['vnc', 'spice']);
const KEPT_GRAPHICS = new Set(['egl-headless']);
const FILE_BACKED = new Set(['file']);

function el(tag: string, attrs: Record<string, string>, children: XNode[] = []): XNode {
  const a: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) a[AT + k] = v;
  return { [tag]: children, [ATTRS]: a };
}

/** Placeholder log path of a serial port or console: consoles of a serial port share its file. */
function consolePath(tag: string, c: XNode): string {
  const target = first(c, 'target');
  const type = attr(target, 'type');
  const port = attr(target, 'port') ?? '0';
  if (tag === 'serial' || (tag === 'console' && (type === undefined || type === 'serial'))) return `${CONSOLE_PLACEHOLDER_DIR}/ttyS${port}.log`;
  return `${CONSOLE_PLACEHOLDER_DIR}/${tag}-${type ?? 'x'}${port}.log`;
}

/** The vmconfig for a verify boot (see the module comment). Throws `Invalid domain XML: …`. */
export function verifyVmconfig(vmconfig: string, log: VerifyConfigLog, opts: { agent?: boolean } = {}): string {
  const { nodes, domain } = parseDocument(vmconfig);
  for (const devices of elements(domain, 'devices')) {
    for (const nic of elements(devices, 'interface')) {
      const src = first(nic, 'source');
      const where = attr(src, 'network') ?? attr(src, 'bridge') ?? attr(src, 'dev') ?? attr(nic, 'type') ?? '?';
      const mac = attr(first(nic, 'mac'), 'address');
      log.info(`Isolation: removed network interface${mac !== undefined ? ` [${mac}]` : ''} (was on [${where}]).`);
      removeChild(devices, nic);
    }
    for (const fs of elements(devices, 'filesystem')) {
      log.info(`Isolation: removed shared host directory [${attr(first(fs, 'source'), 'dir') ?? '?'}].`);
      removeChild(devices, fs);
    }
    for (const g of elements(devices, 'graphics')) {
      const type = attr(g, 'type') ?? '';
      if (HEADLESS_GRAPHICS.has(type)) {
        editAttrs(g, [], ['port', 'tlsPort', 'autoport', 'websocket', 'listen', 'socket']);
        for (const l of elements(g, 'listen')) removeChild(g, l);
        kids(g).unshift(el('listen', { type: 'none' }));
        log.info(`Headless: ${type} graphics listen nowhere.`);
      } else if (!KEPT_GRAPHICS.has(type)) {
        log.info(`Headless: removed ${type} graphics.`);
        removeChild(devices, g);
      }
    }
    for (const tag of ['serial', 'console']) {
      for (const c of elements(devices, tag)) {
        const type = attr(c, 'type') ?? 'pty';
        if (FILE_BACKED.has(type)) continue;
        editAttrs(c, [{ name: 'type', value: 'file' }]);
        const path = consolePath(tag, c);
        for (const s of elements(c, 'source')) removeChild(c, s);
        for (const p of elements(c, 'protocol')) removeChild(c, p);
        kids(c).unshift(el('source', { path }));
        log.info(`Console: ${tag} (${type}) is logged to a file.`);
      }
    }
    if (elements(devices, 'serial').length === 0 && elements(devices, 'console').length === 0) {
      kids(devices).push(el('serial', { type: 'file' }, [el('source', { path: `${CONSOLE_PLACEHOLDER_DIR}/ttyS0.log` }), el('target', { port: '0' })]));
      log.info('Console: added a file-backed serial port (the domain had none).');
    }
    const hasAgent = elements(devices, 'channel').some((c) => attr(first(c, 'target'), 'name') === AGENT_CHANNEL);
    if (opts.agent === true && !hasAgent) {
      kids(devices).push(el('channel', { type: 'unix' }, [el('source', { mode: 'bind' }), el('target', { type: 'virtio', name: AGENT_CHANNEL })]));
      log.info('Guest agent: added the agent channel (the domain had none).');
    }
    const arch = attr(first(first(domain, 'os'), 'type'), 'arch') ?? 'x86_64';
    if (elements(devices, 'panic').length === 0 && /^(x86_64|i[3-6]86)$/.test(arch)) {
      kids(devices).push(el('panic', { model: 'isa' }));
      log.info('Crash detection: added a pvpanic device.');
    }
  }
  const onCrash = first(domain, 'on_crash');
  if (onCrash !== undefined) setText(onCrash, 'preserve');
  else kids(domain).push({ on_crash: [{ [TEXT]: 'preserve' }] });
  return buildDocument(vmconfig, nodes);
}
