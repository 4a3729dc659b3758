// End-to-end image input with the official openai npm client: `hetserve serve --mmproj` on a
// random Qwen2-VL-shaped language model and projector written here by `hetserve mkmodel` (and a
// Qwen2.5-VL projector for the agent's request at the end), spoken
// to as a mobile GUI agent (MobiAgent) does: a system prompt, the phone's screenshot as a PNG
// data URL beside the instruction, and a json_schema response_format for the action, its answer
// checked with ajv. Broken, huge and unsupported images are 400s naming the part, and text-only
// answers at temperature 0 are the same with 16 image requests running beside them.
// usage: node test-vision.mjs HETSERVE_BINARY
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { actionSchema, checker, dataUrl, loadClient, metricValue, parseValid, png, screenshot,
         startServer, stopServer } from './lib.mjs';

const { OpenAI, Ajv } = loadClient();
const [bin] = process.argv.slice(2);
if (!bin) {
  console.error('usage: node test-vision.mjs HETSERVE_BINARY');
  process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-e2e-vision-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const lm = path.join(dir, 'qwen2vl.gguf'), proj = path.join(dir, 'mmproj-qwen2vl.gguf');
const proj25 = path.join(dir, 'mmproj-qwen25vl.gguf');
for (const args of [
  ['-o', lm, '--arch', 'qwen2vl', '--dim', '128', '--heads', '4', '--kv-heads', '2', '--ffn', '256',
   '--vocab', '1024', '--ctx', '4096'],
  ['-o', proj, '--projector', 'qwen2vl', '--dim', '128'],
  ['-o', proj25, '--projector', 'qwen25vl', '--dim', '128']]) {
  const r = spawnSync(bin, ['mkmodel', ...args], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`mkmodel ${args.join(' ')} failed: ${r.stderr}`);
    process.exit(1);
  }
}

// 20 Mpx of one colour: a small file (a decompression bomb's shape), over the 16 Mpx bound.
// Made before the server starts: seconds of synchronous work here, mid-test, would leave the
// client's idle keep-alive sockets unserviced past the server's 5 s keep-alive timeout.
const flat = png(4000, 5000, () => [255, 255, 255]);

const { check, summary } = checker();
const srv = await startServer(bin, ['-m', lm, '--mmproj', proj, '--ctx', '2048', '-t', '1',
                                    '--parallel', '8']);
const base = `http://127.0.0.1:${srv.port}`;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0,
                            timeout: 120000 });
const metric = async (name) => metricValue(await (await fetch(`${base}/metrics`)).text(),
                                           `hetserve:${name}`);

const ajv = new Ajv({ strict: false, allErrors: true });
const action = actionSchema(['tap', 'swipe', 'type', 'back', 'done'], 1080, 2400, 16);
const validAction = ajv.compile(action);
const validate = (json) => parseValid(ajv, validAction, json);

// A phone screenshot's aspect (1080x2400, 9:20) at a third of its side: 13 x 29 merged patches
// once resized to multiples of 28 pixels, so 377 image tokens.
const SHOT_TOKENS = 377;
const shot = dataUrl('image/png', screenshot(360, 800, 0));
const system = 'You are a phone GUI agent. Given the screenshot and the task, answer with the ' +
               'next action as JSON.';
const agent = (url, task, extra = {}) => ({
  model: '', max_tokens: 200, temperature: 0, ...extra,
  messages: [
    { role: 'system', content: system },
    { role: 'user', content: [
      ...(url ? [{ type: 'image_url', image_url: { url, detail: 'high' } }] : []),
      { type: 'text', text: task }] }],
  response_format: { type: 'json_schema', json_schema: { name: 'action', strict: true,
                                                          schema: action } } });

