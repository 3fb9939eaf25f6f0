//! Reading the openb trace CSVs (node list and pod list) into engine inputs.
//!
//! Every malformed row is reported with its file and line; nothing panics on input.

use std::path::{Path, PathBuf};

use phalanx_engine::{ClusterSnapshot, GpuDemand, GpuSpec, NodeSpec, PodDemand, PodShape};
use serde::Deserialize;
use thiserror::Error;

/// Pods per node in the paper's node YAML; never binding in these traces.
pub const OPENB_MAX_PODS: u32 = 1001;

/// GPUs per node the engine supports (its `MAX_GPUS_PER_NODE`, which it does not
/// export; a test below holds the two together). A node or pod row above it is refused
/// while reading, before anything is allocated for its GPUs.
pub const MAX_GPUS_PER_NODE: u32 = 16;

/// Largest CPU a node or pod row may carry: 100,000 cores. The openb traces stay under
/// 130 cores; the bound keeps sums over a million rows far from overflow.
pub const MAX_CPU_MILLI: u64 = 100_000_000;

/// Largest memory a node or pod row may carry: 1 PiB (openb's largest node has 1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 30;

/// A whole GPU in milli; `gpu_milli` is the share of one GPU, at most this.
const MILLI_PER_GPU: i64 = 1000;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Row {
        file: String,
        line: u64,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// A CSV's text and the name errors should use for it.
#[derive(Debug, Clone)]
pub struct CsvSource {
    pub name: String,
    pub text: String,
}

impl CsvSource {
    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Ok(CsvSource {
            name: path.display().to_string(),
            text,
        })
    }

    pub fn embedded(name: &str, text: &str) -> Self {
        CsvSource {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }

    /// The stem openb result files use as the workload key (`openb_pod_list_default`).
    pub fn workload_name(&self) -> String {
        let path = PathBuf::from(&self.name);
        path.file_stem()
            .map_or_else(|| self.name.clone(), |s| s.to_string_lossy().into_owned())
    }
}

#[derive(Debug, Deserialize)]
struct NodeRow {
    sn: String,
    cpu_milli: u64,
    memory_mib: u64,
    gpu: u32,
    #[serde(default)]
    model: String,
}

#[derive(Debug, Deserialize)]
struct PodRow {
    name: String,
    cpu_milli: u64,
    memory_mib: u64,
    num_gpu: u32,
    gpu_milli: i64,
    #[serde(default)]
    gpu_spec: Option<String>,
    #[serde(default)]
    qos: String,
    #[serde(default)]
    creation_time: Option<u64>,
    #[serde(default)]
    deletion_time: Option<u64>,
    #[serde(default)]
    scheduled_time: Option<u64>,
}

/// The trace's QoS class of a pod (openb's `qos` column). The published openb
/// lists use `LS` (latency-sensitive), `BE` (best-effort), `Burstable` and
/// `Guaranteed`; anything else is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Qos {
    LatencySensitive,
    BestEffort,
    Burstable,
    Guaranteed,
    /// Absent (a pod list without the column) or a class openb does not use.
    #[default]
    Unknown,
    Other(String),
}

impl Qos {
    pub fn parse(text: &str) -> Self {
        match text {
            "LS" => Qos::LatencySensitive,
            "BE" => Qos::BestEffort,
            "Burstable" => Qos::Burstable,
            "Guaranteed" => Qos::Guaranteed,
            "" => Qos::Unknown,
            other => Qos::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Qos::LatencySensitive => "LS",
            Qos::BestEffort => "BE",
            Qos::Burstable => "Burstable",
            Qos::Guaranteed => "Guaranteed",
            Qos::Unknown => "",
            Qos::Other(text) => text,
        }
    }
}

/// When a pod of the trace was created, scheduled and deleted (seconds from
/// the trace's start; openb's `creation_time`, `scheduled_time`,
/// `deletion_time`). `None` where the pod list has no such column or the
/// cell is empty (openb leaves `scheduled_time` empty for pods that never ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodTimes {
    pub creation_time_s: Option<u64>,
    pub deletion_time_s: Option<u64>,
    pub scheduled_time_s: Option<u64>,
}

