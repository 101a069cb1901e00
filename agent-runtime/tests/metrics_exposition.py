"""Parses a /metrics body read from standard input with the Prometheus project's own parser
(prometheus_client) and prints its families as JSON; a parse error exits non-zero.

    python metrics_exposition.py prometheus|openmetrics < body
"""
import json
import math
import sys


def main() -> None:
    fmt = sys.argv[1]
    if fmt == "openmetrics":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    elif fmt == "prometheus":
        from prometheus_client.parser import text_string_to_metric_families
    else:
        sys.exit(f"unknown format {fmt!r}: expected prometheus or openmetrics")
    families = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = {
            "type": family.type,
            "samples": [
                [s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
                for s in family.samples
            ],
        }
    print(json.dumps(families))


if __name__ == "__main__":
    main()