let answer;
await check('MobiAgent request: screenshot + json_schema action, the answer validates',
            async () => {
  const r = await client.chat.completions.create(agent(shot, 'Open the settings.',
                                                       { logprobs: true }));
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'stop', c.message.content);
  validate(c.message.content);
  answer = c.message.content;
  // the same request without the screenshot: the image's tokens are in the prompt, and the
  // model read them (the first token's distribution differs)
  const t = await client.chat.completions.create(agent(null, 'Open the settings.',
                                                       { logprobs: true }));
  assert.ok(r.usage.prompt_tokens - t.usage.prompt_tokens >= SHOT_TOKENS,
            `${r.usage.prompt_tokens} vs ${t.usage.prompt_tokens} without the image`);
  assert.notEqual(c.logprobs.content[0].logprob, t.choices[0].logprobs.content[0].logprob);
  assert.equal(await metric('images_encoded_total'), 1);
  assert.equal(await metric('image_cache_hits_total'), 0);
  assert.ok(await metric('image_encode_seconds_total') > 0);
});

await check('the same screenshot streamed: same answer, from the encoder cache', async () => {
  const stream = await client.chat.completions.create({
    ...agent(shot, 'Open the settings.'), stream: true });
  let text = '', finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'stop');
  assert.equal(text, answer);
  assert.equal(await metric('images_encoded_total'), 1);
  assert.equal(await metric('image_cache_hits_total'), 1);
});

await check('a multi-turn agent history: earlier screens, the actions taken, the new screen',
            async () => {
  const prev = dataUrl('image/png', screenshot(360, 800, 1));
  const r = await client.chat.completions.create({
    ...agent(shot, 'Now turn on Wi-Fi.'),
    messages: [
      { role: 'system', content: system },
      { role: 'user', content: [{ type: 'image_url', image_url: { url: prev } },
                                { type: 'text', text: 'Open the settings.' }] },
      { role: 'assistant', content: '{"action": "tap", "x": 540, "y": 2210}' },
      { role: 'user', content: [{ type: 'image_url', image_url: { url: shot } },
                                { type: 'text', text: 'Now turn on Wi-Fi.' }] }] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  validate(r.choices[0].message.content);
  assert.ok(r.usage.prompt_tokens >= 2 * SHOT_TOKENS);
  assert.equal(await metric('images_encoded_total'), 2, 'the new screen only');
});

// 400s: the SDK's BadRequestError, naming the content part and saying what is wrong
const bad = async (url, re) => assert.rejects(
  client.chat.completions.create(agent(url, 'Next?')),
  (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `${e && e.constructor.name}: ${e.message}`);
    assert.equal(e.status, 400);
    assert.equal(e.param, 'messages[1].content[0]');
    assert.match(e.message, re);
    return true;
  });

await check('a broken image is a 400', async () => {
  const full = screenshot(360, 800, 2);
  await bad(dataUrl('image/png', full.subarray(0, full.length >> 1)), /PNG/);
  const garbled = Buffer.from(full);
  garbled.fill(0x5a, 40, 80); // inside IDAT: the deflate stream is corrupt
  await bad(dataUrl('image/png', garbled), /PNG/);
  await bad('data:image/png;base64,%%%', /base64/);
  await bad(dataUrl('image/jpeg', Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70])), /JPEG/);
});

await check('a huge image is a 400 before its pixels are decoded', async () => {
  assert.ok(flat.length < 1 << 20, `${flat.length} bytes`);
  await bad(dataUrl('image/png', flat), /20000000 pixels, more than the limit/);
  await bad(dataUrl('image/png', png(9000, 4, () => [0, 0, 0])), /limit/);
});

await check('an unsupported format is a 400', async () => {
  await bad('data:image/gif;base64,R0lGODlhAQABAAAAACw=', /PNG and JPEG/);
  await bad(dataUrl('image/webp', Buffer.from('RIFF\x1a\0\0\0WEBPVP8L', 'latin1')),
            /PNG and JPEG/);
  await bad('https://example.com/screen.png', /not fetched/);
});

