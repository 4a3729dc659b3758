#!/usr/bin/env node
// Writes a llama.cpp reference for a GGUF file in the format of ../shared/models/reference/*.json
// (tokenization, greedy steps with the top-5 natural-log probabilities), from llama.cpp's
// llama-server run in the peer chroot. How the references in tests/model/data/ were made; never
// a test dependency.
//
//   node bench/make-reference.mjs MODEL.gguf OUT.json [STEPS] [PROMPTS.txt]
//
// MODEL.gguf must lie inside the chroot ($PEER_ROOT, default /var/tmp/llamacpp-peer), e.g. under
// its tmp/<you>/. STEPS defaults to 32, PROMPTS.txt to ../shared/models/reference/prompts.txt.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [, , model, out, stepsArg, promptsArg] = process.argv;
if (!model || !out) {
  console.error('usage: node bench/make-reference.mjs MODEL.gguf OUT.json [STEPS] [PROMPTS.txt]');
  process.exit(2);
}
const peerRoot = process.env.PEER_ROOT || '/var/tmp/llamacpp-peer';
const abs = path.resolve(model);
if (!abs.startsWith(peerRoot + '/')) {
  console.error(`${abs} is not inside ${peerRoot}`);
  process.exit(2);
}
const inside = abs.slice(peerRoot.length);
const steps = Number(stepsArg || 32);
const promptsFile = promptsArg || path.join(root, '../shared/models/reference/prompts.txt');
const prompts = fs.readFileSync(promptsFile, 'utf8').split('\n').filter((l) => l.length > 0);
const port = Number(process.env.PORT || 18097);

const server = spawn('chroot', [peerRoot, '/usr/bin/llama-server', '-m', inside, '--port',
  String(port), '-t', '2', '-c', '2048', '-np', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
server.stderr.on('data', (d) => { log += d; });

async function post(endpoint, body) {
  const r = await fetch(`http://127.0.0.1:${port}${endpoint}`, { method: 'POST',
    body: JSON.stringify(body) });
  return r.json();
}

try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break;
    } catch { /* not up yet */ }
    if (i > 240) throw new Error(`llama-server did not start:\n${log.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const version = (log.match(/build:? (\d+)/) || [])[1] || '?';
  const cases = [];
  for (const prompt of prompts) {
    const tok = await post('/tokenize', { content: prompt, add_special: true });
    const r = await post('/completion', { prompt, n_predict: steps, temperature: 0, n_probs: 5,
      cache_prompt: false });
    if (!r.completion_probabilities || r.completion_probabilities.length === 0) {
      /* a first token ending inside a UTF-8 character: llama-server withholds it */
      console.error(`skipped "${prompt}": no step reported`);
      continue;
    }
    cases.push({
      prompt,
      prompt_tokens: tok.tokens,
      completion: r.content,
      steps: r.completion_probabilities.map((s) => ({
        token: s.id,
        text: s.token,
        top: s.top_logprobs.map((t) => ({ token: t.id, logprob: t.logprob })),
      })),
    });
  }
  fs.writeFileSync(out, JSON.stringify({ model: path.basename(abs),
    engine: `llama.cpp llama-server (Debian build ${version}, CPU)`, n_predict: steps, cases },
  null, 1) + '\n');
  console.log(`wrote ${out}: ${cases.length} prompts, ${steps} steps`);
} finally {
  server.kill('SIGTERM');
}
