//! Per-window components. A component owns a piece of per-window state, folds
//! prediction events into it, merges partial states, and turns a closed
//! window's state into rows of its own output table. The window code knows
//! none of them by name: adding a detector is adding a [`Component`].
//!
//! States serialise (postcard) for checkpoints, exactly: a restored state
//! goes on to give bit-identical results for the same events.

use std::any::Any;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use driftwatch_ingest::PredictionEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::windows::WindowKey;

/// A per-window detector or summary.
pub trait Component: Send + Sync + 'static {
    /// Per-window state.
    type State: Send + Serialize + DeserializeOwned + 'static;

    /// The output tables: name (e.g. `feature_summary`) and the schema of the
    /// component's own columns; the window key columns (`model_id`,
    /// `model_version`, `window_start`, `window_end`) are added in front by
    /// the window code.
    fn tables(&self) -> Vec<(String, SchemaRef)>;

    /// The state of an empty window.
    fn new_state(&self) -> Self::State;

    /// Folds one prediction into a window's state.
    fn update(&self, state: &mut Self::State, event: &PredictionEvent);

    /// Merges `other` into `into`, as if `into` had seen `other`'s events too.
    fn merge(&self, into: &mut Self::State, other: Self::State);

    /// The rows of a closed window: one batch per table, in the order of
    /// [`tables`](Component::tables), each with any number of rows.
    fn finish(&self, key: &WindowKey, state: Self::State) -> Result<Vec<RecordBatch>, ArrowError>;

    /// What the component learned across windows (e.g. a reference taken
    /// from a model's first window), serialised for a checkpoint. Default:
    /// nothing.
    fn save_learned(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    /// Restores what [`save_learned`](Component::save_learned) wrote.
    fn load_learned(&self, bytes: &[u8]) -> Result<(), String> {
        let _ = bytes;
        Ok(())
    }
}

/// Object-safe view of a [`Component`], so a window can hold a list of them.
pub trait DynComponent: Send + Sync {
    /// See [`Component::tables`].
    fn tables(&self) -> Vec<(String, SchemaRef)>;
    /// See [`Component::new_state`].
    fn new_state(&self) -> Box<dyn Any + Send>;
    /// See [`Component::update`].
    fn update(&self, state: &mut (dyn Any + Send), event: &PredictionEvent);
    /// See [`Component::merge`].
    fn merge(&self, into: &mut (dyn Any + Send), other: Box<dyn Any + Send>);
    /// See [`Component::finish`].
    fn finish(
        &self,
        key: &WindowKey,
        state: Box<dyn Any + Send>,
    ) -> Result<Vec<RecordBatch>, ArrowError>;
    /// Serialises a state this component made.
    fn save_state(&self, state: &(dyn Any + Send)) -> Result<Vec<u8>, String>;
    /// Reads a state [`save_state`](DynComponent::save_state) wrote.
    fn load_state(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, String>;
    /// See [`Component::save_learned`].
    fn save_learned(&self) -> Result<Vec<u8>, String>;
    /// See [`Component::load_learned`].
    fn load_learned(&self, bytes: &[u8]) -> Result<(), String>;
}

fn wrong_state(table: &str) -> ArrowError {
    ArrowError::InvalidArgumentError(format!(
        "internal: state of another component passed to {table}"
    ))
}

impl<C: Component> DynComponent for C {
    fn tables(&self) -> Vec<(String, SchemaRef)> {
        Component::tables(self)
    }

    fn new_state(&self) -> Box<dyn Any + Send> {
        Box::new(Component::new_state(self))
    }

    fn update(&self, state: &mut (dyn Any + Send), event: &PredictionEvent) {
        // the window code pairs each state with the component that made it
        if let Some(state) = state.downcast_mut::<C::State>() {
            Component::update(self, state, event);
        }
    }

    fn merge(&self, into: &mut (dyn Any + Send), other: Box<dyn Any + Send>) {
        if let (Some(into), Ok(other)) = (
            into.downcast_mut::<C::State>(),
            other.downcast::<C::State>(),
        ) {
            Component::merge(self, into, *other);
        }
    }

    fn finish(
        &self,
        key: &WindowKey,
        state: Box<dyn Any + Send>,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        match state.downcast::<C::State>() {
            Ok(state) => Component::finish(self, key, *state),
            Err(_) => Err(wrong_state(std::any::type_name::<C>())),
        }
    }

    fn save_state(&self, state: &(dyn Any + Send)) -> Result<Vec<u8>, String> {
        let state = state
            .downcast_ref::<C::State>()
            .ok_or_else(|| wrong_state(std::any::type_name::<C>()).to_string())?;
        postcard::to_stdvec(state).map_err(|e| e.to_string())
    }

    fn load_state(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, String> {
        let state: C::State = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        Ok(Box::new(state))
    }

    fn save_learned(&self) -> Result<Vec<u8>, String> {
        Component::save_learned(self)
    }

    fn load_learned(&self, bytes: &[u8]) -> Result<(), String> {
        Component::load_learned(self, bytes)
    }
}

/// The components every window runs, shared between windows.
pub type Components = Arc<[Arc<dyn DynComponent>]>;
