#!/usr/bin/env python3
"""Runs the README's walkthrough as written and checks what every command prints.

The walkthrough is the part of README.md between the lines `<!-- readme-run: begin -->` and
`<!-- readme-run: end -->`. Every ```sh block there runs, in order, in one bash session (so a
variable set by one block, such as a tenant id, is there for the next), with `set -o pipefail`,
and `localhost:50051` replaced by --target. A fenced block whose info string ends in `output`
(```json output, ```text output) right after a ```sh block is what that block must print
(stdout and stderr together); a ```sh block with no output block must print nothing.

Output is compared item by item: a JSON value (a line starting with `{` or `[`, up to where
the value ends) against a JSON value, structurally (key order does not matter); any other
line against a line, with runs of whitespace counted as one space. In both, `…` stands for
anything (a JSON string "…" for any value), which is how ids, times and secrets are written.
A block's commands must all succeed unless its output shows a grpcurl `ERROR:`; then one of
them must fail.

Usage: readme-run.py --target 127.0.0.1:PORT [--readme README.md]
(scripts/readme-run.sh starts the server and puts grpcurl on PATH), or
readme-run.py --self-test, which checks only the comparison, on known cases.
Exits 0 only if every block passed; prints one line per block and `N passed, N failed`.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BEGIN = "<!-- readme-run: begin -->"
END = "<!-- readme-run: end -->"
# Between these two lines (inside the walkthrough) blocks are shown, not run: ones that need
# what the live server does not have (TLS certificates) or never end (a watch stream).
PAUSE = "<!-- readme-run: pause -->"
RESUME = "<!-- readme-run: resume -->"
ADDRESS = "localhost:50051"
ANY = "…"
SESSION_TIMEOUT_SECONDS = 300


@dataclass
class Block:
    """One ```sh block of the walkthrough and the output it must print."""

    line: int
    script: str
    expected: str = ""
    expected_line: int | None = None


def walkthrough_blocks(readme: str) -> list[Block]:
    """The ```sh blocks between the markers, each with its output block (if any)."""
    lines = readme.splitlines()
    try:
        begin = lines.index(BEGIN)
        end = lines.index(END)
    except ValueError:
        sys.exit(f"readme-run: the README must contain the lines {BEGIN!r} and {END!r}")
    if end < begin:
        sys.exit(f"readme-run: {END!r} comes before {BEGIN!r}")

    blocks: list[Block] = []
    previous_was_sh = False
    index = begin + 1
    while index < end:
        line = lines[index]
        if line == PAUSE:
            try:
                index = lines.index(RESUME, index) + 1
            except ValueError:
                sys.exit(f"readme-run: line {index + 1}: {PAUSE!r} without {RESUME!r}")
            if index > end:
                sys.exit(f"readme-run: line {index}: {RESUME!r} after {END!r}")
            previous_was_sh = False
            continue
        if not line.startswith("```"):
            if line.strip():
                previous_was_sh = False
            index += 1
            continue
        info = line[3:].strip().split()
        start = index + 1
        index = start
        while index < end and lines[index] != "```":
            index += 1
        if index >= end:
            sys.exit(f"readme-run: line {start}: the block is not closed before {END!r}")
        body = "\n".join(lines[start:index]) + "\n"
        index += 1
        if info[:1] == ["sh"]:
            blocks.append(Block(line=start, script=body))
            previous_was_sh = True
        elif info[-1:] == ["output"]:
            if not previous_was_sh:
                sys.exit(f"readme-run: line {start}: an output block must follow a ```sh block")
            blocks[-1].expected, blocks[-1].expected_line = body, start
            previous_was_sh = False
        else:
            previous_was_sh = False
    if not blocks:
        sys.exit("readme-run: no ```sh block between the markers")
    return blocks


def session_script(blocks: list[Block], target: str, outputs: Path, name: str) -> str:
    """One bash script that runs every block, each block's output and status in its own files."""
    parts = [
        "set -o pipefail",
        # Counts failing commands of the current block (commands inside $(...) count through the
        # assignment that uses them).
        "trap '__readme_failed=$((__readme_failed + 1))' ERR",
        "exec 3>&1 4>&2",
    ]
    for number, block in enumerate(blocks, start=1):
        out = outputs / f"{number}.out"
        parts += [
            f"echo 'readme-run: running block {number} ({name}:{block.line})' >&4",
            "__readme_failed=0",
            f"exec >'{out}' 2>&1",
            block.script.replace(ADDRESS, target),
            "exec 1>&3 2>&4",
            f"echo \"$__readme_failed\" >'{outputs / f'{number}.failed'}'",
        ]
    return "\n".join(parts) + "\n"


# Comparing output -------------------------------------------------------------------------


def items(text: str) -> list[tuple[str, object]]:
    """The output as a list of ("json", value) and ("text", line with whitespace collapsed)."""
    decoder = json.JSONDecoder()
    found: list[tuple[str, object]] = []
    rest = text
    while True:
        rest = rest.lstrip()
        if not rest:
            return found
        if rest[0] in "{[":
            try:
                value, end = decoder.raw_decode(rest)
            except json.JSONDecodeError:
                pass
            else:
                found.append(("json", value))
                rest = rest[end:]
                continue
        line, _, rest = rest.partition("\n")
        found.append(("text", " ".join(line.split())))


