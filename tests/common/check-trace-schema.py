#!/usr/bin/env python3
"""Validates Chrome trace-event files against tests/common/trace-event.schema.json (Draft 7) with
python3-jsonschema (Debian's package; scripts/dev.sh installs it).

  check-trace-schema.py SCHEMA TRACE.json              the file must conform
  check-trace-schema.py SCHEMA --write-with EXE         runs `EXE OUT.json` in a temporary
                                                        directory, then checks OUT.json
  check-trace-schema.py SCHEMA --bad-cases CASES.json   every case must be rejected, with an
                                                        error containing its "expect" text
  --require-ph XMC                                      also require at least one event of each
                                                        of these phases (a `[]` would pass)

Exit status (meson's convention): 0 conforms, 1 does not conform, 99 could not check (no
jsonschema, usage error, unreadable file, not JSON, bad schema, a bug in this script), which
meson reports as an ERROR even for a should_fail test, so a broken checker never passes for a
rejected trace.
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
    print("check-trace-schema: python module jsonschema missing: install python3-jsonschema "
          "(scripts/dev.sh deps)", file=sys.stderr)
    sys.exit(ERROR)


def strict_object(pairs):
    """Rejects what Python's json module lets through: duplicate keys."""
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=strict_object, parse_constant=reject_constant)
    except (OSError, ValueError) as e:
        print(f"check-trace-schema: cannot read {what} {path}: {e}", file=sys.stderr)
        sys.exit(ERROR)


def flatten(errors):
    """Errors with the sub-errors of anyOf/oneOf (their context), depth first."""
    for e in errors:
        yield e
        yield from flatten(e.context or [])


def where(e):
    return "/".join(str(p) for p in e.absolute_path) or "(root)"


def check(validator, doc, label, require_ph):
    errors = list(flatten(validator.iter_errors(doc)))
    for e in errors[:20]:
        print(f"{label}: {where(e)}: {e.message}")
    if len(errors) > 20:
        print(f"{label}: ... {len(errors) - 20} more")
    if errors:
        return 1
    events = doc if isinstance(doc, list) else doc.get("traceEvents", [])
    counts = {}
    for ev in events:
        counts[ev["ph"]] = counts.get(ev["ph"], 0) + 1
    missing = [ph for ph in require_ph if not counts.get(ph)]
    if missing:
        print(f"{label}: no events with ph {' '.join(missing)} (counts {counts})")
        return 1
    print(f"{label}: conforms ({len(events)} events: "
          + ", ".join(f"{n} {ph}" for ph, n in sorted(counts.items())) + ")")
    return 0


def bad_cases(validator, path):
    cases = load_json(path, "cases")
    failed = 0
    for i, case in enumerate(cases):
        errors = list(flatten(validator.iter_errors(case["trace"])))
        # "expect": a text, or a list of texts where jsonschema versions word it differently.
        expect = case["expect"] if isinstance(case["expect"], list) else [case["expect"]]
        hit = [e for e in errors if any(x in e.message for x in expect)]
        if hit:
            print(f"case {i} ({case['why']}): rejected: {where(hit[0])}: {hit[0].message}")
        else:
            failed = 1
            got = "; ".join(e.message for e in errors) or "no errors: accepted"
            print(f"case {i} ({case['why']}): expected an error containing "
                  f"{case['expect']!r}, got: {got}")
    if not cases:
        print("no cases")
        return ERROR
    return failed


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # A usage error must not read as "rejected" to a should_fail test.
        self.print_usage(sys.stderr)
        print(f"check-trace-schema: {message}", file=sys.stderr)
        sys.exit(ERROR)


def main():
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("schema")
    ap.add_argument("trace", nargs="?")
    ap.add_argument("--write-with", metavar="EXE")
    ap.add_argument("--bad-cases", metavar="CASES")
    ap.add_argument("--require-ph", default="", metavar="PHASES")
    args = ap.parse_intermixed_args()
    if sum(x is not None for x in (args.trace, args.write_with, args.bad_cases)) != 1:
        ap.error("give exactly one of TRACE, --write-with, --bad-cases")

    schema = load_json(args.schema, "schema")
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        print(f"check-trace-schema: {args.schema} is not a valid Draft 7 schema: {e.message}",
              file=sys.stderr)
        return ERROR
    validator = jsonschema.Draft7Validator(schema)

    if args.bad_cases:
        return bad_cases(validator, args.bad_cases)
    if args.write_with:
        with tempfile.TemporaryDirectory(prefix="hs-trace-schema-") as d:
            out = os.path.join(d, "trace.json")
            r = subprocess.run([args.write_with, out])
            if r.returncode != 0:
                print(f"check-trace-schema: {args.write_with} exited with {r.returncode}",
                      file=sys.stderr)
                return ERROR
            return check(validator, load_json(out, "trace"), out, args.require_ph)
    return check(validator, load_json(args.trace, "trace"), args.trace, args.require_ph)


if __name__ == "__main__":
    try:
        status = main()
    except Exception:  # a bug here is an ERROR, never a rejection (exit 1)
        import traceback
        traceback.print_exc()
        status = ERROR
    sys.exit(status)
