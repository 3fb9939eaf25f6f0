//! The objects gangs are declared in, and which of them a cluster serves.
//!
//! A gang's policy lives in an object only some clusters have: the
//! scheduler-plugins `PodGroup` CRD, or Kubernetes' own `scheduling.k8s.io`
//! kinds (1.37: `PodGroup` and `Workload` beta, `CompositePodGroup` alpha,
//! each behind feature gates). [`GANG_OBJECT_SOURCES`] lists them; the scheduler
//! asks the server which are served (`ServedApis::discover`) and watches only
//! those. [`ActiveSources`] is the answer as the log line and the
//! `phalanx_scheduler_gang_source_active` gauge report it; it takes any list of
//! sources, so kinds added later (owner kinds an auto-grouper reads) report the
//! same way.

use std::fmt;

use crate::controller::served_apis::{OptionalKind, ServedApis};

/// An object kind a gang's policy can come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GangSourceKind {
    /// The gauge's `source` label and the log's name for it.
    pub name: &'static str,
    pub kind: OptionalKind,
    /// Watched when served. `false` for a kind only reported (the Workload:
    /// its controller copies each template's policy onto the PodGroups it
    /// creates, and pods name the PodGroup).
    pub watched: bool,
}

/// scheduler-plugins `podgroups.scheduling.x-k8s.io/v1alpha1`.
pub const SCHEDULER_PLUGINS_POD_GROUP: GangSourceKind = GangSourceKind {
    name: "scheduler-plugins-podgroup",
    kind: OptionalKind {
        group: "scheduling.x-k8s.io",
        version: "v1alpha1",
        kind: "PodGroup",
        plural: "podgroups",
    },
    watched: true,
};

/// Kubernetes `podgroups.scheduling.k8s.io/v1beta1`.
pub const UPSTREAM_POD_GROUP: GangSourceKind = GangSourceKind {
    name: "podgroup",
    kind: OptionalKind {
        group: "scheduling.k8s.io",
        version: "v1beta1",
        kind: "PodGroup",
        plural: "podgroups",
    },
    watched: true,
};

/// Kubernetes `workloads.scheduling.k8s.io/v1beta1`.
pub const UPSTREAM_WORKLOAD: GangSourceKind = GangSourceKind {
    name: "workload",
    kind: OptionalKind {
        group: "scheduling.k8s.io",
        version: "v1beta1",
        kind: "Workload",
        plural: "workloads",
    },
    watched: false,
};

/// Kubernetes `compositepodgroups.scheduling.k8s.io/v1alpha3`.
pub const COMPOSITE_POD_GROUP: GangSourceKind = GangSourceKind {
    name: "compositepodgroup",
    kind: OptionalKind {
        group: "scheduling.k8s.io",
        version: "v1alpha3",
        kind: "CompositePodGroup",
        plural: "compositepodgroups",
    },
    watched: true,
};

/// Every gang object kind the scheduler asks about.
pub const GANG_OBJECT_SOURCES: &[GangSourceKind] = &[
    SCHEDULER_PLUGINS_POD_GROUP,
    UPSTREAM_POD_GROUP,
    UPSTREAM_WORKLOAD,
    COMPOSITE_POD_GROUP,
];

/// The owner kinds gangs are found from (`owners::OWNER_KINDS`), as sources
/// for the same report; each is named by its plural (`jobsets`, `rayclusters`).
pub fn owner_sources(kinds: &[OptionalKind]) -> Vec<GangSourceKind> {
    kinds
        .iter()
        .map(|kind| GangSourceKind {
            name: kind.plural,
            kind: *kind,
            watched: true,
        })
        .collect()
}

/// The `OptionalKind`s of `sources`, for `ServedApis::discover`.
pub fn kinds_of(sources: &[GangSourceKind]) -> Vec<OptionalKind> {
    sources.iter().map(|s| s.kind).collect()
}