def matches_text(expected: str, actual: str) -> bool:
    if ANY not in expected:
        return expected == actual
    pattern = ".*".join(re.escape(piece) for piece in expected.split(ANY))
    return re.fullmatch(pattern, actual, flags=re.DOTALL) is not None


def matches_json(expected: object, actual: object) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, str):
        return isinstance(actual, str) and matches_text(expected, actual)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches_json(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches_json(one, other) for one, other in zip(expected, actual))
        )
    return type(expected) is type(actual) and expected == actual


def mismatch(expected: str, actual: str) -> str | None:
    """Why `actual` does not match `expected`, or None if it does."""
    wanted, got = items(expected), items(actual)
    for position, (want, have) in enumerate(zip(wanted, got), start=1):
        kind_matches = want[0] == have[0]
        if not kind_matches or not (matches_json if want[0] == "json" else matches_text)(want[1], have[1]):
            return f"item {position} differs: expected {render(want)}, got {render(have)}"
    if len(wanted) != len(got):
        return f"expected {len(wanted)} item(s) of output, got {len(got)}"
    return None


def render(item: tuple[str, object]) -> str:
    kind, value = item
    return json.dumps(value, ensure_ascii=False) if kind == "json" else repr(value)


def shows_error(expected: str) -> bool:
    return any(line.strip() == "ERROR:" for line in expected.splitlines())


def indent(text: str) -> str:
    return "".join(f"    | {line}\n" for line in text.rstrip("\n").splitlines()) or "    | (nothing)\n"


# (expected, actual, whether they match): what the comparison must accept and refuse.
SELF_TEST_CASES = [
    ('{"id": "…", "state": "ACTIVE"}', '{\n  "state": "ACTIVE",\n  "id": "01a2"\n}', True),
    ('{"id": "…", "state": "ACTIVE"}', '{"id": "01a2", "state": "SUSPENDED"}', False),
    ('{"id": "…"}', '{"id": "01a2", "lastUsedTime": "2026-12-02T03:42:29Z"}', False),
    ('{"secret": "tdk_…"}', '{"secret": "tdk_0357U"}', True),
    ('{"secret": "tdk_…"}', '{"secret": "x_0357U"}', False),
    ('{"value": true}', '{"value": 1}', False),
    ('["a", "b"]', '["b", "a"]', False),
    ("ERROR:\n  Code: NotFound\n  1)  {\"reason\":\"X\"}", "ERROR:\n  Code: NotFound\n  1)\t{\"reason\":\"X\"}", True),
    ("ERROR:\n  Code: NotFound", "ERROR:\n  Code: NotFound\n  Message: more", False),
    ("ACTIVE\nacme", "ACTIVE\n", False),
    ("", "", True),
    ("", "bash: uuidgen: command not found", False),
]


def self_test() -> int:
    """Checks the comparison on SELF_TEST_CASES; 0 if all behave."""
    wrong = [case for case in SELF_TEST_CASES if (mismatch(case[0], case[1]) is None) != case[2]]
    for expected, actual, should_match in wrong:
        print(f"readme-run: self-test: {expected!r} against {actual!r} should {'' if should_match else 'not '}match")
    print(f"readme-run: self-test: {len(SELF_TEST_CASES) - len(wrong)} of {len(SELF_TEST_CASES)} comparisons as expected")
    return 1 if wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="host:port of the tenantd to call (plaintext)")
    parser.add_argument("--readme", default="README.md", type=Path)
    parser.add_argument("--self-test", action="store_true", help="only check the output comparison, with no server")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.target:
        parser.error("--target is required (unless --self-test)")

    blocks = walkthrough_blocks(args.readme.read_text(encoding="utf-8"))
    print(f"readme-run: {len(blocks)} shell blocks in {args.readme}, against {args.target}", flush=True)
    with tempfile.TemporaryDirectory(prefix="readme-run-") as directory:
        outputs = Path(directory)
        script = outputs / "session.sh"
        script.write_text(session_script(blocks, args.target, outputs, args.readme.name), encoding="utf-8")
        try:
            subprocess.run(
                ["bash", str(script)],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                timeout=SESSION_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"readme-run: the session did not finish within {SESSION_TIMEOUT_SECONDS} s", flush=True)

        passed = 0
        for number, block in enumerate(blocks, start=1):
            out, failed = outputs / f"{number}.out", outputs / f"{number}.failed"
            where = f"block {number} ({args.readme.name}:{block.line})"
            if not failed.exists():
                print(f"[FAIL] {where}: did not run to its end")
                continue
            actual = out.read_text(encoding="utf-8", errors="replace")
            failures = int(failed.read_text().strip() or "0")
            problems = []
            if shows_error(block.expected) and failures == 0:
                problems.append("its output shows an ERROR, but every command succeeded")
            if not shows_error(block.expected) and failures:
                problems.append(f"{failures} command(s) failed")
            why = mismatch(block.expected, actual)
            if why:
                problems.append(why)
            if problems:
                print(f"[FAIL] {where}: " + "; ".join(problems))
                print("  the block:\n" + indent(block.script), end="")
                print("  expected output" + (f" ({args.readme.name}:{block.expected_line})" if block.expected_line else "") + ":")
                print(indent(block.expected) + "  actual output:\n" + indent(actual), end="")
            else:
                passed += 1
                print(f"[ok] {where}")
    failed_count = len(blocks) - passed
    print(f"readme-run: {passed} passed, {failed_count} failed")
    return 0 if failed_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