/// A pod of the trace, before its model spec is resolved against a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePod {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpu: GpuDemand,
    /// Allowed GPU models, `|`-joined with empty tokens dropped ("" = any).
    pub spec: String,
    pub qos: Qos,
    pub times: PodTimes,
}

impl TracePod {
    pub fn demand(&self, cluster: &ClusterSnapshot) -> PodDemand {
        let models = if self.gpu == GpuDemand::None {
            Default::default()
        } else {
            cluster.models().constraint(&self.spec)
        };
        PodDemand {
            name: self.name.clone(),
            cpu_milli: self.cpu_milli,
            memory_mib: self.memory_mib,
            gpu: self.gpu,
            models,
            rules: Default::default(),
            priority: 0,
            // Trace pods have no namespace, labels or inter-pod terms.
            inter_pod: None,
            // Nor claims.
            volumes: None,
            host_ports: Vec::new(),
            scalar: Vec::new(),
            reservation: None,
        }
    }

    pub fn shape(&self, cluster: &ClusterSnapshot) -> PodShape {
        self.demand(cluster).shape()
    }
}

fn reader(src: &CsvSource) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(src.text.as_bytes())
}

/// Deserialised rows with their 1-based line numbers.
fn rows<T: serde::de::DeserializeOwned>(
    src: &CsvSource,
) -> impl Iterator<Item = Result<(u64, T), TraceError>> + '_ {
    let mut rdr = reader(src);
    let headers = rdr.headers().cloned();
    rdr.into_records().map(move |record| {
        let record = record.map_err(|e| row_error(src, &e))?;
        let headers = headers.as_ref().map_err(|e| row_error(src, e))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = record
            .deserialize::<T>(Some(headers))
            .map_err(|e| row_error_at(src, line, &e))?;
        Ok((line, row))
    })
}

/// A row whose field parsed but holds a value the simulator cannot use.
fn field_error(
    src: &CsvSource,
    line: u64,
    field: &str,
    value: impl std::fmt::Display,
    why: &str,
) -> TraceError {
    TraceError::Row {
        file: src.name.clone(),
        line,
        message: format!("{field} = {value}: {why}"),
    }
}

/// Refuses CPU and memory beyond [`MAX_CPU_MILLI`] and [`MAX_MEMORY_MIB`] (and zero,
/// where a node without them could hold nothing).
fn check_cpu_and_memory(
    src: &CsvSource,
    line: u64,
    cpu_milli: u64,
    memory_mib: u64,
    allow_zero: bool,
) -> Result<(), TraceError> {
    let low = u64::from(!allow_zero);
    if !(low..=MAX_CPU_MILLI).contains(&cpu_milli) {
        return Err(field_error(
            src,
            line,
            "cpu_milli",
            cpu_milli,
            &format!("must be between {low} and {MAX_CPU_MILLI} (100,000 cores)"),
        ));
    }
    if !(low..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(field_error(
            src,
            line,
            "memory_mib",
            memory_mib,
            &format!("must be between {low} and {MAX_MEMORY_MIB} (1 PiB)"),
        ));
    }
    Ok(())
}

/// openb's `num_gpu` and `gpu_milli` as a demand, refusing the combinations the
/// published traces never use instead of guessing: `gpu_milli` is the share of one GPU
/// (0..=1000), a share is `num_gpu = 1` with `gpu_milli` below 1000, and a CPU-only pod
/// has both zero.
fn gpu_demand(
    src: &CsvSource,
    line: u64,
    num_gpu: u32,
    gpu_milli: i64,
) -> Result<GpuDemand, TraceError> {
    if num_gpu > MAX_GPUS_PER_NODE {
        return Err(field_error(
            src,
            line,
            "num_gpu",
            num_gpu,
            &format!("more than the {MAX_GPUS_PER_NODE} GPUs a node can have"),
        ));
    }
    if !(0..=MILLI_PER_GPU).contains(&gpu_milli) {
        return Err(field_error(
            src,
            line,
            "gpu_milli",
            gpu_milli,
            "must be between 0 and 1000 (the share of one GPU; 1000 is a whole GPU, \
             num_gpu says how many)",
        ));
    }
    if num_gpu == 0 && gpu_milli > 0 {
        return Err(field_error(
            src,
            line,
            "gpu_milli",
            gpu_milli,
            "with num_gpu = 0 the pod asks for no GPU; a share is num_gpu = 1 with \
             gpu_milli below 1000, a CPU-only pod has gpu_milli = 0",
        ));
    }
    if num_gpu > 0 && gpu_milli == 0 {
        return Err(field_error(
            src,
            line,
            "gpu_milli",
            gpu_milli,
            &format!(
                "num_gpu = {num_gpu} asks for GPUs but for none of their capacity; \
                 use gpu_milli = 1000 for whole GPUs or num_gpu = 0 for a CPU-only pod"
            ),
        ));
    }
    GpuDemand::from_count_and_milli(num_gpu, gpu_milli).map_err(|message| TraceError::Row {
        file: src.name.clone(),
        line,
        message,
    })
}

