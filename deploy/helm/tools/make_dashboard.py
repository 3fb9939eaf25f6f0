#!/usr/bin/env python3
"""Writes the chart's Grafana dashboard (files/grafana/phalanx-dashboard.json).

The panels are listed here, one line each, so that the JSON (which Grafana
wants verbose) stays consistent: same datasource variable, grid layout, units.
Run it after changing the panel list:

    python3 deploy/helm/tools/make_dashboard.py
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "phalanx/files/grafana/phalanx-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}


def q(le_expr, quantile):
    return f"histogram_quantile({quantile}, sum by (le) (rate({le_expr}[5m])))"


# (row title, [(panel title, unit, [(expr, legend)], description)])
ROWS = [
    ("Scheduler", [
        ("Scheduling attempts", "ops",
         [("sum by (result) (rate(phalanx_scheduler_schedule_attempts_total[5m]))", "{{result}}")],
         "Attempts per second by result: scheduled, unschedulable (no node fits now), error."),
        ("Pod scheduling latency", "s",
         [(q("phalanx_scheduler_e2e_scheduling_duration_seconds_bucket", 0.5), "p50"),
          (q("phalanx_scheduler_e2e_scheduling_duration_seconds_bucket", 0.99), "p99")],
         "From a pod first seen pending to its Binding being written."),
        ("Pending pods", "short",
         [("max by (queue) (phalanx_scheduler_pending_pods * on (pod) group_left phalanx_scheduler_leader)", "{{queue}}")],
         "Pods waiting, by queue, as the leading replica sees them."),
        ("Gang wait", "s",
         [(q("phalanx_scheduler_gang_wait_duration_seconds_bucket", 0.5), "p50"),
          (q("phalanx_scheduler_gang_wait_duration_seconds_bucket", 0.9), "p90")],
         "From a gang's first member seen to the whole gang bound."),
        ("Gang timeouts", "short",
         [("sum(increase(phalanx_scheduler_gang_timeouts_total[1h]))", "last hour")],
         "Gangs not placed within their scheduleTimeoutSeconds."),
        ("Binding latency and errors", "s",
         [(q("phalanx_scheduler_binding_duration_seconds_bucket", 0.99), "p99 binding"),
          ("sum by (reason) (rate(phalanx_scheduler_binding_errors_total[5m]))", "errors/s {{reason}}")],
         "Time to write one Binding; failed Bindings by reason (conflict, not_found, other)."),
        ("Stale GPU telemetry", "short",
         [("max(phalanx_scheduler_stale_telemetry_gpus)", "GPUs with stale telemetry"),
          ("sum(rate(phalanx_scheduler_stale_telemetry_samples_ignored_total[5m]))", "samples ignored/s")],
         "GPUs placed on allocation accounting alone because the device plugin's reading is too old."),
        ("Leader and cache", "short",
         [("phalanx_scheduler_leader", "leader {{pod}}"),
          ("max(phalanx_scheduler_cache_nodes)", "nodes in snapshot")],
         "Which replica holds the Lease (1), and the nodes in the scheduler's snapshot."),
    ]),
    ("Cluster GPUs (scheduler leader)", [
        ("GPU allocation by model", "percentunit",
         [("sum by (model) (max by (model, pool) (phalanx_scheduler_cluster_gpus{state=\"allocated\"}))"
           " / sum by (model) (max by (model, pool) (phalanx_scheduler_cluster_gpus{state=\"capacity\"}))",
           "{{model}}")],
         "Allocated share of the healthy GPUs of each model, as the leader's snapshot has it."),
        ("Fragmented GPUs", "short",
         [("sum by (model) (max by (model, pool) (phalanx_scheduler_cluster_gpus{state=\"fragmented\"}))", "fragmented {{model}}"),
          ("sum by (model) (max by (model, pool) (phalanx_scheduler_cluster_gpus{state=\"idle\"}))", "idle {{model}}")],
         "Idle GPUs, and the part of them the workload's typical pods cannot use (the simulator's FGD measure; 0 until 256 pods were seen)."),
        ("GPUs holding shares", "short",
         [("sum by (model) (max by (model, pool) (phalanx_scheduler_shared_gpus))", "{{model}}")],
         "GPUs with at least one fractional share placed on them."),
        ("Pending by reason", "short",
         [("max by (reason) (phalanx_scheduler_pending_pods_by_reason)", "pods {{reason}}"),
          ("max by (reason) (phalanx_scheduler_pending_gangs)", "gangs {{reason}}")],
         "Pods and gangs waiting, by why their last attempt failed: insufficient_gpu, constraint, quota, gated, gang, other."),
        ("Oldest pending pod", "s",
         [("max(phalanx_scheduler_oldest_pending_seconds)", "oldest")],
         "Age of the oldest pod waiting for Phalanx (gated pods included)."),
    ]),
    ("Autoscaler", [
        ("Replicas: current and desired", "short",
         [("max by (namespace, name) (phalanx_autoscaler_current_replicas)", "current {{namespace}}/{{name}}"),
          ("max by (namespace, name) (phalanx_autoscaler_desired_replicas)", "desired {{namespace}}/{{name}}")],
         "Per InferenceAutoscaler: the target's replicas and what the metrics ask for (before the capacity cap)."),
        ("Capacity limited", "short",
         [("max by (namespace, name) (phalanx_autoscaler_capacity_limited)", "{{namespace}}/{{name}}")],
         "1 while more replicas are wanted than the cluster's GPUs can place."),
        ("Scale changes", "short",
         [("sum by (direction) (increase(phalanx_autoscaler_scale_changes_total[15m]))", "{{direction}}")],
         "Replica changes written to scale subresources, by direction."),
        ("Metric readings", "short",
         [("sum(rate(phalanx_autoscaler_stale_readings_total[5m]))", "stale or absent/s"),
          ("sum(rate(phalanx_autoscaler_invalid_readings_total[5m]))", "invalid/s"),
          ("sum by (result) (rate(phalanx_autoscaler_control_periods_total[5m]))", "periods {{result}}/s")],
         "Stale or absent samples never scale down; invalid ones (several series, NaN) never scale at all."),
        ("Scaling metric values", "short",
         [("max by (namespace, name, metric) (phalanx_autoscaler_metric_value)", "{{namespace}}/{{name}} {{metric}}")],
         "The last usable value of each scaling metric."),
        ("Autoscaler leader", "short",
         [("phalanx_autoscaler_leader", "leader {{pod}}"),
          ("max(phalanx_autoscaler_autoscalers)", "InferenceAutoscalers watched")],
         "Which replica holds the Lease, and the objects it watches."),
    ]),
    ("GPUs (device plugin)", [
        ("GPU utilisation", "percentunit",
         [("phalanx_gpu_utilization_ratio", "{{instance}} GPU {{gpu}}")],
         "Share of time a kernel ran, per GPU."),
        ("GPU memory used", "percentunit",
         [("phalanx_gpu_memory_used_bytes / phalanx_gpu_memory_total_bytes", "{{instance}} GPU {{gpu}}")],
         "Device memory in use over device memory, per GPU."),
        ("Healthy GPUs", "short",
         [("sum(phalanx_gpu_healthy)", "healthy"),
          ("count(phalanx_gpu_healthy)", "all"),
          ("sum(increase(phalanx_gpu_xid_errors_total[1h]))", "critical XIDs, last hour")],
         "Unhealthy GPUs are withdrawn from kubelet and never chosen by the scheduler."),
        ("Temperature and power", "short",
         [("max by (instance) (phalanx_gpu_temperature_celsius)", "max °C {{instance}}"),
          ("sum by (instance) (phalanx_gpu_power_watts)", "W {{instance}}")],
         "Hottest GPU and total draw per node."),
        ("Device plugin activity", "short",
         [("sum(rate(phalanx_device_plugin_allocations_total[5m]))", "allocations/s"),
          ("sum by (reason) (rate(phalanx_device_plugin_gpunode_writes_total[5m]))", "GpuNode writes/s {{reason}}")],
         "Containers given devices, and GpuNode status writes (on change, or heartbeat)."),
    ]),
]


def panel(pid, title, unit, targets, description, x, y):
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def main():
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, targets, description) in enumerate(row_panels):
            panels.append(panel(pid, title, unit, targets, description, 12 * (i % 2), y + 8 * (i // 2)))
            pid += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    dashboard = {
        "uid": "phalanx-overview",
        "title": "Phalanx",
        "description": "GPU scheduling, gangs, inference autoscaling and GPU telemetry.",
        "tags": ["phalanx", "gpu", "scheduler"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus", "current": {}, "hide": 0,
        }]},
        "panels": panels,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
