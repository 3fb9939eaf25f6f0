#!/usr/bin/env python3
"""Drive the real Helm engine (Helm v4's Go SDK, through PyPI's helm-python-sdk)
for the Phalanx chart: render, lint, check values against the schema, install,
upgrade and uninstall. The Rust tests (tests/src/helm.rs) call this; people can
too:

    python deploy/helm/tools/helmctl.py render --values my-values.yaml
    python deploy/helm/tools/helmctl.py lint --values deploy/helm/phalanx/ci/fake-backend.yaml
    python deploy/helm/tools/helmctl.py install --kubeconfig KC --namespace phalanx --release phalanx

Values files are YAML (or JSON). Results are JSON on stdout; failures are one
line on stderr starting with "error:" and exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import helm_python as helm

CHART = Path(__file__).resolve().parent.parent / "phalanx"


def load_values(paths: list[str]) -> dict[str, Any]:
    """Merges the values files in order (later keys win), as `helm -f` does."""
    merged: dict[str, Any] = {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        values = helm.values_from_yaml(text) if text.strip() else {}
        merged = deep_merge(merged, values)
    return merged


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def cmd_render(args: argparse.Namespace) -> Any:
    values = load_values(args.values)
    with helm.Chart.load(str(args.chart)) as chart:
        # What `helm template` does: the schema first, then the templates.
        chart.validate_schema(values)
        return chart.render(
            values, name=args.release, namespace=args.namespace, is_install=True
        )


def cmd_lint(args: argparse.Namespace) -> Any:
    values = load_values(args.values)
    report = helm.lint(
        str(args.chart),
        values,
        strict=args.strict,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )
    if report.get("errors") or any(
        m.get("severity", 0) >= (2 if args.strict else 3) for m in report.get("messages", [])
    ):
        raise helm.HelmError(f"lint failed: {json.dumps(report)}")
    return report


def cmd_validate_values(args: argparse.Namespace) -> Any:
    values = load_values(args.values)
    with helm.Chart.load(str(args.chart)) as chart:
        chart.validate_schema(values)
    return {"valid": True}


def config_for(args: argparse.Namespace) -> helm.Config:
    return helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)


def cmd_install(args: argparse.Namespace) -> Any:
    values = load_values(args.values)
    with config_for(args) as cfg:
        return cfg.install(
            str(args.chart),
            args.release,
            values,
            namespace=args.namespace,
            create_namespace=True,
            timeout=args.timeout,
        )


def cmd_upgrade(args: argparse.Namespace) -> Any:
    values = load_values(args.values)
    with config_for(args) as cfg:
        return cfg.upgrade(
            str(args.chart), args.release, values, namespace=args.namespace, timeout=args.timeout
        )


def cmd_uninstall(args: argparse.Namespace) -> Any:
    with config_for(args) as cfg:
        return cfg.uninstall(args.release, timeout=args.timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "render": cmd_render,
        "lint": cmd_lint,
        "validate-values": cmd_validate_values,
        "install": cmd_install,
        "upgrade": cmd_upgrade,
        "uninstall": cmd_uninstall,
    }
    for name in commands:
        p = sub.add_parser(name)
        p.add_argument("--chart", type=Path, default=CHART)
        p.add_argument("--values", action="append", default=[], help="YAML/JSON values file")
        p.add_argument("--release", default="phalanx")
        p.add_argument("--namespace", default="phalanx-system")
        p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
        p.add_argument("--timeout", type=int, default=120)
        p.add_argument("--strict", action="store_true", help="lint: warnings are errors")
        p.add_argument("--kube-version", default="v1.33.0", help="lint: the cluster version")
    args = parser.parse_args()
    try:
        result = commands[args.command](args)
    except (helm.HelmError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