/// Refuses a pod deleted before it was created or scheduled: its running time
/// would be negative.
fn check_times(src: &CsvSource, line: u64, times: &PodTimes) -> Result<(), TraceError> {
    let Some(deleted) = times.deletion_time_s else {
        return Ok(());
    };
    for (field, at) in [
        ("creation_time", times.creation_time_s),
        ("scheduled_time", times.scheduled_time_s),
    ] {
        if let Some(at) = at.filter(|&at| at > deleted) {
            return Err(field_error(
                src,
                line,
                "deletion_time",
                deleted,
                &format!("is before the pod's {field} {at}"),
            ));
        }
    }
    Ok(())
}

fn row_error_at(src: &CsvSource, line: u64, err: &csv::Error) -> TraceError {
    match row_error(src, err) {
        TraceError::Row {
            file,
            line: 0,
            message,
        } => TraceError::Row {
            file,
            line,
            message,
        },
        other => other,
    }
}

fn row_error(src: &CsvSource, err: &csv::Error) -> TraceError {
    let line = err.position().map_or(0, |p| p.line());
    let message = match err.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(field) => format!("column {}: {}", field + 1, err.kind()),
            None => err.to_string(),
        },
        _ => err.to_string(),
    };
    TraceError::Row {
        file: src.name.clone(),
        line,
        message,
    }
}

/// Reads a node list (`sn,cpu_milli,memory_mib,gpu,model`).
pub fn read_nodes(src: &CsvSource) -> Result<Vec<NodeSpec>, TraceError> {
    let mut nodes = Vec::new();
    for row in rows::<NodeRow>(src) {
        let (line, row) = row?;
        if row.gpu > MAX_GPUS_PER_NODE {
            return Err(field_error(
                src,
                line,
                "gpu",
                row.gpu,
                &format!("more than the {MAX_GPUS_PER_NODE} GPUs per node the engine supports"),
            ));
        }
        check_cpu_and_memory(src, line, row.cpu_milli, row.memory_mib, false)?;
        let has_model = !row.model.is_empty() && row.model != "nan";
        if row.gpu > 0 && !has_model {
            return Err(field_error(
                src,
                line,
                "model",
                format!("{:?}", row.model),
                &format!("node {} has {} GPUs but no GPU model", row.sn, row.gpu),
            ));
        }
        nodes.push(NodeSpec {
            gpus: (0..row.gpu)
                .map(|i| GpuSpec {
                    uuid: format!("{}-gpu{i}", row.sn),
                    memory_mib: 0,
                })
                .collect(),
            gpu_model: has_model.then(|| row.model.clone()),
            name: row.sn,
            cpu_milli: row.cpu_milli,
            memory_mib: row.memory_mib,
            max_pods: OPENB_MAX_PODS,
            ..NodeSpec::default()
        });
    }
    if nodes.is_empty() {
        return Err(TraceError::File {
            file: src.name.clone(),
            message: "no nodes".into(),
        });
    }
    Ok(nodes)
}