await check('16 concurrent image requests do not change text-only answers', async () => {
  const prompts = ['Tell me a story.', 'What is 2 + 2?', 'Name three colours.',
                   'Write a haiku about phones.'];
  const ask = (p) => client.chat.completions.create({
    model: '', messages: [{ role: 'user', content: p }], max_tokens: 24, temperature: 0,
    logprobs: true, top_logprobs: 2 });
  // The tokens must be the same. Log-probabilities may move in the last digits: the CPU
  // attention accumulates in f16 or f32 by the step's row count, as ggml does, so any long
  // prefill sharing a step (an image's or a text's) changes their bits; 1e-3 bounds that, and
  // every greedy choice here wins by more than that, so it cannot flip a token.
  const alone = [];
  for (const p of prompts) {
    const c = (await ask(p)).choices[0];
    for (const t of c.logprobs.content) {
      assert.ok(t.top_logprobs[0].logprob - t.top_logprobs[1].logprob > 1e-3,
                `"${p}": a near tie at "${t.token}": the comparison below would be fragile`);
    }
    alone.push(c);
  }
  const same = (c, a, p) => {
    assert.equal(c.message.content, a.message.content, `"${p}" changed`);
    assert.deepEqual(c.logprobs.content.map((t) => t.token), a.logprobs.content.map((t) => t.token));
    c.logprobs.content.forEach((t, i) => assert.ok(
      Math.abs(t.logprob - a.logprobs.content[i].logprob) < 1e-3, `"${p}" token ${i}`));
  };
  const encoded0 = await metric('images_encoded_total');
  // 16 screenshots never seen before (each encoded), smaller ones so the test stays short
  let inFlight = true;
  // allSettled: a failed image request is reported below, not an unhandled rejection meanwhile
  const images = Promise.allSettled(Array.from({ length: 16 }, (_, i) =>
    client.chat.completions.create(agent(dataUrl('image/png', screenshot(270, 600, 100 + i)),
                                         `Task ${i}: open the camera.`)))).finally(() => {
    inFlight = false;
  });
  let rounds = 0, overlapped = 0;
  do {
    const during = await Promise.all(prompts.map(ask));
    during.forEach((r, i) => same(r.choices[0], alone[i], prompts[i]));
    rounds++;
    if (inFlight) overlapped++;
  } while (inFlight);
  const answers = await images;
  for (const a of answers) {
    assert.equal(a.status, 'fulfilled', String(a.reason));
    const r = a.value;
    assert.equal(r.choices[0].finish_reason, 'stop');
    validate(r.choices[0].message.content);
  }
  assert.equal(await metric('images_encoded_total') - encoded0, 16);
  assert.ok(overlapped >= 1, 'no text round finished while the image requests ran');
  console.log(`  # ${rounds} text rounds, ${overlapped} finished while image requests ran`);
});

await check('SIGTERM exits 0', async () => {
  assert.equal(await stopServer(srv), 0, srv.log());
});

// The MobiAgent models' own family: a Qwen2.5-VL projector (window attention) beside the same
// language model answers the agent's request as well.
const srv25 = await startServer(bin, ['-m', lm, '--mmproj', proj25, '--ctx', '2048', '-t', '1']);
await check('Qwen2.5-VL projector: the MobiAgent request validates', async () => {
  const c25 = new OpenAI({ baseURL: `http://127.0.0.1:${srv25.port}/v1`, apiKey: 'sk-unused',
                           maxRetries: 0, timeout: 120000 });
  const r = await c25.chat.completions.create(agent(shot, 'Open the settings.'));
  assert.equal(r.choices[0].finish_reason, 'stop', r.choices[0].message.content);
  validate(r.choices[0].message.content);
  const t = await c25.chat.completions.create(agent(null, 'Open the settings.'));
  assert.ok(r.usage.prompt_tokens - t.usage.prompt_tokens >= SHOT_TOKENS,
            `${r.usage.prompt_tokens} vs ${t.usage.prompt_tokens} without the image`);
  assert.equal(await stopServer(srv25), 0, srv25.log());
});

if (summary()) {
  srv.proc.kill('SIGKILL');
  srv25.proc.kill('SIGKILL');
  process.exit(1);
}
