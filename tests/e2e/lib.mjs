// Shared by the end-to-end tests: the openai and ajv packages, `hetserve serve` on a free port,
// named checks with a TAP-like report, and PNG data URLs written here (no image library).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));

// { OpenAI, Ajv }, or exit 1 naming the command that installs them.
export function loadClient() {
  try {
    const req = createRequire(path.join(here, 'package.json'));
    return { OpenAI: req('openai').default, Ajv: req('ajv').default };
  } catch (e) {
    console.error('tests/e2e: the openai or ajv package is not installed; run ' +
                  '`npm ci --prefix tests/e2e` (scripts/dev.sh deps does it)');
    process.exit(1);
  }
}

// Runs `bin serve ARGS --port 0` and resolves { proc, port, log } once it listens.
export function startServer(bin, args, apiKey) {
  const env = { ...process.env };
  delete env.HETSERVE_API_KEY;
  if (apiKey) env.HETSERVE_API_KEY = apiKey;
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['serve', ...args, '--port', '0'],
                    { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '', err = '';
    const timer = setTimeout(() => reject(new Error('server did not start: ' + err)), 30000);
    p.stderr.on('data', (d) => { err += d; });
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on [^:\s]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve({ proc: p, port: Number(m[1]), log: () => err }); }
    });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}: ${err}`)); });
  });
}

// SIGTERM; resolves the exit code (or the signal's name).
export function stopServer(srv) {
  return new Promise((resolve) => {
    srv.proc.removeAllListeners('exit');
    srv.proc.on('exit', (c, sig) => resolve(sig ? sig : c));
    srv.proc.kill('SIGTERM');
  });
}

// check(name, fn) runs fn and prints "ok - name" or "not ok - name" with the error;
// summary() prints the counts and returns the number failed.
export function checker() {
  const results = [];
  return {
    async check(name, fn) {
      try {
        await fn();
        results.push([name, true]);
        console.log(`ok - ${name}`);
      } catch (e) {
        results.push([name, false]);
        console.log(`not ok - ${name}\n  ${String(e && e.stack || e).split('\n').join('\n  ')}`);
      }
    },
    summary() {
      const passed = results.filter((r) => r[1]).length;
      console.log(`${passed} passed, ${results.length - passed} failed`);
      return results.length - passed;
    },
  };
}

// The PNG file of an nx x ny RGB image whose pixel (x, y) is rgb(x, y) -> [r, g, b].
export function png(nx, ny, rgb) {
  const raw = Buffer.alloc((nx * 3 + 1) * ny);
  for (let y = 0, o = 0; y < ny; y++) {
    raw[o++] = 0; // filter: none
    for (let x = 0; x < nx; x++, o += 3) {
      const [r, g, b] = rgb(x, y);
      raw[o] = r; raw[o + 1] = g; raw[o + 2] = b;
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(nx, 0);
  ihdr.writeUInt32BE(ny, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // truecolour
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
                        chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)),
                        chunk('IEND', Buffer.alloc(0))]);
}

export const dataUrl = (mime, bytes) => `data:${mime};base64,${Buffer.from(bytes).toString('base64')}`;

// A phone "screenshot": a status bar, rows of list items and a button, their colours drawn
// from seed, so each seed is another image.
export function screenshot(nx, ny, seed) {
  const bar = Math.max(1, ny >> 5), row = Math.max(2, ny >> 4);
  return png(nx, ny, (x, y) => {
    if (y < bar) return [20, 20, 20 + (seed & 63)];
    if (y > ny - 3 * bar && x > nx / 4 && x < 3 * nx / 4) return [30, 110, 230];
    const k = Math.floor((y - bar) / row);
    if ((y - bar) % row < 2) return [200, 200, 200];
    const icon = x < row && x > 2;
    const v = (k * 37 + seed * 101) & 255;
    return icon ? [v, 255 - v, (v * 3) & 255] : [250, 250 - (seed % 7), 245 + (k % 10)];
  });
}

// The value of metric `name` (summed over its labels) in a Prometheus text page.
export function metricValue(page, name) {
  let sum = 0, seen = false;
  for (const line of page.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      seen = true;
    }
  }
  return seen ? sum : undefined;
}

// A GUI agent's action as a JSON Schema: one of actions at (x, y) on a w x h screen, maybe with
// text of up to maxText characters.
export const actionSchema = (actions, w, h, maxText) => ({
  type: 'object',
  properties: {
    action: { enum: actions },
    x: { type: 'integer', minimum: 0, maximum: w },
    y: { type: 'integer', minimum: 0, maximum: h },
    text: { type: 'string', maxLength: maxText },
  },
  required: ['action', 'x', 'y'],
  additionalProperties: false,
});

// Parses json and asserts it is valid by the compiled ajv schema v; returns the value.
export function parseValid(ajv, v, json) {
  let o;
  assert.doesNotThrow(() => { o = JSON.parse(json); }, `not JSON: ${json}`);
  assert.ok(v(o), `${json}: ${ajv.errorsText(v.errors)}`);
  return o;
}
