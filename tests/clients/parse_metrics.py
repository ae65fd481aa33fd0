"""Parses Prometheus exposition text with the reference Python client's parser and prints, as JSON, each family's
type and samples. Used by tests/metrics.rs: python parse_metrics.py FILE."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    families[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(families))
