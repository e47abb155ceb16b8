// A hostile stand-in for dist/src/worker/worker.js (docs/PROTOCOL.md), for the plugin tests:
// `worker=` this script, behaviour from the environment:
//   VNBD_BAD_MODE  table        send the bytes of $VNBD_BAD_TABLE as the table (status 0)
//                  status       status 22 + the message "hostile worker says no"
//                  bigmsg       status 22 with a 100000-byte message length
//                  short        announce a 4096-byte table, send 10 bytes, exit
//                  exit         exit at once without a word
//                  hang         send nothing, stay alive
//                  fds          write "--fds argument, then dev:ino:size:mode of fd N+i" lines to
//                               $VNBD_BAD_OUT, then send $VNBD_BAD_TABLE
//   VNBD_BAD_ANSWER (after a table, lz4=worker): how read requests are answered:
//                  error (status 5 + message), enomem (status 12), bigmsg, badlen (length count+1),
//                  shortdata (half the bytes, then exit), none (read the request, never answer)
// It is plain JavaScript so that it starts fast; it never touches the files it is given.
import { fstatSync, readFileSync, readSync, readdirSync, readlinkSync, writeFileSync, writeSync } from 'node:fs';

const SOCK = 3;
const mode = process.env.VNBD_BAD_MODE ?? 'table';
const answer = process.env.VNBD_BAD_ANSWER ?? 'error';
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function writeAll(buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(SOCK, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}
function header(status, len) {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(status, 0);
  h.writeUInt32LE(len, 4);
  return h;
}
function readExact(n) {
  const b = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    let r;
    try {
      r = readSync(SOCK, b, got, n - got, null);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 1);
      continue;
    }
    if (r === 0) return undefined;
    got += r;
  }
  return b;
}
const sendTable = () => {
  const t = readFileSync(process.env.VNBD_BAD_TABLE);
  writeAll(Buffer.concat([header(0, t.length), t]));
};

const args = process.argv.slice(2);
switch (mode) {
  case 'table': sendTable(); break;
  case 'status': { const m = Buffer.from('hostile worker says no'); writeAll(Buffer.concat([header(22, m.length), m])); break; }
  case 'bigmsg': writeAll(header(22, 100000)); break;
  case 'short': writeAll(Buffer.concat([header(0, 4096), Buffer.alloc(10)])); process.exit(0);
  case 'exit': process.exit(1);
  case 'hang': setInterval(() => {}, 1000); break;
  case 'fds': {
    const fdArg = /^--fds=(\d+)$/.exec(args[1] ?? '');
    const files = args.slice(2);
    const lines = [args[1] ?? ''];
    files.forEach((_, i) => {
      const st = fstatSync(Number(fdArg[1]) + i);
      lines.push(`${st.dev}:${st.ino}:${st.size}:${st.mode}`);
    });
    // every descriptor open in this process that is a regular file: fd=target
    lines.push(readdirSync('/proc/self/fd').map(Number).sort((a, b) => a - b)
      .filter((fd) => { try { return fstatSync(fd).isFile(); } catch { return false; } })
      .map((fd) => `${fd}=${readlinkSync(`/proc/self/fd/${fd}`)}`).join(' '));
    writeFileSync(process.env.VNBD_BAD_OUT, lines.join('\n'));
    sendTable();
    break;
  }
  default: process.exit(2);
}
if (mode === 'table' || mode === 'fds') {
  for (;;) {
    const req = readExact(40);
    if (!req) process.exit(0);
    const count = req.readUInt32LE(32);
    if (answer === 'error') { const m = Buffer.from('hostile answer'); writeAll(Buffer.concat([header(5, m.length), m])); }
    else if (answer === 'enomem') { const m = Buffer.from('no memory, says the worker'); writeAll(Buffer.concat([header(12, m.length), m])); }
    else if (answer === 'bigmsg') writeAll(header(5, 1 << 20));
    else if (answer === 'badlen') writeAll(Buffer.concat([header(0, count + 1), Buffer.alloc(count + 1)]));
    else if (answer === 'shortdata') { writeAll(Buffer.concat([header(0, count), Buffer.alloc(count >> 1)])); process.exit(0); }
    else if (answer === 'none') { /* never answer */ }
  }
}
