#!/usr/bin/env node
// Greedy steps of hetserve against llama.cpp's llama-server on the same GGUF file, for
// architectures the shared references do not cover (olmoe, hunyuan-moe, files written by
// `hetserve mkmodel`). A yardstick for development, never a test dependency: llama.cpp runs
// through ../shared/peers/llamacpp.sh.
//
//   node bench/crosscheck-llamacpp.mjs MODEL.gguf [STEPS] [PROMPT...]
//
// Prints, per prompt, the largest |logprob difference| over the top-5 of each step and the first
// step where the greedy tokens differ (each engine follows its own tokens, so steps after a
// divergence compare different contexts and are not counted).
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [, , model, stepsArg, ...prompts] = process.argv;
if (!model) {
  console.error('usage: node bench/crosscheck-llamacpp.mjs MODEL.gguf [STEPS] [PROMPT...]');
  process.exit(2);
}
const steps = Number(stepsArg || 16);
const texts = prompts.length ? prompts : ['hello world', 'once upon a time there was', 'abc def'];
const hetserve = process.env.HETSERVE || path.join(root, 'build/api/hetserve');
const peer = path.join(root, '../shared/peers/llamacpp.sh');
const port = Number(process.env.PORT || 18099);
const abs = path.resolve(model);

const server = spawn('bash', [peer, 'run', 'llama-server', '-m', `/models/${path.basename(abs)}`,
  '--port', String(port), '-t', '2', '-c', '2048', '-np', '1'],
{ env: { ...process.env, PEER_MODELS: path.dirname(abs) }, stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
server.stderr.on('data', (d) => { log += d; });

async function waitReady() {
  for (let i = 0; i < 120; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`llama-server did not start:\n${log.slice(-2000)}`);
}

let worst = 0;
try {
  await waitReady();
  for (const prompt of texts) {
    const r = await fetch(`http://127.0.0.1:${port}/completion`, {
      method: 'POST',
      body: JSON.stringify({ prompt, n_predict: steps, temperature: 0, n_probs: 5,
        cache_prompt: false }),
    });
    const ref = (await r.json()).completion_probabilities;
    const ours = execFileSync(hetserve, ['generate', '-m', abs, '-p', prompt, '-n', String(steps),
      '--temp', '0', '--logprobs', '5'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim().split('\n').map((l) => JSON.parse(l));
    let maxd = 0;
    let diverged = -1;
    let gap = 0;
    let merged = 0;
    /* llama-server streams a token that ends inside a UTF-8 character together with the next
     * one and reports one step for both: skip our partial-character steps to stay aligned. */
    for (let i = 0, j = 0; i < ours.length && j < ref.length; i++) {
      if (ours[i].token !== ref[j].id) {
        /* byte tokens (one character each) llama.cpp folded into its next step */
        let k = i;
        while (k < ours.length && k < i + 4 && ours[k].token !== ref[j].id &&
               [...ours[k].text].length === 1) {
          k++;
        }
        if (k > i && k < ours.length && ours[k].token === ref[j].id &&
            ours[i].text.includes('\ufffd')) {
          merged += k - i;
          i = k - 1;
          continue;
        }
      }
      const mine = new Map(ours[i].top.map((t) => [t.token, t.logprob]));
      for (const t of ref[j].top_logprobs) {
        if (mine.has(t.id)) maxd = Math.max(maxd, Math.abs(mine.get(t.id) - t.logprob));
      }
      if (ours[i].token !== ref[j].id) {
        diverged = j;
        const theirs = ref[j].top_logprobs;
        const mineInTheirs = theirs.find((t) => t.id === ours[i].token);
        gap = mineInTheirs ? theirs[0].logprob - mineInTheirs.logprob : Infinity;
        break;
      }
      j++;
    }
    worst = Math.max(worst, maxd);
    console.log(`${path.basename(abs)} "${prompt}": max |dlogprob| ${maxd.toExponential(2)}` +
      (diverged >= 0 ? `, greedy tokens differ at step ${diverged} (a near-tie when the gap in ` +
        `llama.cpp's log-probabilities, ${gap.toExponential(1)}, is that small)` :
        `, greedy steps equal`) + (merged ? ` (${merged} partial-character tokens merged)` : ''));
  }
} finally {
  server.kill('SIGTERM');
}
console.log(`worst ${worst.toExponential(2)}`);