/// Reads a pod list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,…]`).
pub fn read_pods(src: &CsvSource) -> Result<Vec<TracePod>, TraceError> {
    let mut pods = Vec::new();
    for row in rows::<PodRow>(src) {
        let (line, row) = row?;
        check_cpu_and_memory(src, line, row.cpu_milli, row.memory_mib, true)?;
        let gpu = gpu_demand(src, line, row.num_gpu, row.gpu_milli)?;
        let spec = match (&row.gpu_spec, gpu) {
            (_, GpuDemand::None) | (None, _) => String::new(),
            (Some(s), _) if s == "nan" => String::new(),
            (Some(s), _) => s
                .split('|')
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("|"),
        };
        let times = PodTimes {
            creation_time_s: row.creation_time,
            deletion_time_s: row.deletion_time,
            scheduled_time_s: row.scheduled_time,
        };
        check_times(src, line, &times)?;
        pods.push(TracePod {
            name: row.name,
            cpu_milli: row.cpu_milli,
            memory_mib: row.memory_mib,
            gpu,
            spec,
            qos: Qos::parse(&row.qos),
            times,
        });
    }
    if pods.is_empty() {
        return Err(TraceError::File {
            file: src.name.clone(),
            message: "no pods".into(),
        });
    }
    Ok(pods)
}

/// GPU models that pods ask for but no node of `cluster` has, each with how many
/// pods name it and the first of them, in name order. Such a token can never match
/// (the spec's `allowed` is exact string equality), so a typo would silently leave
/// those pods to their other models, or to none.
pub fn unknown_models(pods: &[TracePod], cluster: &ClusterSnapshot) -> Vec<UnknownModel> {
    let mut found: std::collections::BTreeMap<&str, UnknownModel> = Default::default();
    for pod in pods.iter().filter(|p| p.gpu != GpuDemand::None) {
        for token in pod.spec.split('|').filter(|t| !t.is_empty()) {
            if cluster.models().get(token).is_none() {
                found
                    .entry(token)
                    .or_insert_with(|| UnknownModel {
                        model: token.to_owned(),
                        pods: 0,
                        first_pod: pod.name.clone(),
                    })
                    .pods += 1;
            }
        }
    }
    found.into_values().collect()
}

/// One GPU model of [`unknown_models`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownModel {
    pub model: String,
    /// Pods naming it (a pod naming it twice counts twice).
    pub pods: usize,
    pub first_pod: String,
}

