//! Reading the openb trace CSVs (node list and pod list) into engine inputs.
//!
//! Every malformed row is reported with its file and line; nothing panics on input.

use std::path::{Path, PathBuf};

use phalanx_engine::{ClusterSnapshot, GpuDemand, GpuSpec, NodeSpec, PodDemand, PodShape};
use serde::Deserialize;
use thiserror::Error;

/// Pods per node in the paper's node YAML; never binding in these traces.
pub const OPENB_MAX_PODS: u32 = 1001;

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
        let (_, row) = row?;
        let has_model = !row.model.is_empty() && row.model != "nan";
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
        let gpu =
            GpuDemand::from_count_and_milli(row.num_gpu, row.gpu_milli).map_err(|message| {
                TraceError::Row {
                    file: src.name.clone(),
                    line,
                    message,
                }
            })?;
        let spec = match (&row.gpu_spec, gpu) {
            (_, GpuDemand::None) | (None, _) => String::new(),
            (Some(s), _) if s == "nan" => String::new(),
            (Some(s), _) => s
                .split('|')
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("|"),
        };
        pods.push(TracePod {
            name: row.name,
            cpu_milli: row.cpu_milli,
            memory_mib: row.memory_mib,
            gpu,
            spec,
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
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\na,1,1,1,1000,|T4||V100M32|\nb,1,1,1,2000,nan\nc,1,1,0,0,T4\n",
        );
        let pods = read_pods(&src).unwrap();
        assert_eq!(pods[0].spec, "T4|V100M32");
        assert_eq!(pods[1].spec, "");
        assert_eq!(
            pods[1].gpu,
            GpuDemand::Whole { count: 1 },
            "milli above 1000 is a whole GPU"
        );
        assert_eq!(pods[2].spec, "", "CPU-only pods carry no spec");
    }

    #[test]
    fn empty_files_are_errors() {
        let src = CsvSource::embedded("e.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n");
        assert!(read_pods(&src).unwrap_err().to_string().contains("no pods"));
    }
}
