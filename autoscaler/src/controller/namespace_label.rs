//! Per-namespace label enforcement (`prometheus.enforceNamespaceLabel`): the
//! tenant boundary of the autoscaler's Prometheus queries.
//!
//! Whoever may write an `InferenceAutoscaler` in a namespace chooses its
//! PromQL, and the autoscaler runs it with its own access to Prometheus; the
//! value read comes back in the object's status (`status.metrics[].value`)
//! and in an event. Without enforcement a tenant can therefore read any
//! series Prometheus holds, other tenants' included, one number at a time.
//! With enforcement every vector and matrix selector of every query (raw
//! `query` and presets alike) must carry `<label>="<the autoscaler's
//! namespace>"`: a selector without a matcher on the label gets one, a
//! selector that already asks for exactly that value keeps it, and a selector
//! with any other matcher on the label (another namespace, a regex, `!=`) is
//! refused (the activation query of `spec.activation` alike), as is a query that does not parse. A refusal is a spec problem
//! naming the field (`ScalingActive=False`, reason `InvalidSpec`), so nothing
//! is queried. This is the rewrite prom-label-proxy does, on the parsed query
//! (the `promql-parser` crate), never on its text.
//!
//! It bounds what the selectors read; it relies on the label being set by
//! Prometheus from the scraped pod's namespace (the Prometheus Operator's
//! default for `namespace`) and not by the workloads themselves
//! (`honorLabels: false`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};

use crate::promql::Matchers;
use crate::spec::{AutoscalerPlan, MetricSource, ServingSeries, SpecProblem};

/// The namespace boundary: which label, and the one value allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceBoundary<'a> {
    /// The label every selector must match, e.g. `namespace`.
    pub label: &'a str,
    /// The `InferenceAutoscaler`'s namespace.
    pub namespace: &'a str,
}

