#!/usr/bin/env python3
"""Reads Prometheus text exposition on stdin with the reference parser
(prometheus-client) and prints its samples as JSON lines:
{"family": ..., "type": ..., "name": ..., "labels": {...}, "value": ...}.
A malformed exposition makes the parser raise, and this exit non-zero."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"family": family.name, "type": family.type,
                          "name": sample.name, "labels": sample.labels,
                          "value": sample.value}))
