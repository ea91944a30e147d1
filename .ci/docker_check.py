"""Requests against a running sentiment-mlops container, for .ci/docker-test.sh.

Waits for /ready, then checks /health, /docs, /model and POST /predict, and (with
--health) that Docker's HEALTHCHECK reports the container healthy. Standard library only.
Exit status 0 = all good; otherwise the reason is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

POSITIVE = "The movie was amazing: a warm, funny and beautifully acted film I would happily watch again."
NEGATIVE = "A dull, lifeless mess. The plot is stupid, the acting is terrible and it is a complete waste of time."
LEARNED = 0.7  # a model with at least this test accuracy must get POSITIVE and NEGATIVE right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--docker", default="docker")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for /ready")
    parser.add_argument("--manifest", required=True, help="registered_model.json of the exported model")
    parser.add_argument("--health", action="store_true", help="also wait for HEALTHCHECK to say healthy")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    with open(args.manifest) as f:
        manifest = json.load(f)
    accuracy = float((manifest.get("metrics") or {}).get("accuracy") or 0)

    def call(path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def state() -> list[str]:
        out = subprocess.run(
            [
                args.docker,
                "inspect",
                "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                args.container,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.split() or ["gone", "?"]

    start = time.monotonic()
    while True:
        if state()[0] != "running":
            return fail(f"the container stopped before /ready answered (state {state()[0]})")
        try:
            if call("/ready")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - start > args.timeout:
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                print("    /model:", call("/model")[1].decode()[:600])
            return fail(f"/ready did not answer 200 within {args.timeout:.0f}s")
        time.sleep(2)
    print(f"    /ready: 200 after {time.monotonic() - start:.0f}s")

    if call("/health")[0] != 200:
        return fail("/health did not answer 200")
    status, page = call("/docs")
    if status != 200 or b"swagger" not in page.lower():
        return fail(f"/docs is not the Swagger UI (status {status})")
    print("    /health: 200, /docs: 200 (Swagger UI)")

    status, body = call("/model")
    info = json.loads(body) if status == 200 else {}
    print(f"    /model: {status} {body.decode()[:300]}")
    if str(info.get("version")) != str(manifest.get("version")):
        return fail(f"/model serves version {info.get('version')!r}, the export was {manifest.get('version')!r}")

    answers = {}
    for text in (POSITIVE, NEGATIVE):
        status, body = call("/predict", {"text": text})
        print(f"    POST /predict {json.dumps({'text': text[:40] + '…'})} -> {status} {body.decode()}")
        answer = json.loads(body)
        if status != 200 or answer.get("sentiment") not in {"Positive", "Negative"}:
            return fail(f"not a sentiment: {status} {answer}")
        confidence = answer.get("confidence")
        if not isinstance(confidence, float) or not 0.0 <= confidence <= 1.0:
            return fail(f"confidence {confidence!r} is not a number in [0, 1]")
        answers[text] = answer["sentiment"]
    if accuracy >= LEARNED:
        if answers[POSITIVE] != "Positive" or answers[NEGATIVE] != "Negative":
            return fail(f"a model with test accuracy {accuracy:.3f} got the clear reviews wrong: {answers}")
        print(f"    the model (test accuracy {accuracy:.3f}) tells the positive review from the negative one")
    else:
        print(f"    test accuracy {accuracy or 'unknown'} < {LEARNED}: answers checked for validity only")

    if args.health:
        deadline = time.monotonic() + 90
        while state()[1] != "healthy":
            if time.monotonic() > deadline:
                return fail(f"HEALTHCHECK never reported healthy (now {state()[1]})")
            time.sleep(2)
        print("    HEALTHCHECK: healthy")
    return 0


def fail(message: str) -> int:
    print(f"    check failed: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
