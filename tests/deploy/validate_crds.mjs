// Validates Prometheus Operator objects (a JSON list on stdin) against the operator's own API schemas,
// as packaged by @kubernetes-models/prometheus-operator; prints one verdict per object, exits 1 if any fails.
// Run from the directory that holds its node_modules (tests/deploy/test_kubernetes.py copies it there).
import { readFileSync } from "node:fs";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = { PodMonitor, PrometheusRule };
let failed = 0;
for (const object of JSON.parse(readFileSync(0, "utf8"))) {
  try {
    new kinds[object.kind](object).validate();
    console.log(`valid ${object.kind} ${object.metadata.name}`);
  } catch (error) {
    failed += 1;
    console.log(`invalid ${object.kind} ${object.metadata.name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
