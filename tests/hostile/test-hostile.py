#!/usr/bin/env python3
"""Hostile clients against `hetserve serve`, over raw sockets on 127.0.0.1 (issue 17).

Each check starts the server as it needs it, attacks it the way a hostile but realistic client
would, and asserts the issue's pass criteria: connection exhaustion (idle, slowloris, per
address, over capacity), memory before authentication, one request's memory, logit_bias key
spellings, request smuggling, Host/Origin/Content-Type, empty keys, CORS for the OpenAI JS SDK,
tenant isolation of the prefix cache, log forging, status codes of drained and timed-out
requests, per-key rate limits and key files, 503 while the model loads, and shutdown (idle
keep-alive, a second signal).

HETSERVE_TEST_LOAD_DELAY_MS=N makes `hetserve serve` wait N ms before it loads the model: it
exists for the loading check here and nothing else reads it.

usage: test-hostile.py HETSERVE MODEL [CHECK...]   (exit 0: all passed, 1: a check failed)
Everything stays on loopback; attackers use source addresses 127.0.0.2-127.0.0.31 so the
per-address limit does not hide what the server does under a distributed attack.
"""
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time

BIN, MODEL = sys.argv[1], sys.argv[2]
ONLY = sys.argv[3:]
CHECKS = []
with open(BIN, "rb") as _f:
    # Under AddressSanitizer memory is shadowed and freed blocks are quarantined: the RSS
    # figures are printed but not judged.
    SANITIZED = b"__asan_init" in _f.read()


def check(fn):
    CHECKS.append(fn)
    return fn


# ---- the server ----

