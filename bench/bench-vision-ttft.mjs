// Time to first token of an image request (a mobile GUI agent's: system prompt, screenshot,
// instruction) with and without a cache hit, same server, the kinds interleaved in each round:
//   miss     a screenshot never seen: decoded, encoded by the ViT, its tokens prefilled
//   hit      the same screenshot again with another instruction: the encoder's cache gives its
//            rows and the prefix cache its KV (system prompt + image), only the text is prefilled
//   enc-hit  the same screenshot after another system prompt: the encoder's cache hits, the
//            prefix cache does not (every token from the system prompt on is prefilled)
//   text     the instruction without a screenshot (the floor)
// and the encoder's time per image from /metrics (hetserve:image_encode_seconds_total over the
// misses). Models: a random Qwen2-VL pair written by `hetserve mkmodel` into a temporary folder.
// usage: node bench/bench-vision-ttft.mjs HETSERVE_BINARY [--image WxH] [--rounds N]
//          [--threads N] [--dim N] [--layers N] [--vision-dim N] [--vision-layers N]
//          [--vision-heads N] [--vision-ffn N]
// Defaults: 1080x2400 (MobiAgent's screenshots: 3354 image tokens), 3 rounds, 2 threads, a
// dim-128 2-layer language model and mkmodel's tiny projector (vision dim 64, 2 layers).
import { execSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { dataUrl, metricValue, screenshot, startServer, stopServer } from '../tests/e2e/lib.mjs';

const argv = process.argv.slice(2);
const bin = argv.shift();
const opt = { image: '1080x2400', rounds: '3', threads: '2', dim: '128', layers: '2' };
const projOpts = [];
for (let i = 0; i + 1 < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, '');
  if (k.startsWith('vision-')) projOpts.push(argv[i], argv[i + 1]);
  else if (k in opt) opt[k] = argv[i + 1];
  else { console.error(`bench-vision-ttft: unknown option ${argv[i]}`); process.exit(2); }
}
const [nx, ny] = opt.image.split('x').map(Number);
const rounds = Number(opt.rounds);
if (!bin || !(nx > 0 && ny > 0) || !(rounds > 0)) {
  console.error('usage: node bench/bench-vision-ttft.mjs HETSERVE_BINARY [--image WxH] ' +
                '[--rounds N] [--threads N] [--dim N] [--layers N] [--vision-* N]');
  process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-bench-vision-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const lm = path.join(dir, 'qwen2vl.gguf'), proj = path.join(dir, 'mmproj.gguf');
for (const args of [
  ['-o', lm, '--arch', 'qwen2vl', '--dim', opt.dim, '--layers', opt.layers, '--heads', '4',
   '--kv-heads', '2', '--ffn', String(2 * Number(opt.dim)), '--vocab', '1024', '--ctx', '8192'],
  ['-o', proj, '--projector', 'qwen2vl', '--dim', opt.dim, ...projOpts]]) {
  const r = spawnSync(bin, ['mkmodel', ...args], { encoding: 'utf8' });
  if (r.status !== 0) { console.error(r.stderr); process.exit(1); }
}

const srv = await startServer(bin, ['-m', lm, '--mmproj', proj, '--ctx', '8192', '-t',
                                    opt.threads, '--parallel', '2']);
const base = `http://127.0.0.1:${srv.port}`;
const metric = async (name) => metricValue(await (await fetch(`${base}/metrics`)).text(),
                                           `hetserve:${name}`);

const system = 'You are a phone GUI agent. Given the screenshot and the task, answer with the ' +
               'next action as JSON: {"action": "tap", "x": 0, "y": 0}.';
// Streams one request; resolves { ttft (ms to the first token's chunk), prompt tokens }.
async function ttft(sys, url, task) {
  const content = [...(url ? [{ type: 'image_url', image_url: { url } }] : []),
                   { type: 'text', text: task }];
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'system', content: sys }, { role: 'user', content }],
                           max_tokens: 4, temperature: 0, stream: true,
                           stream_options: { include_usage: true } }) });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = null, text = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    first ??= performance.now() - t0;
    text += dec.decode(chunk, { stream: true });
  }
  const usage = text.split('\n').filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6))).find((j) => j.usage)?.usage;
  return { ttft: first, prompt: usage?.prompt_tokens,
           cached: usage?.prompt_tokens_details?.cached_tokens ?? 0 };
}

const uptime = () => execSync('uptime').toString().trim();
console.log(`# ${new Date().toISOString()}  ${uptime()}`);
// warm-up: the first request pays for page faults of the weights and the scratch buffers
await ttft(system, dataUrl('image/png', screenshot(nx, ny, 9999)), 'Warm up.');
const kinds = ['miss', 'hit', 'enc-hit', 'text'];
const t = Object.fromEntries(kinds.map((k) => [k, []]));
const prompt = {};
const enc = [];
for (let r = 0; r < rounds; r++) {
  const url = dataUrl('image/png', screenshot(nx, ny, r));
  const s0 = await metric('image_encode_seconds_total');
  const m = await ttft(system, url, `Round ${r}: open the settings.`);
  enc.push(await metric('image_encode_seconds_total') - s0);
  t.miss.push(m.ttft);
  prompt.miss = m;
  // the others in a rotating order, so none always runs right after the miss
  const rest = [
    ['hit', () => ttft(system, url, `Round ${r}: now turn on Wi-Fi.`)],
    ['enc-hit', () => ttft(`Round ${r}. ${system}`, url, `Round ${r}: go back.`)],
    ['text', () => ttft(system, null, `Round ${r}: open the camera.`)]];
  for (let i = 0; i < rest.length; i++) {
    const [k, fn] = rest[(i + r) % rest.length];
    const x = await fn();
    t[k].push(x.ttft);
    prompt[k] = x;
  }
}
const hits = await metric('image_cache_hits_total'), encoded = await metric('images_encoded_total');
await stopServer(srv);

const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`image ${nx}x${ny}; language model dim ${opt.dim}, ${opt.layers} layers; projector ` +
            `${projOpts.join(' ') || 'mkmodel default'}; -t ${opt.threads}; ${rounds} rounds`);
console.log(`images encoded ${encoded} (warm-up included), encoder cache hits ${hits}`);
console.log(`encoder (preprocess + encode, /metrics) per image: median ${(med(enc) * 1e3).toFixed(1)} ms ` +
            `(min ${(Math.min(...enc) * 1e3).toFixed(1)}, max ${(Math.max(...enc) * 1e3).toFixed(1)})`);
for (const k of kinds) {
  console.log(`TTFT ${k.padEnd(8)} median ${med(t[k]).toFixed(1).padStart(9)} ms  (min ` +
              `${Math.min(...t[k]).toFixed(1)}, max ${Math.max(...t[k]).toFixed(1)}; ` +
              `${prompt[k].prompt} prompt tokens, ${prompt[k].cached} cached)`);
}
console.log(`miss / hit ${(med(t.miss) / med(t.hit)).toFixed(1)}x, miss / enc-hit ` +
            `${(med(t.miss) / med(t['enc-hit'])).toFixed(1)}x`);
console.log(`# ${uptime()}`);
