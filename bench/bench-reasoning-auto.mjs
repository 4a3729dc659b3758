// Auto reasoning mode vs always-think on a mixed chat workload: total completion tokens,
// reasoning tokens and wall time, same server, runs interleaved (medians reported).
// usage: node bench/bench-reasoning-auto.mjs HETSERVE_BINARY QWEN3_MODEL.gguf [ROUNDS] [BUDGET]
// The random-weight Qwen3 vocabulary model is made to think by logit_bias on <think>; each
// answer is cut after its first token by the stop string "<think>" (stop strings apply to the
// answer only), so a request's cost is its thinking: BUDGET tokens when it thinks, none when
// auto mode chose short. Half the prompts are easy chat, half carry reasoning cues.
import { spawn } from 'node:child_process';

const [bin, model, roundsArg, budgetArg] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node bench-reasoning-auto.mjs HETSERVE_BINARY QWEN3_MODEL.gguf [ROUNDS] [BUDGET]');
  process.exit(2);
}
const rounds = Number(roundsArg ?? 3), budget = Number(budgetArg ?? 128);
const easy = ['Hi!', 'Thanks a lot.', 'Good morning', 'Who are you?', 'Say hello to Anna.',
              'What a nice day', 'ok, bye', 'How are you?'];
const hard = ['Solve 37*41+12 step by step', 'Prove that there are infinitely many primes.',
              'How many ways can 8 queens be placed?', 'Compute the integral of x^2 from 0 to 3',
              'Why does 0.1+0.2 differ from 0.3?', 'Derive the quadratic formula.',
              'Optimize this algorithm: ```for i in a: for j in a: ...```', 'Calculate 17^3-4'];
const prompts = easy.flatMap((e, i) => [e, hard[i]]);

function start() {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['serve', '-m', model, '--port', '0', '--ctx', '1024', '--parallel', '4'],
                    { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on [^:\s]+:(\d+)/);
      if (m) resolve({ p, port: Number(m[1]) });
    });
    p.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

const { p: srv, port } = await start();
process.on('exit', () => srv.kill('SIGKILL'));
const tok = await (await fetch(`http://127.0.0.1:${port}/tokenize`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ content: '<think>', add_special: false, parse_special: true }) })).json();
const think = tok.tokens[0];

async function one(content, effort) {
  const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], temperature: 0,
                           max_tokens: budget + 8, logit_bias: { [think]: 100 }, stop: ['<think>'],
                           reasoning_effort: effort, thinking_budget_tokens: budget }) });
  const j = await r.json();
  return [j.usage.completion_tokens, j.usage.completion_tokens_details.reasoning_tokens];
}

async function run(effort) {
  const t0 = performance.now();
  let tokens = 0, reasoning = 0, next = 0;
  const worker = async () => {
    while (next < prompts.length) {
      const [c, r] = await one(prompts[next++], effort);
      tokens += c;
      reasoning += r;
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return { s: (performance.now() - t0) / 1000, tokens, reasoning };
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const res = { high: [], auto: [] };
for (let i = 0; i < rounds; i++) {
  res.high.push(await run('high'));
  res.auto.push(await run('auto'));
}
srv.kill('SIGTERM');
for (const k of ['high', 'auto']) {
  const r = res[k];
  console.log(`${k === 'high' ? 'always-think' : 'auto        '}: ${prompts.length} requests, ` +
              `completion tokens ${median(r.map((x) => x.tokens))}, reasoning tokens ` +
              `${median(r.map((x) => x.reasoning))}, time ${median(r.map((x) => x.s)).toFixed(2)} s`);
}
const ratio = (f) => median(res.auto.map((x, i) => f(x) / f(res.high[i])));
console.log(`auto / always-think (per-round ratio, median): tokens ${ratio((x) => x.tokens).toFixed(3)}, ` +
            `time ${ratio((x) => x.s).toFixed(3)}`);