/// Builds an empty cluster from a node list.
pub fn build_cluster(nodes: &[NodeSpec]) -> Result<ClusterSnapshot, phalanx_engine::EngineError> {
    let mut cluster = ClusterSnapshot::new();
    for node in nodes {
        cluster.add_node(node.clone())?;
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_pod_row_names_file_and_line() {
        let src = CsvSource::embedded(
            "pods.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,10,1,1000\np1,abc,10,1,1000\n",
        );
        let err = read_pods(&src).unwrap_err().to_string();
        assert!(err.starts_with("pods.csv:3:"), "{err}");
        assert!(err.contains("column 2"), "{err}");
    }

    #[test]
    fn negative_cpu_is_refused_not_wrapped() {
        let src = CsvSource::embedded(
            "n.csv",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,-5,10,1,T4\n",
        );
        let err = read_nodes(&src).unwrap_err().to_string();
        assert!(err.starts_with("n.csv:2:"), "{err}");
    }

    #[test]
    fn multi_gpu_shares_are_refused_with_the_line() {
        let src = CsvSource::embedded(
            "pods.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,10,1,1000\np1,1000,10,2,500\n",
        );
        let err = read_pods(&src).unwrap_err().to_string();
        assert!(err.starts_with("pods.csv:3:"), "{err}");
        assert!(err.contains("single GPU"), "{err}");
    }

    #[test]
    fn spec_is_normalised_and_nan_means_any() {
        let src = CsvSource::embedded(
            "pods.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\na,1,1,1,1000,|T4||V100M32|\nb,1,1,1,1000,nan\nc,1,1,0,0,T4\n",
        );
        let pods = read_pods(&src).unwrap();
        assert_eq!(pods[0].spec, "T4|V100M32");
        assert_eq!(pods[1].spec, "");
        assert_eq!(pods[1].gpu, GpuDemand::Whole { count: 1 });
        assert_eq!(pods[2].spec, "", "CPU-only pods carry no spec");
    }

    const NODE_HEADER: &str = "sn,cpu_milli,memory_mib,gpu,model\n";
    const POD_HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n";

    #[test]
    fn out_of_range_node_rows_name_file_line_and_field() {
        for (row, expected) in [
            (
                "n1,64000,262144,4294967295,T4",
                "n.csv:3: gpu = 4294967295: more than the 16",
            ),
            ("n1,64000,262144,17,T4", "n.csv:3: gpu = 17:"),
            (
                "n1,0,262144,2,T4",
                "n.csv:3: cpu_milli = 0: must be between 1 and",
            ),
            (
                "n1,100000001,262144,2,T4",
                "n.csv:3: cpu_milli = 100000001:",
            ),
            ("n1,64000,0,2,T4", "n.csv:3: memory_mib = 0:"),
            (
                "n1,64000,1073741825,2,T4",
                "n.csv:3: memory_mib = 1073741825:",
            ),
            (
                "n1,64000,262144,2,",
                "n.csv:3: model = \"\": node n1 has 2 GPUs but no GPU model",
            ),
            ("n1,64000,262144,2,nan", "n.csv:3: model = \"nan\":"),
        ] {
            let text = format!("{NODE_HEADER}n0,64000,262144,2,T4\n{row}\n");
            let err = read_nodes(&CsvSource::embedded("n.csv", &text))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err:?} is not {expected:?}");
        }
    }

    #[test]
    fn the_largest_node_the_engine_takes_is_read() {
        let text =
            format!("{NODE_HEADER}n0,{MAX_CPU_MILLI},{MAX_MEMORY_MIB},{MAX_GPUS_PER_NODE},T4\n");
        let nodes = read_nodes(&CsvSource::embedded("n.csv", &text)).unwrap();
        build_cluster(&nodes).unwrap();
    }

    #[test]
    fn the_gpu_limit_is_the_engines() {
        let node = |gpus: u32| NodeSpec {
            name: "n".into(),
            cpu_milli: 1000,
            memory_mib: 1000,
            max_pods: 10,
            gpus: (0..gpus)
                .map(|i| GpuSpec {
                    uuid: format!("g{i}"),
                    memory_mib: 0,
                })
                .collect(),
            gpu_model: Some("T4".into()),
            ..NodeSpec::default()
        };
        assert!(build_cluster(&[node(MAX_GPUS_PER_NODE)]).is_ok());
        assert!(build_cluster(&[node(MAX_GPUS_PER_NODE + 1)]).is_err());
    }

    #[test]
    fn gpu_requests_outside_openb_semantics_are_refused() {
        for (row, expected) in [
            (
                "p1,1000,10,1,-5,",
                "p.csv:3: gpu_milli = -5: must be between 0 and 1000",
            ),
            (
                "p1,1000,10,1,1001,",
                "p.csv:3: gpu_milli = 1001: must be between 0 and 1000",
            ),
            (
                "p1,1000,10,0,500,",
                "p.csv:3: gpu_milli = 500: with num_gpu = 0",
            ),
            (
                "p1,1000,10,2,0,",
                "p.csv:3: gpu_milli = 0: num_gpu = 2 asks for GPUs",
            ),
            (
                "p1,1000,10,17,1000,",
                "p.csv:3: num_gpu = 17: more than the 16",
            ),
            (
                "p1,1000,10,4294967295,1000,",
                "p.csv:3: num_gpu = 4294967295:",
            ),
            ("p1,100000001,10,0,0,", "p.csv:3: cpu_milli = 100000001:"),
            (
                "p1,1000,1073741825,0,0,",
                "p.csv:3: memory_mib = 1073741825:",
            ),
        ] {
            let text = format!("{POD_HEADER}p0,1000,10,1,500,\n{row}\n");
            let err = read_pods(&CsvSource::embedded("p.csv", &text))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err:?} is not {expected:?}");
        }
    }

    #[test]
    fn every_openb_pod_class_is_read() {
        let text = format!(
            "{POD_HEADER}cpu,1000,0,0,0,\nshare,1000,10,1,1,\nshare999,1000,10,1,999,\n\
             whole,1000,10,1,1000,\nmulti,1000,10,16,1000,\n"
        );
        let pods = read_pods(&CsvSource::embedded("p.csv", &text)).unwrap();
        let gpus: Vec<_> = pods.iter().map(|p| p.gpu).collect();
        assert_eq!(
            gpus,
            [
                GpuDemand::None,
                GpuDemand::Share { milli: 1 },
                GpuDemand::Share { milli: 999 },
                GpuDemand::Whole { count: 1 },
                GpuDemand::Whole { count: 16 },
            ]
        );
    }

    #[test]
    fn models_no_node_has_are_counted_once_each() {
        let nodes = read_nodes(&CsvSource::embedded(
            "n.csv",
            &format!("{NODE_HEADER}n0,64000,262144,2,T4\nn1,64000,262144,2,V100M32\n"),
        ))
        .unwrap();
        let cluster = build_cluster(&nodes).unwrap();
        let pods = read_pods(&CsvSource::embedded(
            "p.csv",
            &format!(
                "{POD_HEADER}a,1,1,1,500,T4\nb,1,1,1,500,A100|T4\nc,1,1,1,1000,A100\n\
                 d,1,1,1,1000,t4\ne,1,1,0,0,H100\n"
            ),
        ))
        .unwrap();
        assert_eq!(
            unknown_models(&pods, &cluster),
            [
                UnknownModel {
                    model: "A100".into(),
                    pods: 2,
                    first_pod: "b".into()
                },
                UnknownModel {
                    model: "t4".into(),
                    pods: 1,
                    first_pod: "d".into()
                },
            ],
            "CPU-only pods carry no spec; model names are case-sensitive"
        );
    }

    const TIMED_HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,\
                                pod_phase,creation_time,deletion_time,scheduled_time\n";

    #[test]
    fn qos_and_times_are_read_and_a_missing_schedule_is_none() {
        let text = format!(
            "{TIMED_HEADER}a,1000,10,1,1000,,LS,Running,5,90,7\n\
             b,1000,10,0,0,,BE,Pending,10,20,\n\
             c,1000,10,0,0,,Gold,Running,0,0,0\n"
        );
        let pods = read_pods(&CsvSource::embedded("t.csv", &text)).unwrap();
        assert_eq!(pods[0].qos, Qos::LatencySensitive);
        assert_eq!(
            pods[0].times,
            PodTimes {
                creation_time_s: Some(5),
                deletion_time_s: Some(90),
                scheduled_time_s: Some(7),
            }
        );
        assert_eq!(pods[1].qos, Qos::BestEffort);
        assert_eq!(pods[1].times.scheduled_time_s, None);
        assert_eq!(pods[2].qos, Qos::Other("Gold".into()));
        assert_eq!(pods[2].qos.as_str(), "Gold");
    }

    #[test]
    fn a_pod_list_without_times_has_none() {
        let text = format!("{POD_HEADER}a,1000,10,1,1000,\n");
        let pods = read_pods(&CsvSource::embedded("t.csv", &text)).unwrap();
        assert_eq!(pods[0].times, PodTimes::default());
        assert_eq!(pods[0].qos, Qos::Unknown);
    }

    #[test]
    fn malformed_times_name_file_line_and_column() {
        for (row, expected) in [
            (
                "b,1000,10,1,1000,,LS,Running,12x,90,12",
                "t.csv:3: column 9:",
            ),
            (
                "b,1000,10,1,1000,,LS,Running,12,-4,12",
                "t.csv:3: column 10:",
            ),
            (
                "b,1000,10,1,1000,,LS,Running,12,90,1.5",
                "t.csv:3: column 11:",
            ),
            (
                "b,1000,10,1,1000,,LS,Running,50,40,50",
                "t.csv:3: deletion_time = 40: is before the pod's creation_time 50",
            ),
            (
                "b,1000,10,1,1000,,LS,Running,10,40,41",
                "t.csv:3: deletion_time = 40: is before the pod's scheduled_time 41",
            ),
        ] {
            let text = format!("{TIMED_HEADER}a,1000,10,1,1000,,LS,Running,5,90,7\n{row}\n");
            let err = read_pods(&CsvSource::embedded("t.csv", &text))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err:?} is not {expected:?}");
        }
    }

    #[test]
    fn the_embedded_default_trace_has_times_for_every_pod() {
        let pods = read_pods(&CsvSource::embedded("d", crate::EMBEDDED_PODS)).unwrap();
        assert!(pods
            .iter()
            .all(|p| p.times.creation_time_s.is_some() && p.times.deletion_time_s.is_some()));
        assert!(pods.iter().all(|p| p.qos != Qos::Unknown));
    }

    #[test]
    fn empty_files_are_errors() {
        let src = CsvSource::embedded("e.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n");
        assert!(read_pods(&src).unwrap_err().to_string().contains("no pods"));
    }
}
