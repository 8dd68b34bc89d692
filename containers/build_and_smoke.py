#!/usr/bin/env python3
"""Build and tag both medflow images, then smoke-test them, with the docker Python SDK.

Tags are the package version (python/pyproject.toml), the names Nextflow uses
(nextflow.config): medflow:<version> (CPU) and medflow-gpu:<version> (CUDA). Inside each
image it runs `medflow --version` and a tiny demo (a 1-subject synthetic cohort,
preprocessed), as a non-root user with a read-only root filesystem except /tmp, the way
Nextflow runs tasks.

Usage: python containers/build_and_smoke.py [--only cpu|gpu] [--no-build] [--registry R/]
Needs a Docker engine; exits 3 when none is reachable.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"cpu": ("medflow", "containers/Dockerfile"),
          "gpu": ("medflow-gpu", "containers/Dockerfile.gpu")}
DEMO = ("set -e; medflow demo-cohort --kind cardiac --subjects 1 --frames 2 --out /tmp/demo -q; "
        "medflow preprocess --input /tmp/demo/sub-000/sa.nii.gz "
        "--output /tmp/out/sub-000_sa_preproc.nii.gz --orientation RAS --normalise none; "
        "test -s /tmp/out/sub-000_sa_preproc.json")


def package_version() -> str:
    text = (ROOT / "python" / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def tags(registry: str = "") -> dict[str, str]:
    """kind -> image tag, e.g. {"cpu": "medflow:0.1.0", "gpu": "medflow-gpu:0.1.0"}."""
    version = package_version()
    return {kind: f"{registry}{name}:{version}" for kind, (name, _) in IMAGES.items()}


def engine():
    """A docker client whose engine answers, or None."""
    try:
        import docker
        client = docker.from_env()
        client.ping()
        return client
    except Exception:  # no SDK, no socket, engine down: all mean "no engine here"
        return None


def build(client, kind: str, tag: str) -> None:
    dockerfile = IMAGES[kind][1]
    print(f"building {tag} from {dockerfile}", flush=True)
    client.images.build(path=str(ROOT), dockerfile=dockerfile, tag=tag, rm=True)


def run(client, tag: str, command: list[str]) -> str:
    out = client.containers.run(tag, command, remove=True, user="12345:12345",
                                read_only=True, tmpfs={"/tmp": "rw,exec,size=1g"},
                                shm_size="1g", stdout=True, stderr=True)
    return out.decode()


def smoke(client, tag: str) -> None:
    version = run(client, tag, ["medflow", "--version"]).strip()
    if not version.endswith(package_version()):
        raise SystemExit(f"{tag}: medflow --version says {version!r}")
    run(client, tag, ["bash", "-c", DEMO])
    print(f"{tag}: {version}; demo ok", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(IMAGES))
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--registry", default="")
    args = parser.parse_args(argv)
    client = engine()
    if client is None:
        print("no Docker engine reachable; nothing built", file=sys.stderr)
        return 3
    for kind, tag in tags(args.registry).items():
        if args.only and kind != args.only:
            continue
        if not args.no_build:
            build(client, kind, tag)
        smoke(client, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
