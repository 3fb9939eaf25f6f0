//! GPU models: interned names and the "which models may this pod use" constraint.

use std::collections::HashMap;

use super::EngineError;

/// A GPU model interned in a [`GpuModelRegistry`] (e.g. `V100M32`, `A100-80GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuModelId(pub u8);

/// Interns GPU model names so that nodes carry a byte and constraints a bit set.
#[derive(Debug, Clone, Default)]
pub struct GpuModelRegistry {
    names: Vec<String>,
    ids: HashMap<String, GpuModelId>,
}

impl GpuModelRegistry {
    /// Most distinct models a cluster may have: constraints are a 64-bit set.
    pub const MAX_MODELS: usize = 64;

    pub fn intern(&mut self, name: &str) -> Result<GpuModelId, EngineError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        if self.names.len() >= Self::MAX_MODELS {
            return Err(EngineError::TooManyModels {
                max: Self::MAX_MODELS,
            });
        }
        let id = GpuModelId(self.names.len() as u8);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        Ok(id)
    }

    pub fn get(&self, name: &str) -> Option<GpuModelId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: GpuModelId) -> &str {
        self.names.get(id.0 as usize).map_or("?", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Resolves a `|`-separated list of allowed models (the openb `gpu_spec` form and
    /// the `phalanx.dev/gpu-models` annotation). Empty tokens are dropped; an empty
    /// list means any model. Names no node has simply match nothing.
    pub fn constraint(&self, spec: &str) -> ModelConstraint {
        let mut mask = 0u64;
        let mut any_token = false;
        for token in spec.split('|').filter(|t| !t.is_empty()) {
            any_token = true;
            if let Some(id) = self.get(token) {
                mask |= 1u64 << id.0;
            }
        }
        if any_token {
            ModelConstraint::OneOf(mask)
        } else {
            ModelConstraint::Any
        }
    }
}

/// Which GPU models a pod accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ModelConstraint {
    #[default]
    Any,
    /// A bit set over [`GpuModelId`]s; zero means no model in the cluster qualifies.
    OneOf(u64),
}

impl ModelConstraint {
    pub fn allows(self, model: GpuModelId) -> bool {
        match self {
            ModelConstraint::Any => true,
            ModelConstraint::OneOf(mask) => mask & (1u64 << model.0) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_parses_tokens_and_ignores_empty_ones() {
        let mut reg = GpuModelRegistry::default();
        let t4 = reg.intern("T4").unwrap();
        let v100 = reg.intern("V100M32").unwrap();
        let p100 = reg.intern("P100").unwrap();
        let c = reg.constraint("|T4||V100M32|");
        assert!(c.allows(t4));
        assert!(c.allows(v100));
        assert!(!c.allows(p100));
        assert_eq!(reg.constraint(""), ModelConstraint::Any);
        assert_eq!(reg.constraint("||"), ModelConstraint::Any);
        // A model nobody has: the pod fits nowhere rather than anywhere.
        assert_eq!(reg.constraint("H100"), ModelConstraint::OneOf(0));
    }

    #[test]
    fn registry_refuses_more_models_than_the_bit_set_holds() {
        let mut reg = GpuModelRegistry::default();
        for i in 0..GpuModelRegistry::MAX_MODELS {
            reg.intern(&format!("m{i}")).unwrap();
        }
        assert!(matches!(
            reg.intern("one-too-many"),
            Err(EngineError::TooManyModels { .. })
        ));
        assert!(reg.intern("m3").is_ok(), "known names still resolve");
    }
}