/// Which of a list of sources the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveSources {
    entries: Vec<(GangSourceKind, bool)>,
}

/// Each of `sources`, active when `served` has its kind.
pub fn active_sources(served: &ServedApis, sources: &[GangSourceKind]) -> ActiveSources {
    ActiveSources {
        entries: sources
            .iter()
            .map(|source| (*source, served.serves(&source.kind)))
            .collect(),
    }
}

impl ActiveSources {
    pub fn is_active(&self, source: &GangSourceKind) -> bool {
        self.entries
            .iter()
            .any(|(s, active)| s == source && *active)
    }

    /// Every source with whether it is active, in the listed order.
    pub fn iter(&self) -> impl Iterator<Item = (&GangSourceKind, bool)> {
        self.entries.iter().map(|(s, active)| (s, *active))
    }

    /// The served kinds to watch.
    pub fn watched(&self) -> impl Iterator<Item = &GangSourceKind> {
        self.iter()
            .filter(|(s, active)| *active && s.watched)
            .map(|(s, _)| s)
    }
}

impl fmt::Display for ActiveSources {
    /// `podgroup (podgroups.scheduling.k8s.io/v1beta1) active, ...`; the
    /// annotation form needs no object and is always active.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation (phalanx.dev/gang) active")?;
        for (source, active) in self.iter() {
            let state = if active { "active" } else { "not served" };
            write!(f, ", {} ({}) {state}", source.name, source.kind)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_kinds_are_active_and_only_watched_ones_are_watched() {
        let served = ServedApis::from_kinds([UPSTREAM_POD_GROUP.kind, UPSTREAM_WORKLOAD.kind]);
        let active = active_sources(&served, GANG_OBJECT_SOURCES);
        assert!(active.is_active(&UPSTREAM_POD_GROUP));
        assert!(active.is_active(&UPSTREAM_WORKLOAD));
        assert!(!active.is_active(&SCHEDULER_PLUGINS_POD_GROUP));
        assert!(!active.is_active(&COMPOSITE_POD_GROUP));
        let watched: Vec<_> = active.watched().map(|s| s.name).collect();
        assert_eq!(
            watched,
            ["podgroup"],
            "the Workload is reported, not watched"
        );
    }

    #[test]
    fn the_report_names_every_source_and_takes_a_longer_list() {
        let job_set = GangSourceKind {
            name: "jobset",
            kind: OptionalKind {
                group: "jobset.x-k8s.io",
                version: "v1alpha2",
                kind: "JobSet",
                plural: "jobsets",
            },
            watched: true,
        };
        let mut sources = GANG_OBJECT_SOURCES.to_vec();
        sources.push(job_set);
        let served = ServedApis::from_kinds([job_set.kind]);
        let active = active_sources(&served, &sources);
        assert_eq!(active.iter().count(), 5);
        let line = active.to_string();
        assert!(
            line.contains("jobset (jobsets.jobset.x-k8s.io/v1alpha2) active"),
            "{line}"
        );
        assert!(
            line.contains("podgroup (podgroups.scheduling.k8s.io/v1beta1) not served"),
            "{line}"
        );
        assert!(
            line.starts_with("annotation (phalanx.dev/gang) active"),
            "{line}"
        );
    }

    #[test]
    fn owner_kinds_report_under_their_plural() {
        let ray = OptionalKind {
            group: "ray.io",
            version: "v1",
            kind: "RayCluster",
            plural: "rayclusters",
        };
        let sources = owner_sources(&[ray]);
        let active = active_sources(&ServedApis::from_kinds([ray]), &sources);
        assert!(active.is_active(&sources[0]));
        assert_eq!(sources[0].name, "rayclusters");
    }

    #[test]
    fn nothing_served_is_nothing_active() {
        let active = active_sources(&ServedApis::default(), GANG_OBJECT_SOURCES);
        assert_eq!(active.watched().count(), 0);
        assert!(active.iter().all(|(_, on)| !on));
    }
}