class Server:
    def __init__(self, *args, env=None, ctx=512):
        e = dict(os.environ)
        e.pop("HETSERVE_API_KEY", None)
        e.update(env or {})
        self.log_path = "/tmp/hetserve-hostile-%d-%d.log" % (os.getpid(), len(CHECKS))
        self.logf = open(self.log_path, "w+b")
        cmd = [BIN, "serve", "-m", MODEL, "--port", "0", "-c", str(ctx), "-t", "1",
               "--parallel", "4"] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.logf, env=e)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on [^ ]+:(\d+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError("server did not start: %s %s" % (line, self.log()))
        self.port = int(m.group(1))

    def log(self):
        self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the server (a drain); returns its exit status. Sanitizer reports fail."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        log = self.log()
        self.logf.close()
        os.unlink(self.log_path)
        m = re.search(r"(ERROR: \w+Sanitizer|WARNING: ThreadSanitizer|runtime error:).*", log)
        if m and not exc[0]:
            raise AssertionError("sanitizer report: %s" % log[m.start():m.start() + 2000])


# ---- raw HTTP ----

def connect(port, src="127.0.0.1", timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.settimeout(timeout)
    if src != "127.0.0.1":
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_response(s):
    """(status, headers dict lower-case, body bytes) of one response; status 0 on EOF first."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            return 0, {}, data
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs.setdefault(k.strip().lower(), v.strip())
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(body) < n:
            b = s.recv(65536)
            if not b:
                break
            body += b
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            b = s.recv(65536)
            if not b:
                break
            body += b
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, hdrs, body


def request(port, method, path, body=None, headers=None, src="127.0.0.1", timeout=30):
    h = {"Host": "127.0.0.1:%d" % port}
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        body = body.encode() if isinstance(body, str) else body
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    raw = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
        "%s: %s\r\n" % kv for kv in h.items() if kv[1] is not None) + "Connection: close\r\n\r\n"
    s = connect(port, src, timeout)
    try:
        s.sendall(raw.encode() + (body or b""))
        return read_response(s)
    finally:
        s.close()


def jrequest(port, path, body, headers=None, timeout=60):
    st, h, b = request(port, "POST", path, body, headers, timeout=timeout)
    try:
        return st, h, json.loads(b)
    except ValueError:
        return st, h, b.decode(errors="replace")


def metric(port, name):
    _, _, b = request(port, "GET", "/metrics")
    m = re.search(r"^hetserve:%s\{[^}]*\} ([0-9.e+-]+)$" % name, b.decode(), re.M)
    return float(m.group(1)) if m else None


def closed_within(s, seconds):
    """True when the server closes s (EOF or reset) within seconds."""
    s.settimeout(seconds)
    t0 = time.time()
    try:
        while time.time() - t0 < seconds:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def closed_among(socks, seconds):
    """Indices of the sockets the server closes (EOF or reset) within seconds."""
    shut = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        open_ = [s for i, s in enumerate(socks) if i not in shut]
        ready, _, _ = select.select(open_, [], [], max(deadline - time.time(), 0))
        for s in ready:
            try:
                if s.recv(4096):
                    continue
            except (ConnectionResetError, BrokenPipeError):
                pass
            shut.add(socks.index(s))
    return shut


def attackers(n):
    return ["127.0.0.%d" % (2 + i % 30) for i in range(n)]


def eq(a, b, what):
    assert a == b, "%s: got %r, want %r" % (what, a, b)


# ---- connection exhaustion ----

@check
def idle_and_slowloris_connections_do_not_lock_anyone_out():
    with Server("--header-timeout", "4") as srv:
        rss0 = srv.rss_kib()
        idle = [connect(srv.port, a) for a in attackers(300)]
        slow = []
        for a in attackers(300):
            s = connect(srv.port, a)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            slow.append(s)
        time.sleep(0.5)
        for s in slow:
            s.sendall(b"b")  # one byte more: still alive, never finishing
        t0 = time.time()
        st, _, body = request(srv.port, "GET", "/health", timeout=5)
        health_s = time.time() - t0
        eq(st, 200, "/health under attack")
        assert health_s < 1.0, "/health took %.3f s" % health_s
        conns = metric(srv.port, "http_connections")
        assert conns >= 600, "only %s connections were open during the check" % conns
        t0 = time.time()
        st, _, j = jrequest(srv.port, "/v1/completions", {"prompt": "Once", "max_tokens": 8},
                            timeout=30)
        eq(st, 200, "completion under attack")
        print("    /health %.0f ms and a completion %.0f ms with %d connections open (RSS +%.1f "
              "MiB)" % (health_s * 1000, (time.time() - t0) * 1000, conns,
                        (srv.rss_kib() - rss0) / 1024))
        # the header deadline (4 s) closes both kinds
        t0 = time.time()
        assert all(closed_within(s, 6 - (time.time() - t0)) for s in idle[:20] + slow[:20]), \
            "idle/slowloris connections outlived the header deadline"
        print("    attackers closed by the header deadline after %.1f s" % (time.time() - t0 + 0.5))
        for s in idle + slow:
            s.close()


@check
def per_address_limit_and_503_over_capacity():
    with Server("--max-connections-per-ip", "8", "--max-connections", "40") as srv:
        # The pool's threads accept concurrently, so which of nine connections made back to
        # back is the one turned away is up to the scheduler: exactly one must be, and the
        # eight kept must each be served.
        nine = [connect(srv.port, "127.0.0.40") for _ in range(9)]
        shut = closed_among(nine, 2)
        eq(len(shut), 1, "connections closed of 9 from one address (limit 8)")
        mine = [s for i, s in enumerate(nine) if i not in shut]
        for s in mine:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            eq(read_response(s)[0], 200, "a request on one of the 8 kept connections")
        extra = nine[shut.pop()]
        eq(request(srv.port, "GET", "/health", src="127.0.0.41")[0], 200, "another address")
        many = [connect(srv.port, a) for a in attackers(40)]
        st, h, _ = request(srv.port, "GET", "/health", src="127.0.0.42")
        eq(st, 503, "a request over the connection limit")
        assert "retry-after" in h, h
        for s in mine + many + [extra]:
            s.close()


@check
def keepalive_and_body_deadlines():
    with Server("--keepalive-timeout", "1", "--body-timeout", "1", ctx=4096) as srv:
        # a request waiting for the engine longer than any deadline is not cut
        out = {}
        ts = [threading.Thread(target=long_request, args=(srv.port, st, out, st, 1500))
              for st in (False, True)]
        t0 = time.time()
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        took = time.time() - t0
        eq((out[False][0], out[True][0]), (200, 200), "requests of %.1f s" % took)
        assert stream_error(out[True][1]) is None, out[True][1][-300:]
        s = connect(srv.port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        eq(read_response(s)[0], 200, "keep-alive request")
        t0 = time.time()
        assert closed_within(s, 3), "idle keep-alive connection not closed"
        ka = time.time() - t0
        s = connect(srv.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":")
        t0 = time.time()
        assert closed_within(s, 4), "a body that never finishes was not cut"
        print("    keep-alive closed after %.1f s, slow body after %.1f s; two requests of "
              "%.1f s were not cut" % (ka, time.time() - t0, took))


# ---- memory ----

def upload(port, src, auth, size, results, i, hold_last=True):
    try:
        s = connect(port, src, timeout=20)
        h = ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
             "\r\nContent-Length: %d\r\n%s\r\n" % (size, auth)).encode()
        s.sendall(h)
        chunk = b" " * 65536
        sent = 0
        try:
            while sent < size - 1:
                n = min(len(chunk), size - 1 - sent)
                s.sendall(chunk[:n])
                sent += n
        except OSError:
            pass
        results[i] = (s, sent)
    except OSError as e:
        results[i] = (None, str(e))


def peak_rss_during(srv, fn):
    peak = [srv.rss_kib()]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], srv.rss_kib())
            time.sleep(0.01)
    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0]


@check
def unauthenticated_uploads_hold_no_memory():
    with Server("--api-key", "k1") as srv:
        # the key is checked when the headers arrive: 401 before any body byte
        s = connect(srv.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 4194304\r\n\r\n")
        st, h, _ = read_response(s)
        eq(st, 401, "unauthenticated headers")
        eq(h.get("connection", "").lower(), "close", "Connection after a refused body")
        s.close()
        for _ in range(3):
            request(srv.port, "GET", "/health")
        base = srv.rss_kib()
        results = [None] * 100

        def attack():
            ts = [threading.Thread(target=upload, args=(srv.port, a, "", 4 << 20, results, i))
                  for i, a in enumerate(attackers(100))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        peak = peak_rss_during(srv, attack)
        grow = (peak - base) / 1024
        for r in results:
            if r and r[0]:
                r[0].close()
        print("    100 unauthenticated 4 MiB uploads: RSS %.1f -> peak %.1f MiB (+%.1f)"
              % (base / 1024, peak / 1024, grow))
        assert SANITIZED or grow < 32, "RSS grew by %.1f MiB" % grow
        # routes without a key take no body either
        s = connect(srv.port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4194304\r\n\r\n")
        eq(read_response(s)[0], 400, "a body on GET /health")
        s.close()


@check
def body_memory_is_bounded_in_total():
    with Server("--max-body-memory", "16") as srv:
        base = srv.rss_kib()
        results = [None] * 60

        def attack():
            ts = [threading.Thread(target=upload, args=(srv.port, a, "", 4 << 20, results, i))
                  for i, a in enumerate(attackers(60))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            time.sleep(0.3)
        peak = peak_rss_during(srv, attack)
        held = metric(srv.port, "http_body_bytes")
        grow = (peak - base) / 1024
        print("    60 uploads of 4 MiB held open (no key needed): body memory %.1f MiB, "
              "RSS +%.1f MiB" % (held / 2**20, grow))
        assert held <= 16 << 20, held
        assert SANITIZED or grow < 16 + 24, \
            "RSS grew by %.1f MiB with a 16 MiB body budget" % grow
        for r in results:
            if r and r[0]:
                r[0].close()


@check
def one_request_cannot_allocate_a_gigabyte():
    with Server(ctx=2048) as srv:
        huge = {"prompt": ["Once"] * 16, "n": 16, "max_tokens": 1000, "logprobs": 20}
        st, _, j = jrequest(srv.port, "/v1/completions", huge)
        eq(st, 400, "16 prompts x n 16 x 1000 tokens x 21")
        assert "output items" in j["error"]["message"], j
        base = srv.rss_kib()
        box = {}

        def big():
            box["r"] = jrequest(srv.port, "/v1/completions",
                                {"prompt": ["Once", "The", "A", "It"], "n": 8, "max_tokens": 256,
                                 "logprobs": 20, "ignore_eos": True, "temperature": 1,
                                 "seed": 1}, timeout=120)
        peak = peak_rss_during(srv, big)
        st, _, j = box["r"]
        eq(st, 200, "the largest request the default cap allows")
        size = len(json.dumps(j)) / 2**20
        grow = (peak - base) / 1024
        print("    4 x 8 x 256 tokens x 21 logprobs: answer %.1f MiB, RSS +%.1f MiB"
              % (size, grow))
        assert SANITIZED or grow < 3 * size + 16, \
            "RSS grew %.1f MiB for a %.1f MiB answer" % (grow, size)


# ---- request parsing ----

@check
def logit_bias_keys_must_be_canonical():
    with Server() as srv:
        for key in [" 5", "\t5", "+5", "05", "5.0", "5 ", "-0", "1e1", ""]:
            st, _, j = jrequest(srv.port, "/v1/completions",
                                {"prompt": "Once", "max_tokens": 1, "logit_bias": {key: 1}})
            eq(st, 400, "logit_bias key %r" % key)
        st, _, _ = jrequest(srv.port, "/v1/completions",
                            {"prompt": "Once", "max_tokens": 1, "logit_bias": {"5": 1, "6": -1}})
        eq(st, 200, "canonical keys")
        many = {str(i): 1 for i in range(1025)}
        st, _, j = jrequest(srv.port, "/v1/completions",
                            {"prompt": "Once", "max_tokens": 1, "logit_bias": many})
        eq(st, 400, "1025 entries")


@check
def openai_fields_and_status_codes():
    with Server("--api-key", "k1", "--api-key", "k2") as srv:
        auth = {"Authorization": "Bearer k1 "}  # a trailing space is not part of the key
        c = "/v1/completions"
        eq(jrequest(srv.port, c, {"prompt": "Once", "max_tokens": 1}, auth)[0], 200, "Bearer k1 ")
        eq(jrequest(srv.port, c, {"prompt": "Once", "max_tokens": 0}, auth)[0], 400,
           "max_tokens 0")
        st, _, j = jrequest(srv.port, c, {"model": "gpt-4o", "prompt": "x", "max_tokens": 1}, auth)
        eq((st, j["error"]["code"]), (404, "model_not_found"), "unknown model")
        name = os.path.basename(MODEL)[:-5]
        for m in ["", name]:
            eq(jrequest(srv.port, c, {"model": m, "prompt": "x", "max_tokens": 1}, auth)[0], 200,
               "model %r" % m)
        eq(jrequest(srv.port, c, {"prompt": "x", "suffix": "y", "max_tokens": 1}, auth)[0], 400,
           "suffix")
        eq(jrequest(srv.port, c, {"prompt": "x", "n": 2, "best_of": 1}, auth)[0], 400,
           "best_of < n")
        st, _, j = jrequest(srv.port, c, {"prompt": "Once upon", "best_of": 3, "max_tokens": 4,
                                          "temperature": 1, "seed": 3}, auth)
        eq((st, len(j["choices"])), (200, 1), "best_of 3, n 1")
        st, _, j = jrequest(srv.port, c, {"prompt": "Once upon", "echo": True, "max_tokens": 3},
                            auth)
        assert st == 200 and j["choices"][0]["text"].startswith("Once upon"), j
        st, h, _ = request(srv.port, "DELETE", "/v1/completions", headers=auth)
        eq(st, 405, "DELETE")
        assert "POST" in h.get("allow", ""), h
        st, _, _ = request(srv.port, "POST", c, b"{}", {"Authorization": "Bearer k1",
                                                         "Content-Type": "text/plain"})
        eq(st, 415, "text/plain body")


@check
def smuggling_framing_and_nul():
    with Server() as srv:
        hidden = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        body = b'{"prompt":"x"}'
        s = connect(srv.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n"
                  % (len(body), len(body) + len(hidden)) + body + hidden)
        st, h, _ = read_response(s)
        eq(st, 400, "two Content-Length headers")
        st2, _, _ = read_response(s)
        eq(st2, 0, "a response after the refused request (smuggled)")
        s.close()
        s = connect(srv.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"e\r\n" + body + b"\r\n0\r\n\r\n")
        eq(read_response(s)[0], 400, "Content-Length with Transfer-Encoding")
        s.close()
        for line in [b"GET /health\x00junk HTTP/1.1", b"GET /he\x00alth HTTP/1.1",
                     b"GE\x00T /health HTTP/1.1"]:
            s = connect(srv.port)
            s.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
            st = read_response(s)[0]
            assert st == 400, "%r: %d" % (line, st)
            s.close()


@check
def host_origin_and_empty_keys():
    with Server("--allowed-host", "api.example.com") as srv:
        p = srv.port
        for host, want in [("evil.com", 403), ("evil.com:%d" % p, 403), ("127.0.0.1", 200),
                           ("localhost:%d" % p, 200), ("[::1]:%d" % p, 200),
                           ("api.example.com", 200), ("x.api.example.com", 403)]:
            st = request(p, "GET", "/health", headers={"Host": host})[0]
            eq(st, want, "Host %s" % host)
        for origin, want in [("http://evil.com", 403), ("null", 403),
                             ("http://localhost:3000", 200), ("http://127.0.0.1:%d" % p, 200),
                             ("http://192.168.1.9", 403)]:
            st = jrequest(p, "/v1/completions", {"prompt": "x", "max_tokens": 1},
                          {"Origin": origin})[0]
            eq(st, want, "Origin %s" % origin)
    for args, env in [(["--api-key", ""], {}), ([], {"HETSERVE_API_KEY": ""})]:
        e = dict(os.environ)
        e.update(env)
        r = subprocess.run([BIN, "serve", "-m", MODEL, "--port", "0"] + args, env=e,
                           capture_output=True, timeout=30)
        eq(r.returncode, 2, "empty key %s %s" % (args, env))
        assert b"empty" in r.stderr, r.stderr


@check
def cors_preflight_allows_the_openai_sdk_headers():
    with Server("--cors") as srv:
        want = ("authorization,content-type,x-stainless-os,x-stainless-lang,"
                "x-stainless-package-version,x-stainless-retry-count,x-stainless-timeout")
        st, h, _ = request(srv.port, "OPTIONS", "/v1/chat/completions",
                           headers={"Origin": "https://app.example",
                                    "Access-Control-Request-Method": "POST",
                                    "Access-Control-Request-Headers": want})
        eq(st, 204, "preflight")
        got = h.get("access-control-allow-headers", "").lower()
        for name in want.split(","):
            assert name in got, "%s not allowed: %s" % (name, got)
        st, h, _ = jrequest(srv.port, "/v1/completions", {"prompt": "x", "max_tokens": 1},
                            {"Origin": "https://app.example"})
        eq((st, h.get("access-control-allow-origin")), (200, "*"), "cross-origin request")


# ---- tenants and logs ----

@check
def one_tenant_cannot_observe_another_tenants_cache():
    secret = ("The launch code of project blue is seven one four two and the vault opens at "
              "midnight on the third day of the month of the red moon when the bell rings")
    with Server("--api-key", "victim", "--api-key", "attacker") as srv:
        def cached(key, prompt, salt=None):
            body = {"prompt": prompt, "max_tokens": 1}
            if salt:
                body["cache_salt"] = salt
            st, _, j = jrequest(srv.port, "/v1/completions", body,
                                {"Authorization": "Bearer " + key})
            eq(st, 200, "completion")
            return j["usage"]["prompt_tokens_details"]["cached_tokens"]
        cached("victim", secret)
        right = cached("attacker", secret)  # the attacker's first request: its cache is empty
        again = cached("victim", secret)
        print("    the attacker's right guess: %d cached tokens; the victim again: %d"
              % (right, again))
        eq(right, 0, "cached tokens of the attacker's right guess")
        assert again > 16, "the victim lost its own prefix cache (%d)" % again
        # cache_salt splits one key into tenants too
        cached("victim", secret + " x", salt="alice")
        eq(cached("victim", secret + " x", salt="bob"), 0, "another cache_salt")
        assert cached("victim", secret + " x", salt="alice") > 16, "same cache_salt"


@check
def client_strings_cannot_forge_log_lines():
    with Server() as srv:
        forged = "a\nhetserve: info: req=999 127.0.0.1 POST /v1/completions -> 200 FORGED"
        st, _, _ = jrequest(srv.port, "/v1/completions",
                            {"prompt": "x", "max_tokens": 1, "user": forged})
        eq(st, 200, "completion with a forged user")
        request(srv.port, "GET", "/x%0Ahetserve:%20info:%20req=998%20FORGED")
        time.sleep(0.2)
        lines = srv.log().splitlines()
        bad = [l for l in lines if "FORGED" in l and not l.startswith("hetserve: info: req=")]
        bad += [l for l in lines if re.match(r"hetserve: info: req=99[89] ", l)]
        assert not bad, "forged log lines: %r" % bad
        assert any("\\x0a" in l and "FORGED" in l for l in lines), "the user is not logged"


# ---- shutdown and status codes ----

def long_request(port, stream, out, key, max_tokens=3500):
    body = {"prompt": "Once", "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    try:
        # generous: under sanitizers on a loaded 2-core machine 1500 tokens took over 60 s
        st, h, b = request(port, "POST", "/v1/completions", body, timeout=300)
        out[key] = (st, b.decode(errors="replace"))
    except OSError as e:
        out[key] = (-1, str(e))


def wait_running(port, n, seconds=10):
    t0 = time.time()
    while time.time() - t0 < seconds:
        if (metric(port, "num_requests_running") or 0) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("requests did not start")


def stream_error(text):
    events = [l[6:] for l in text.splitlines() if l.startswith("data: ")]
    assert events and events[-1] == "[DONE]", "stream did not end with [DONE]: %s" % text[-200:]
    errs = [json.loads(e)["error"] for e in events[:-1] if '"error"' in e[:10]]
    return errs[0] if errs else None


@check
def drained_and_timed_out_requests_get_errors_not_200():
    out = {}
    with Server("--drain-timeout", "0.5", ctx=4096) as srv:
        ts = [threading.Thread(target=long_request, args=(srv.port, s, out, s))
              for s in (False, True)]
        for t in ts:
            t.start()
        wait_running(srv.port, 2)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        for t in ts:
            t.join(30)
        eq(srv.proc.wait(30), 0, "exit status after the drain")
        print("    SIGTERM with two requests in flight, --drain-timeout 0.5: exited in %.1f s"
              % (time.time() - t0))
    eq(out[False][0], 503, "non-streamed request cut by the drain")
    eq(out[True][0], 200, "stream status")
    err = stream_error(out[True][1])
    assert err and err["type"] == "service_unavailable_error", err
    out = {}
    with Server("--timeout", "0.5", ctx=4096) as srv:
        ts = [threading.Thread(target=long_request, args=(srv.port, s, out, s))
              for s in (False, True)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    eq(out[False][0], 504, "non-streamed request past its timeout")
    err = stream_error(out[True][1])
    assert err and err["code"] == "timeout", err


@check
def half_closed_client_still_gets_its_answer():
    """A client that shuts down its sending side after the request (shutdown(SHUT_WR), as
    netcat -N and some proxies do) is still reading: it must get the whole response."""
    with Server(ctx=4096) as srv:
        for stream in (False, True):
            body = json.dumps({"prompt": "Once", "max_tokens": 200, "ignore_eos": True,
                               "stream": stream}).encode()
            s = connect(srv.port, timeout=60)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            s.shutdown(socket.SHUT_WR)
            st, _, b = read_response(s)
            s.close()
            eq(st, 200, "status after a half-close (stream=%s)" % stream)
            text = b.decode(errors="replace")
            if stream:
                assert "[DONE]" in text and '"finish_reason":"length"' in text, text[-300:]
            else:
                j = json.loads(text)
                eq(j["choices"][0]["finish_reason"], "length", "finish reason")
                eq(j["usage"]["completion_tokens"], 200, "completion tokens")
        _, _, m = request(srv.port, "GET", "/metrics")
        m = re.search(r'^hetserve:request_success_total\{finished_reason="canceled"[^}]*\} (\S+)$',
                      m.decode(), re.M)
        eq(float(m.group(1)) if m else 0.0, 0.0, "requests canceled")


@check
def max_queue_bounds_the_waiting_requests():
    """--max-queue 1 with one sequence: one request runs, one waits, the next gets 429 with
    Retry-After and OpenAI's rate_limit_error."""
    out = {}
    with Server("--parallel", "1", "--max-queue", "1", ctx=32768) as srv:
        ts = [threading.Thread(target=long_request, args=(srv.port, True, out, i, 30000))
              for i in range(2)]
        # one at a time: sent together, the second can find the first still in the queue (not
        # yet admitted by the engine thread) and be refused itself
        ts[0].start()
        wait_running(srv.port, 1, 30)
        ts[1].start()
        t0 = time.time()
        while (metric(srv.port, "num_requests_waiting") or 0) < 1 and time.time() - t0 < 30:
            time.sleep(0.05)
        eq(metric(srv.port, "num_requests_waiting"), 1, "requests waiting before the probe (%r)"
           % out)
        try:
            st, h, b = request(srv.port, "POST", "/v1/completions",
                               {"prompt": "Once", "max_tokens": 2}, timeout=10)
        except TimeoutError:
            raise AssertionError("a request past --max-queue was queued, not refused (waiting: "
                                 "%s)" % metric(srv.port, "num_requests_waiting"))
        eq(st, 429, "status with the queue full")
        assert "retry-after" in h, h
        eq(json.loads(b)["error"]["type"], "rate_limit_error", "error type")
        srv.proc.send_signal(signal.SIGTERM)  # a drain, then a second signal: exit now
        time.sleep(0.2)
        srv.stop()
        for t in ts:
            t.join(30)


@check
def cancellations_are_counted_by_phase():
    """A client that hangs up while its request waits for a sequence is counted in
    requests_cancelled_total{phase="queue"}, one that hangs up while tokens stream in
    phase="decode"; the KV blocks come back."""
    def cancelled(port):
        _, _, b = request(port, "GET", "/metrics")
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^hetserve:requests_cancelled_total\{phase="(\w+)"[^}]*\} (\S+)$', b.decode(), re.M)}
    with Server("--parallel", "1", ctx=32768) as srv:
        eq(cancelled(srv.port), {"queue": 0, "prefill": 0, "decode": 0}, "counters at start")
        socks = []
        for stream in (True, False):
            body = json.dumps({"prompt": "Once", "max_tokens": 30000, "ignore_eos": True,
                               "stream": stream}).encode()
            s = connect(srv.port)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            socks.append(s)
            if stream:
                wait_running(srv.port, 1)
        t0 = time.time()
        while (metric(srv.port, "num_requests_waiting") or 0) < 1 and time.time() - t0 < 10:
            time.sleep(0.02)
        socks[1].close()  # waiting in the queue (SO_LINGER 0: a reset)
        t0 = time.time()
        while cancelled(srv.port)["queue"] < 1 and time.time() - t0 < 10:
            time.sleep(0.02)
        socks[0].close()  # streaming
        t0 = time.time()
        while cancelled(srv.port)["decode"] < 1 and time.time() - t0 < 10:
            time.sleep(0.02)
        eq(cancelled(srv.port), {"queue": 1, "prefill": 0, "decode": 1}, "counters")
        t0 = time.time()
        while metric(srv.port, "kv_blocks_used") != 0 and time.time() - t0 < 10:
            time.sleep(0.02)
        eq(metric(srv.port, "kv_blocks_used"), 0, "KV blocks in use after the cancellations")


# ---- admission: per-key limits, loading ----

def write_keys(text):
    path = "/tmp/hetserve-hostile-keys-%d" % os.getpid()
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


@check
def per_key_rate_limits_and_key_files():
    """--api-key-file: a key over its requests per minute gets 429 with Retry-After and OpenAI's
    x-ratelimit-* headers, before its body is read; other keys are served; a wrong key gets 401;
    a malformed file stops the start naming the line."""
    path = write_keys("# tenants\nlimited rpm=3 tpm=100000\nother\n")
    try:
        with Server("--api-key-file", path, "--api-key", "flag") as srv:
            c = "/v1/completions"
            body = {"prompt": "Once", "max_tokens": 2}
            for i in range(3):
                st, h, j = jrequest(srv.port, c, body, {"Authorization": "Bearer limited"})
                eq(st, 200, "request %d within the limit" % i)
                eq(h.get("x-ratelimit-remaining-requests"), str(2 - i), "remaining requests")
            # the 4th: refused when its headers arrive, the 4 MiB body is never read
            s = connect(srv.port)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                      b"Bearer limited\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 4194304\r\n\r\n")
            st, h, b = read_response(s)
            s.close()
            eq(st, 429, "a request over 3 per minute")
            j = json.loads(b)
            eq((j["error"]["type"], j["error"]["code"]), ("rate_limit_error",
                                                           "rate_limit_exceeded"), "error")
            assert 19 <= int(h.get("retry-after", "0")) <= 20, h
            for k in ("limit-requests", "remaining-requests", "reset-requests", "limit-tokens",
                      "remaining-tokens", "reset-tokens"):
                assert "x-ratelimit-" + k in h, "x-ratelimit-%s missing: %s" % (k, h)
            eq((h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]),
               ("3", "0"), "request headers")
            eq(h.get("connection", "").lower(), "close", "Connection after an unread body")
            for key in ("other", "flag"):
                st, h, _ = jrequest(srv.port, c, body, {"Authorization": "Bearer " + key})
                eq(st, 200, "key %s while another is limited" % key)
                assert "x-ratelimit-limit-requests" not in h, h
            # a file key is a tenant of its own in the prefix cache
            secret = {"prompt": "The vault opens at midnight on the third day of the month of the "
                                "red moon when the bell rings twice", "max_tokens": 1}

            def cached(key):
                st, _, j = jrequest(srv.port, c, secret, {"Authorization": "Bearer " + key})
                eq(st, 200, "completion for %s" % key)
                return j["usage"]["prompt_tokens_details"]["cached_tokens"]
            cached("other")
            eq(cached("flag"), 0, "cached tokens of another key's prompt")
            assert cached("other") > 16, "a file key lost its own prefix cache"
            eq(jrequest(srv.port, c, body, {"Authorization": "Bearer limite"})[0], 401,
               "a prefix of a key")
            eq(jrequest(srv.port, c, body, {"Authorization": "Bearer limitedX"})[0], 401,
               "a key with a byte more")
        for text, want in [("ok rpm=5\nbad rpm=five\n", ":2: rpm must be"),
                           ("a\nb burst=1\n", ":2: field 2 is not rpm=N or tpm=N"),
                           ("dup\ndup\n", ":2: an API key is given twice (first on line 1)"),
                           ("# nothing\n", ": no keys")]:
            write_keys(text)
            r = subprocess.run([BIN, "serve", "-m", MODEL, "--port", "0", "--api-key-file", path],
                               capture_output=True, timeout=30)
            eq(r.returncode, 2, "exit status for %r" % text)
            assert (path + want).encode() in r.stderr, r.stderr
            assert b"bad" not in r.stderr, "a key quoted in an error: %s" % r.stderr
        r = subprocess.run([BIN, "serve", "-m", MODEL, "--port", "0", "--api-key-file",
                            path + ".missing"], capture_output=True, timeout=30)
        assert r.returncode != 0 and b".missing" in r.stderr, r.stderr
    finally:
        os.unlink(path)


