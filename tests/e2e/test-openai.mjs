// End-to-end: `hetserve serve` on a free port, spoken to with the official openai npm client.
// usage: node test-openai.mjs HETSERVE_BINARY MODEL.gguf
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
let OpenAI;
try {
  OpenAI = createRequire(path.join(here, 'package.json'))('openai').default;
} catch (e) {
  console.error('tests/e2e: the openai package is not installed; run `npm ci --prefix tests/e2e` ' +
                '(scripts/dev.sh deps does it)');
  process.exit(1);
}

const [bin, model] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node test-openai.mjs HETSERVE_BINARY MODEL.gguf');
  process.exit(2);
}

function startServer(apiKey) {
  const env = { ...process.env };
  delete env.HETSERVE_API_KEY;
  if (apiKey) env.HETSERVE_API_KEY = apiKey;
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['serve', '-m', model, '--port', '0', '--ctx', '512', '-t', '1'],
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

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok - ${name}`);
  } catch (e) {
    results.push([name, false]);
    console.log(`not ok - ${name}\n  ${String(e && e.stack || e).split('\n').join('\n  ')}`);
  }
}

await check('serve --help and bad flags', async () => {
  const h = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  for (const flag of ['--host', '--port', '--api-key', '--ctx', '--parallel', '--kv-memory',
                      '--max-body-bytes', '--timeout', '--cors', 'HETSERVE_API_KEY']) {
    assert.ok(h.stdout.includes(flag), `--help lacks ${flag}`);
  }
  assert.equal(spawnSync(bin, ['serve'], { encoding: 'utf8' }).status, 2, 'no -m');
  assert.equal(spawnSync(bin, ['serve', '-m', model, '--port', '70000']).status, 2, 'bad port');
  assert.equal(spawnSync(bin, ['serve', '-m', model, '--host', 'not-an-ip', '--port', '0']).status,
               2, 'bad host');
});

const srv = await startServer();
const client = new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: 'sk-unused',
                            maxRetries: 0, timeout: 60000 });

await check('models.list', async () => {
  const page = await client.models.list();
  assert.equal(page.data.length, 1);
  assert.equal(page.data[0].object, 'model');
  assert.equal(page.data[0].id, path.basename(model, '.gguf'));
});

let chatText;
await check('chat.completions.create', async () => {
  const r = await client.chat.completions.create({
    model: '', messages: [{ role: 'user', content: 'Tell me a story.' }],
    max_tokens: 16, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  chatText = r.choices[0].message.content;
});

await check('chat.completions.create stream with usage', async () => {
  const stream = await client.chat.completions.create({
    model: path.basename(model, '.gguf'), messages: [{ role: 'user', content: 'Tell me a story.' }],
    max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', first = true, usage = null, finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) { usage = chunk.usage; continue; }
    const d = chunk.choices[0].delta;
    if (first) { assert.equal(d.role, 'assistant'); first = false; }
    if (d.content) text += d.content;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, chatText, 'streamed text equals the non-streamed one');
  assert.ok(finish);
  assert.ok(usage && usage.completion_tokens > 0);
});

let cmplText;
await check('completions.create', async () => {
  const r = await client.completions.create({
    model: '', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].index, 0);
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.choices[0].logprobs.tokens.length, r.usage.completion_tokens);
  cmplText = r.choices[0].text;
});

await check('completions.create stream', async () => {
  const stream = await client.completions.create({
    model: '', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, cmplText);
});

await check('error: bad value is a BadRequestError naming the field', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: '', messages: [{ role: 'user', content: 'x' }],
                                     temperature: 'hot' }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `got ${e && e.constructor.name}`);
      assert.equal(e.status, 400);
      assert.equal(e.param, 'temperature');
      return true;
    });
});

await check('error: an unknown model is a NotFoundError (model_not_found)', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }],
                                     max_tokens: 2 }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});

await check('error: image to a text-only model', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: '', messages: [{ role: 'user', content: [
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      { type: 'text', text: 'What do you see?' }] }] }),
    (e) => e.status === 400 && /no vision support/.test(e.message));
});

await check('SIGTERM drains and exits 0', async () => {
  const code = await new Promise((resolve) => {
    srv.proc.removeAllListeners('exit');
    srv.proc.on('exit', (c, sig) => resolve(sig ? sig : c));
    srv.proc.kill('SIGTERM');
  });
  assert.equal(code, 0, srv.log());
});

await check('HETSERVE_API_KEY: wrong key is an AuthenticationError, right key works', async () => {
  const keyed = await startServer('k-123');
  try {
    const base = `http://127.0.0.1:${keyed.port}/v1`;
    const bad = new OpenAI({ baseURL: base, apiKey: 'k-124', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError &&
                                                   e.status === 401);
    const good = new OpenAI({ baseURL: base, apiKey: 'k-123', maxRetries: 0 });
    const page = await good.models.list();
    assert.equal(page.data.length, 1);
  } finally {
    keyed.proc.removeAllListeners('exit');
    keyed.proc.kill('SIGTERM');
  }
});

const passed = results.filter((r) => r[1]).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
if (failed) {
  srv.proc.kill('SIGKILL');
  process.exit(1);
}
