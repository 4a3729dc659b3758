#!/usr/bin/env python3
"""Checks JSON Schema -> GBNF with python3-jsonschema (Debian's package; scripts/dev.sh installs
it), an independent validator.

  check-schema-walk.py CORPUS --write-with EXE

runs `EXE CORPUS OUT.jsonl` (tests/api/schema-walk.c: random sentences of each schema's grammar)
in a temporary directory; every sentence must be JSON that validates against its schema (with
the draft's format checker). Also checks the corpus itself: each "valid_text" validates and each
"invalid_text" does not, so the grammar tests in test-json-schema.c rest on honest cases.

Exit status (meson's convention): 0 all good, 1 a failure, 99 could not check (no jsonschema,
unreadable files, a bug in this script).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ERROR = 99

try:
    import jsonschema
except ImportError:
    print("check-schema-walk: python module jsonschema missing: install python3-jsonschema "
          "(scripts/dev.sh deps)", file=sys.stderr)
    sys.exit(ERROR)


def strict_object(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def loads(text):
    return json.loads(text, object_pairs_hook=strict_object)


def validator(schema):
    if isinstance(schema, dict) and schema.get("type") == "json_object":
        schema = dict(schema, type="object")  # our pseudo type for response_format json_object
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--write-with", required=True)
    ap.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
    try:
        with open(a.corpus, encoding="utf-8") as f:
            cases = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check-schema-walk: {a.corpus}: {e}", file=sys.stderr)
        return ERROR
    validators = {}
    bad = 0
    for c in cases:
        v = validators[c["name"]] = validator(c["schema"])
        for t in c.get("valid_text", []):
            errs = list(v.iter_errors(loads(t)))
            if errs:
                print(f"corpus {c['name']}: valid_text {t} fails: {errs[0].message}")
                bad += 1
        for t in c.get("invalid_text", []):
            try:
                inst = loads(t)
            except ValueError:
                continue
            if v.is_valid(inst):
                print(f"corpus {c['name']}: invalid_text {t} validates")
                bad += 1
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "walk.jsonl")
        r = subprocess.run([a.write_with, a.corpus, out, str(a.count)])
        if r.returncode != 0:
            print(f"check-schema-walk: {a.write_with} exited {r.returncode}")
            return 1
        n = {}
        with open(out, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                name, text = rec["case"], rec["text"]
                n[name] = n.get(name, 0) + 1
                try:  # duplicate names can come from additionalProperties (JSON allows them)
                    inst = json.loads(text)
                except ValueError as e:
                    print(f"{name}: not JSON ({e}): {text!r}")
                    bad += 1
                    continue
                errs = list(validators[name].iter_errors(inst))
                if errs:
                    print(f"{name}: {text!r} does not validate: {errs[0].message}")
                    bad += 1
    for c in cases:
        if n.get(c["name"], 0) < a.count // 2:
            print(f"{c['name']}: only {n.get(c['name'], 0)} sentences of {a.count}")
            bad += 1
    total = sum(n.values())
    print(f"check-schema-walk: {total} sentences from {len(cases)} schemas, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a bug here must never pass
        print(f"check-schema-walk: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(ERROR)