@check
def server_answers_503_while_the_model_loads():
    """HETSERVE_TEST_LOAD_DELAY_MS (tests only) holds the load: meanwhile /health is 503
    {"status":"loading"} and completions 503 with OpenAI's error body; then both are served. A
    SIGTERM while loading exits at once."""
    for phase in ("serve", "sigterm"):
        e = dict(os.environ)
        e["HETSERVE_TEST_LOAD_DELAY_MS"] = "4000"
        e.pop("HETSERVE_API_KEY", None)
        logf = open("/tmp/hetserve-hostile-load-%d.log" % os.getpid(), "w+b")
        t0 = time.time()
        proc = subprocess.Popen([BIN, "serve", "-m", MODEL, "--port", "0", "-c", "512", "-t",
                                 "1"], stdout=subprocess.PIPE, stderr=logf, env=e)
        try:
            port = None
            while port is None and time.time() - t0 < 10:
                logf.seek(0)
                m = re.search(rb"http://127\.0\.0\.1:(\d+) answers 503", logf.read())
                port = int(m.group(1)) if m else time.sleep(0.02)
            assert port, "no loading line"
            st, h, b = request(port, "GET", "/health")
            eq((st, json.loads(b)), (503, {"status": "loading"}), "/health while loading")
            assert "retry-after" in h, h
            st, h, j = jrequest(port, "/v1/chat/completions",
                                {"messages": [{"role": "user", "content": "hi"}]})
            eq((st, j["error"]["code"], j["error"]["type"]),
               (503, "model_loading", "service_unavailable_error"), "a chat while loading")
            eq(request(port, "GET", "/metrics")[0], 503, "/metrics while loading")
            if phase == "sigterm":
                t1 = time.time()
                proc.send_signal(signal.SIGTERM)
                eq(proc.wait(5), 0, "exit status of a SIGTERM while loading")
                print("    SIGTERM while loading: exited in %.2f s" % (time.time() - t1))
                continue
            line = proc.stdout.readline().decode()
            assert "listening on" in line, line
            print("    503 while loading for %.1f s, then served" % (time.time() - t0))
            eq(request(port, "GET", "/health")[0], 200, "/health once loaded")
            eq(jrequest(port, "/v1/completions", {"prompt": "Once", "max_tokens": 2})[0], 200,
               "a completion once loaded")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            logf.close()
            os.unlink(logf.name)


@check
def shutdown_is_prompt():
    with Server() as srv:
        s = connect(srv.port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        eq(read_response(s)[0], 200, "keep-alive request")
        t0 = time.time()
        eq(srv.stop(), 0, "exit status")
        took = time.time() - t0
        assert took < 2, "shutdown with an idle keep-alive connection took %.1f s" % took
        s.close()
        print("    SIGTERM with an idle keep-alive connection: %.2f s" % took)
    out = {}
    with Server("--drain-timeout", "60", ctx=4096) as srv:
        t = threading.Thread(target=long_request, args=(srv.port, True, out, 0))
        t.start()
        wait_running(srv.port, 1)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert srv.proc.poll() is None, "the first SIGTERM must drain, not exit"
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(2)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second SIGTERM did not exit at once")
        print("    a second SIGTERM exited in %.2f s" % (time.time() - t0))
        t.join(10)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    failed = 0
    t_all = time.time()
    for fn in CHECKS:
        if ONLY and fn.__name__ not in ONLY:
            continue
        t0 = time.time()
        try:
            fn()
            print("ok   %s (%.1f s)" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, go on with the rest
            failed += 1
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)
    print("%d checks, %d failed, %.0f s" % (len(CHECKS), failed, time.time() - t_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