impl NamespaceBoundary<'_> {
    /// `query` with the boundary on every selector, or why it cannot have it.
    pub fn enforce_in_query(&self, query: &str) -> Result<String, String> {
        let mut expr = parser::parse(query).map_err(|e| format!("is not valid PromQL: {e}"))?;
        self.enforce_in_expr(&mut expr)?;
        Ok(expr.to_string())
    }

    fn enforce_in_expr(&self, expr: &mut Expr) -> Result<(), String> {
        match expr {
            Expr::VectorSelector(selector) => self.enforce_in_selector(selector),
            Expr::MatrixSelector(matrix) => self.enforce_in_selector(&mut matrix.vs),
            Expr::Aggregate(aggregate) => {
                self.enforce_in_expr(&mut aggregate.expr)?;
                match aggregate.param.as_mut() {
                    Some(param) => self.enforce_in_expr(param),
                    None => Ok(()),
                }
            }
            Expr::Unary(unary) => self.enforce_in_expr(&mut unary.expr),
            Expr::Binary(binary) => {
                self.enforce_in_expr(&mut binary.lhs)?;
                self.enforce_in_expr(&mut binary.rhs)
            }
            Expr::Paren(paren) => self.enforce_in_expr(&mut paren.expr),
            Expr::Subquery(subquery) => self.enforce_in_expr(&mut subquery.expr),
            Expr::Call(call) => call
                .args
                .args
                .iter_mut()
                .try_for_each(|arg| self.enforce_in_expr(arg)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
            // The parser never produces one; refuse rather than pass unchecked.
            Expr::Extension(_) => Err("contains an expression that cannot be checked".to_owned()),
        }
    }

    fn enforce_in_selector(&self, selector: &mut VectorSelector) -> Result<(), String> {
        let shown = selector.to_string();
        let matchers = &mut selector.matchers;
        // With `or`, each alternative is a selector of its own.
        let groups: Vec<&mut Vec<Matcher>> = if matchers.or_matchers.is_empty() {
            vec![&mut matchers.matchers]
        } else {
            matchers.or_matchers.iter_mut().collect()
        };
        for group in groups {
            let mut has_boundary = false;
            for matcher in group.iter().filter(|m| m.name == self.label) {
                if matches!(matcher.op, MatchOp::Equal) && matcher.value == self.namespace {
                    has_boundary = true;
                } else {
                    return Err(format!(
                        "selector {shown} reads {} other than this autoscaler's namespace {:?} \
                         (prometheus.enforceNamespaceLabel: {}); drop that matcher",
                        self.label, self.namespace, self.label
                    ));
                }
            }
            if !has_boundary {
                group.push(Matcher::new(MatchOp::Equal, self.label, self.namespace));
            }
        }
        Ok(())
    }

    /// A preset's matchers with the boundary, or why they cannot have it.
    fn enforce_in_matchers(&self, matchers: &mut Matchers) -> Result<(), String> {
        match matchers.get(self.label) {
            Some(value) if value != self.namespace => Err(format!(
                "{} {value:?} is not this autoscaler's namespace {:?} \
                 (prometheus.enforceNamespaceLabel: {})",
                self.label, self.namespace, self.label
            )),
            _ => {
                matchers.insert(self.label, self.namespace);
                Ok(())
            }
        }
    }

    /// The plan with the boundary on every metric, or the problems naming the
    /// fields that cannot have it. `plan` must come from [`crate::spec::plan`]
    /// of the same spec: its metrics are `spec.metrics` in order.
    pub fn enforce(&self, mut plan: AutoscalerPlan) -> Result<AutoscalerPlan, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        for (i, metric) in plan.metrics.iter_mut().enumerate() {
            match &mut metric.source {
                MetricSource::Query(query) => match self.enforce_in_query(query) {
                    Ok(rewritten) => *query = rewritten,
                    Err(message) => problems.push(SpecProblem {
                        field: format!("spec.metrics[{i}].query"),
                        message,
                    }),
                },
                MetricSource::Preset { matchers, .. } => {
                    if let Err(message) = self.enforce_in_matchers(matchers) {
                        problems.push(SpecProblem {
                            field: format!("spec.metrics[{i}].matchLabels"),
                            message,
                        });
                    }
                }
                MetricSource::Serving(serving) => match &mut serving.series {
                    ServingSeries::Preset { matchers, .. } => {
                        if let Err(message) = self.enforce_in_matchers(matchers) {
                            problems.push(SpecProblem {
                                field: format!("spec.metrics[{i}].matchLabels"),
                                message,
                            });
                        }
                    }
                    ServingSeries::Queries(queries) => {
                        for (name, series) in queries.series_mut() {
                            match self.enforce_in_query(&series.value) {
                                Ok(rewritten) => series.value = rewritten,
                                Err(message) => problems.push(SpecProblem {
                                    field: format!("spec.metrics[{i}].serving.{name}"),
                                    message,
                                }),
                            }
                        }
                    }
                },
            }
        }
        if let Some(activation) = &mut plan.activation {
            if let MetricSource::Query(query) = &mut activation.source {
                match self.enforce_in_query(query) {
                    Ok(rewritten) => *query = rewritten,
                    Err(message) => problems.push(SpecProblem {
                        field: "spec.activation.query".to_owned(),
                        message,
                    }),
                }
            }
        }
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use phalanx_api::autoscaler::MetricPreset;

    use super::*;
    use crate::decision::{Activation, MetricTarget};
    use crate::promql::Matchers;
    use crate::spec::{ActivationPlan, MetricPlan};
    use promql_parser::label::Matchers as SelectorMatchers;

    /// Every selector's matchers in `query`, for asserting the rewrite.
    fn selectors(query: &str) -> Vec<SelectorMatchers> {
        fn walk(expr: &Expr, out: &mut Vec<SelectorMatchers>) {
            match expr {
                Expr::VectorSelector(s) => out.push(s.matchers.clone()),
                Expr::MatrixSelector(m) => out.push(m.vs.matchers.clone()),
                Expr::Aggregate(a) => {
                    walk(&a.expr, out);
                    if let Some(p) = &a.param {
                        walk(p, out);
                    }
                }
                Expr::Unary(u) => walk(&u.expr, out),
                Expr::Binary(b) => {
                    walk(&b.lhs, out);
                    walk(&b.rhs, out);
                }
                Expr::Paren(p) => walk(&p.expr, out),
                Expr::Subquery(s) => walk(&s.expr, out),
                Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
                Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(
            &parser::parse(query).expect("the rewrite is valid PromQL"),
            &mut out,
        );
        out
    }

    const SERVING: NamespaceBoundary<'static> = NamespaceBoundary {
        label: "namespace",
        namespace: "serving",
    };

    /// Every selector of the rewritten query has exactly one `namespace`
    /// matcher, `="serving"`, in every `or` alternative.
    #[track_caller]
    fn assert_bounded(rewritten: &str, selector_count: usize) {
        let found = selectors(rewritten);
        assert_eq!(found.len(), selector_count, "{rewritten}");
        for matchers in found {
            let groups: Vec<&Vec<Matcher>> = if matchers.or_matchers.is_empty() {
                vec![&matchers.matchers]
            } else {
                matchers.or_matchers.iter().collect()
            };
            for group in groups {
                let on_label: Vec<&Matcher> =
                    group.iter().filter(|m| m.name == "namespace").collect();
                assert_eq!(on_label.len(), 1, "{rewritten}");
                assert!(
                    matches!(on_label[0].op, MatchOp::Equal) && on_label[0].value == "serving",
                    "{rewritten}"
                );
            }
        }
    }

    #[test]
    fn every_selector_gets_the_namespace() {
        for (query, selectors) in [
            ("up", 1),
            ("vllm:num_requests_waiting", 1),
            ("sum(rate(http_requests_total{job=\"api\"}[5m]))", 1),
            // functions nest selectors; both operands of a binary op.
            (
                "histogram_quantile(0.9, sum by (le) (rate(latency_bucket[1m])))",
                1,
            ),
            ("sum(a) / sum(b) + on() group_left c", 3),
            // a subquery and an aggregation with a parameter.
            ("max_over_time(rate(x[1m])[10m:30s])", 1),
            ("topk(3, y) and z offset 5m", 2),
            ("quantile(scalar(q), w @ 1700000000)", 2),
            ("-(foo)", 1),
            ("{__name__=~\"vllm:.*\", model=\"llama\"}", 1),
            ("absent(missing{namespace=\"serving\"})", 1),
            ("label_replace(a, \"dst\", \"$1\", \"src\", \"(.*)\")", 1),
            ("min(timestamp(tgi_queue_size{pod=~\"llama-.*\"}))", 1),
        ] {
            let rewritten = SERVING.enforce_in_query(query).unwrap();
            assert_bounded(&rewritten, selectors);
        }
        assert_eq!(SERVING.enforce_in_query("vector(1)").unwrap(), "vector(1)");
        assert_eq!(
            SERVING.enforce_in_query("sum(rate(x[1m]))").unwrap(),
            "sum(rate(x{namespace=\"serving\"}[1m]))"
        );
    }

    #[test]
    fn a_matching_namespace_matcher_is_kept_not_doubled() {
        let rewritten = SERVING
            .enforce_in_query("sum(x{namespace=\"serving\", pod=\"a\"})")
            .unwrap();
        assert_bounded(&rewritten, 1);
    }

    #[test]
    fn conflicting_matchers_and_bad_promql_are_refused() {
        for query in [
            "x{namespace=\"other\"}",
            "sum(x) / sum(y{namespace=~\"serv.*\"})",
            "rate(x{namespace!=\"serving\"}[5m])",
            "x{namespace=\"serving\", namespace=\"other\"}",
            "max_over_time(x{namespace=~\".+\"}[5m:1m])",
        ] {
            let error = SERVING.enforce_in_query(query).unwrap_err();
            assert!(
                error.contains("other than this autoscaler's namespace \"serving\""),
                "{query}: {error}"
            );
        }
        let error = SERVING.enforce_in_query("sum(rate(x[5m])").unwrap_err();
        assert!(error.starts_with("is not valid PromQL: "), "{error}");
        assert!(SERVING.enforce_in_query("").is_err());
    }

    fn plan(sources: Vec<MetricSource>) -> AutoscalerPlan {
        AutoscalerPlan {
            behavior: crate::decision::Behavior::with_bounds(1, 4),
            metrics: sources
                .into_iter()
                .enumerate()
                .map(|(i, source)| MetricPlan {
                    name: format!("m{i}"),
                    source,
                    target: MetricTarget::PerReplica(1.0),
                })
                .collect(),
            activation: None,
        }
    }

    fn with_activation(query: &str) -> AutoscalerPlan {
        AutoscalerPlan {
            activation: Some(ActivationPlan {
                source: MetricSource::Query(query.into()),
                activation: Activation {
                    threshold: 0.0,
                    per_replica: None,
                    cooldown: std::time::Duration::from_secs(300),
                    max_sample_age: std::time::Duration::from_secs(60),
                },
            }),
            ..plan(vec![preset(&[])])
        }
    }

    #[test]
    fn the_activation_query_gets_the_boundary_or_is_refused() {
        let bounded = SERVING
            .enforce(with_activation("sum(gateway_queue_depth)"))
            .unwrap();
        assert_eq!(
            bounded.activation.map(|a| a.source),
            Some(MetricSource::Query(
                "sum(gateway_queue_depth{namespace=\"serving\"})".into()
            ))
        );
        let problems = SERVING
            .enforce(with_activation(
                "sum(gateway_queue_depth{namespace=\"billing\"})",
            ))
            .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.activation.query");
    }

    fn preset(labels: &[(&str, &str)]) -> MetricSource {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        MetricSource::Preset {
            preset: MetricPreset::VllmQueueDepth,
            matchers: Matchers::new(labels),
        }
    }

    #[test]
    fn plans_get_the_boundary_on_queries_and_presets() {
        let bounded = SERVING
            .enforce(plan(vec![
                MetricSource::Query("sum(q)".into()),
                preset(&[("model", "llama")]),
                preset(&[("namespace", "serving")]),
            ]))
            .unwrap();
        let MetricSource::Query(query) = &bounded.metrics[0].source else {
            panic!("a query stays a query");
        };
        assert_eq!(query, "sum(q{namespace=\"serving\"})");
        for metric in &bounded.metrics[1..] {
            let MetricSource::Preset { matchers, .. } = &metric.source else {
                panic!("a preset stays a preset");
            };
            assert_eq!(matchers.get("namespace"), Some("serving"));
        }
    }

    #[test]
    fn plan_refusals_name_the_field() {
        let problems = SERVING
            .enforce(plan(vec![
                MetricSource::Query("sum(q)".into()),
                MetricSource::Query("q{namespace=\"billing\"}".into()),
                preset(&[("namespace", "billing")]),
                MetricSource::Query("rate(".into()),
            ]))
            .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.metrics[1].query",
                "spec.metrics[2].matchLabels",
                "spec.metrics[3].query"
            ]
        );
        assert!(
            problems[1].message.contains("namespace \"billing\""),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn serving_series_get_the_boundary_on_every_query_and_preset() {
        use crate::promql::{SeriesQuery, ServingPreset, ServingQueries};
        use crate::spec::{ServingSeries, ServingSource};

        let serving = |series| MetricSource::Serving(Box::new(ServingSource::for_tests(series)));
        let own = |waiting: &str| {
            serving(ServingSeries::Queries(ServingQueries {
                running: SeriesQuery::raw("sum(r)"),
                waiting: SeriesQuery::raw(waiting),
                mean_slot_seconds: SeriesQuery::raw("sum(rate(s[5m])) / sum(rate(c[5m]))"),
                kv_cache_usage: vec![SeriesQuery::raw("avg(kv)")],
                ready_replicas: Some(SeriesQuery::raw("count(r)")),
            }))
        };
        let vllm = serving(ServingSeries::Preset {
            preset: ServingPreset::Vllm,
            matchers: Matchers::default(),
        });
        let bounded = SERVING
            .enforce(plan(vec![vllm, own("sum(w)")]))
            .expect("bounded");
        let MetricSource::Serving(preset) = &bounded.metrics[0].source else {
            panic!("a serving source");
        };
        let ServingSeries::Preset { matchers, .. } = &preset.series else {
            panic!("a serving preset");
        };
        assert_eq!(matchers.get("namespace"), Some("serving"));
        let MetricSource::Serving(user) = &bounded.metrics[1].source else {
            panic!("a serving source");
        };
        let ServingSeries::Queries(queries) = &user.series else {
            panic!("serving queries");
        };
        let mut queries = queries.clone();
        let series = queries.series_mut();
        assert_eq!(series.len(), 5);
        for (name, query) in series {
            let selectors = if name == "meanSlotSeconds" { 2 } else { 1 };
            assert_bounded(&query.value, selectors);
        }

        let other = serving(ServingSeries::Preset {
            preset: ServingPreset::Tgi,
            matchers: Matchers::new(BTreeMap::from([(
                "namespace".to_owned(),
                "billing".to_owned(),
            )])),
        });
        let problems = SERVING
            .enforce(plan(vec![other, own("sum(w{namespace=\"billing\"})")]))
            .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.metrics[0].matchLabels",
                "spec.metrics[1].serving.waiting"
            ]
        );
    }
}
